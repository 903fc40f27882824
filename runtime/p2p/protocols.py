"""Request/response protocols between peers (``node.protocols``).

::

    async def echo(peer: str, request: bytes) -> bytes:
        return request

    node.protocols.register("/notes/echo/1.0.0", echo)
    reply = await node.protocols.send(peer_id, "/notes/echo/1.0.0", b"hello", timeout=5)

One request and one response per libp2p stream. On the wire each is a frame:
an unsigned varint length, then the bytes (the response's first byte is a
status). Handlers are coroutine functions run on the node's asyncio loop,
each call crossing the bridge once.

Limits (attributes, set them before the node starts):

- ``max_message`` (default 4 MiB, go-msuite's was 64 KiB): a larger request
  is refused by the sender before anything is sent (:class:`MessageTooLarge`),
  and by the receiver from the length prefix alone, with a TOO_LARGE answer
  the sender raises as :class:`MessageTooLarge`; never truncated.
- ``deadline`` (default 15 s): the default ``timeout`` of :meth:`send`, and
  the time a receiver gives a stream from its first byte to its answer.
- ``inbound_limit`` (default 64 per protocol): requests handled at once; one
  more gets a BUSY answer at once (:class:`Busy` on the sender), never a
  silent reset.

A handler raising :class:`Refused` sends its message to the sender, which
raises :class:`Refused` with it; any other exception is logged here and the
sender gets :class:`RemoteError` ("internal error"), without details. A
stream that does not carry a well-formed frame (garbage from a broken or
hostile peer) is reset and logged; the node keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from msuite.runtime.errors import NodeError

from .framing import FrameError, FrameReader, TooLarge, encode_frame

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from .bridge import Bridge

__all__ = [
    "Busy",
    "Handler",
    "MessageTooLarge",
    "PeerUnreachable",
    "ProtocolError",
    "ProtocolTimeout",
    "Protocols",
    "Refused",
    "RemoteError",
]

log = logging.getLogger("msuite.p2p.protocols")

Handler = Callable[[str, bytes], Awaitable[bytes]]
"""``handler(peer_id, request) -> response``."""

OK, REFUSED, INTERNAL, BUSY, TOO_LARGE = 0, 1, 2, 3, 4

UNBLOCKED_WRITE = 128 * 1024
"""Largest request frame written before the answer is read: well inside a new yamux stream's
256 KiB window, so the write cannot wait for the receiver's credit."""


class ProtocolError(NodeError):
    """A request to a peer failed."""


class PeerUnreachable(ProtocolError):
    """No stream could be opened to the peer for the protocol (not connected, or it does not speak it)."""


class ProtocolTimeout(ProtocolError, TimeoutError):
    """No answer within the timeout."""


class MessageTooLarge(ProtocolError, ValueError):
    """A request or response over ``max_message``."""


class Busy(ProtocolError):
    """The peer handles as many requests of this protocol as it allows; try again later."""


class RemoteError(ProtocolError):
    """The peer's handler failed."""


class Refused(ProtocolError):
    """Raised by a handler to refuse a request with a message the sender sees."""


def stream_reader(stream: Any) -> Callable[[int], Awaitable[bytes]]:
    """``read(n)`` over a libp2p stream, returning ``b""`` at its end (py-libp2p raises StreamEOF)."""
    from libp2p.network.stream.exceptions import StreamEOF

    async def read(n: int) -> bytes:
        try:
            data: bytes = await stream.read(n)
        except StreamEOF:
            return b""
        return data

    return read


class Protocols:
    """``node.protocols`` and P2P service ``protocols``: register handlers by protocol ID;
    send requests to peers."""

    name = "protocols"

    def __init__(
        self, *, max_message: int = 4 * 1024 * 1024, deadline: float = 15.0, inbound_limit: int = 64
    ) -> None:
        self.max_message = max_message
        self.deadline = deadline
        self.inbound_limit = inbound_limit
        self._handlers: dict[str, Handler] = {}
        self._limits: dict[str, trio.Semaphore] = {}
        self._host: IHost | None = None
        self._bridge: Bridge | None = None

    def registered(self) -> list[str]:
        """The protocol IDs this node answers."""
        return sorted(self._handlers)

    def register(self, protocol_id: str, handler: Handler) -> None:
        """Answer ``protocol_id`` with ``handler(peer_id, request) -> response`` (a coroutine function)."""
        if not protocol_id.startswith("/"):
            raise ValueError(f"a protocol ID starts with '/': {protocol_id!r}")
        if protocol_id in self._handlers:
            raise ValueError(f"protocol {protocol_id} is registered already")
        self._handlers[protocol_id] = handler
        if self._host is not None and self._bridge is not None and self._bridge.running:
            self._bridge.run_sync_soon(self._set_handler, protocol_id)

    # ------------------------------------------------------------------ sending (asyncio side)

    async def send(
        self, peer_id: str, protocol_id: str, request: bytes, *, timeout: float | None = None
    ) -> bytes:
        """Send ``request`` to ``peer_id`` on ``protocol_id`` and return its response."""
        if self._bridge is None or self._host is None:
            raise NodeError("node.protocols can send once the p2p host runs")
        if len(request) > self.max_message:
            raise MessageTooLarge(
                f"the request is {len(request)} bytes, over the limit of {self.max_message} bytes"
            )
        if timeout is not None and timeout <= 0:
            raise ValueError(f"the timeout must be positive: {timeout}")
        deadline = self.deadline if timeout is None else timeout
        return await self._bridge.run(self._send, peer_id, protocol_id, request, deadline)

    async def _send(self, peer_id: str, protocol_id: str, request: bytes, timeout: float) -> bytes:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        host = self._host
        assert host is not None
        try:
            with trio.fail_after(timeout):
                try:
                    stream = await host.new_stream(ID.from_base58(peer_id), [TProtocol(protocol_id)])
                except Exception as exc:
                    why = str(exc).splitlines()[0] if str(exc) else repr(exc)
                    raise PeerUnreachable(f"cannot open {protocol_id} to {peer_id}: {why}") from None
                try:
                    answer, sent = await self._exchange(stream, encode_frame(request))
                except TooLarge as exc:
                    await stream.reset()
                    raise MessageTooLarge(f"the response from {peer_id} is too large: {exc}") from None
                except FrameError as exc:
                    await stream.reset()
                    raise ProtocolError(
                        f"{peer_id} answered {protocol_id} with a malformed frame: {exc}"
                    ) from None
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await stream.reset()
                    raise
                if sent:
                    await stream.close()  # else it was reset when the answer cut the request short
        except trio.TooSlowError:
            raise ProtocolTimeout(f"{peer_id} did not answer {protocol_id} within {timeout:g} s") from None
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(f"{protocol_id} to {peer_id} failed: {type(exc).__name__}: {exc}") from None
        if not answer:
            raise ProtocolError(f"{peer_id} closed {protocol_id} without an answer")
        status, body = answer[0], answer[1:]
        if status == OK:
            return body
        text = body.decode("utf-8", "replace")
        if status == REFUSED:
            raise Refused(text)
        if status == BUSY:
            raise Busy(f"{peer_id} is busy with {protocol_id}: {text}")
        if status == TOO_LARGE:
            raise MessageTooLarge(f"{peer_id} refused the request: {text}")
        raise RemoteError(f"{peer_id} failed to handle {protocol_id}: {text}")

    async def _exchange(self, stream: Any, frame: bytes) -> tuple[bytes | None, bool]:
        """Write the request frame and read the answer frame.

        A frame that fits in a new stream's yamux window is written, then the answer read. A
        larger one is written while the answer is read: a receiver that refuses it from its
        length prefix (TOO_LARGE) stops reading, and the sender's write would wait for credit
        that never comes; the answer ends the write instead (the stream is reset). Returns the
        answer and whether the whole request was written."""
        reader = FrameReader(stream_reader(stream))
        if len(frame) <= UNBLOCKED_WRITE:
            await stream.write(frame)
            return await reader.read_frame(self.max_message + 1), True
        written = False
        ended = trio.Event()

        async def write() -> None:
            nonlocal written
            try:
                await stream.write(frame)
                written = True
            except Exception:  # the stream was reset: by us after an early answer, or by the peer
                log.debug("a request write ended early", exc_info=True)
            finally:
                ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            answer = await reader.read_frame(self.max_message + 1)
            if not written:  # answered before the request was through: a refusal
                # reset, not cancel: the writer sees it between two frames and ends (a write
                # cancelled inside a frame would break the whole connection)
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await stream.reset()
                with trio.move_on_after(1.0):
                    await ended.wait()
                nursery.cancel_scope.cancel()
        return answer, written

    # ------------------------------------------------------------------ receiving (trio side)

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        """Serve the registered protocols on ``host`` (and those registered later) until cancelled."""
        self._host, self._bridge = host, bridge
        for protocol_id in self._handlers:
            self._set_handler(protocol_id)
        task_status.started()
        await trio.sleep_forever()

    def status(self) -> list[str]:
        return self.registered()

    def _set_handler(self, protocol_id: str) -> None:
        from libp2p.custom_types import TProtocol

        assert self._host is not None
        self._limits[protocol_id] = trio.Semaphore(self.inbound_limit)

        async def handle(stream: Any) -> None:
            await self._handle(protocol_id, stream)

        self._host.set_stream_handler(TProtocol(protocol_id), handle)

    async def _answer(self, stream: Any, status: int, body: bytes) -> None:
        await stream.write(encode_frame(bytes([status]) + body))
        await stream.close()

    async def _handle(self, protocol_id: str, stream: Any) -> None:
        peer = str(stream.muxed_conn.peer_id)
        limit = self._limits[protocol_id]
        try:
            limit.acquire_nowait()
        except trio.WouldBlock:
            log.warning("%s from %s refused: %d requests in progress", protocol_id, peer, self.inbound_limit)
            with trio.move_on_after(self.deadline):
                await self._answer(stream, BUSY, f"{self.inbound_limit} requests in progress".encode())
            return
        try:
            with trio.move_on_after(self.deadline) as scope:
                await self._serve(protocol_id, peer, stream)
            if scope.cancelled_caught:
                log.warning("%s from %s took over %g s; stream reset", protocol_id, peer, self.deadline)
                await stream.reset()
        except Exception as exc:  # the stream broke under us: nothing more to say to that peer
            log.info("%s from %s: stream failed: %s", protocol_id, peer, exc)
            with trio.CancelScope(shield=True):
                await stream.reset()
        finally:
            limit.release()

    async def _serve(self, protocol_id: str, peer: str, stream: Any) -> None:
        try:
            request = await FrameReader(stream_reader(stream)).read_frame(self.max_message)
        except TooLarge as exc:
            log.info("%s from %s refused: %s", protocol_id, peer, exc)
            await self._answer(stream, TOO_LARGE, str(exc).encode())
            return
        except FrameError as exc:
            log.warning("%s from %s: malformed request (%s); stream reset", protocol_id, peer, exc)
            await stream.reset()
            return
        if request is None:
            await stream.close()
            return
        handler = self._handlers[protocol_id]
        assert self._bridge is not None
        try:
            response: Any = await self._bridge.to_asyncio(handler, peer, request)
        except Refused as exc:
            await self._answer(stream, REFUSED, str(exc).encode())
            return
        except Exception:
            log.exception("the %s handler failed on a request from %s", protocol_id, peer)
            await self._answer(stream, INTERNAL, b"internal error")
            return
        if not isinstance(response, bytes | bytearray | memoryview):  # the handler's annotation is a promise
            log.error("the %s handler returned %s, not bytes", protocol_id, type(response).__name__)
            await self._answer(stream, INTERNAL, b"internal error")
            return
        if len(response) > self.max_message:
            log.error("the %s handler's response is over %d bytes", protocol_id, self.max_message)
            await self._answer(stream, INTERNAL, b"the response is over the message limit")
            return
        await self._answer(stream, OK, bytes(response))
