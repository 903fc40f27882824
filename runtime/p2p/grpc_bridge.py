"""gRPC over libp2p (``grpc.p2p: true``; protocol ``/msuite/grpc/1.0.0``).

Bytes are piped, not calls: gRPC's HTTP/2 connection runs inside one libp2p
stream, so every call, stream and deadline works as it does over TCP, and the
server's interceptors (auth, ACL, metrics, tracing) see every call the same
way whatever transport it came in on.

- **Serving**: each inbound stream on ``/msuite/grpc/1.0.0`` is piped to the
  node's gRPC server over its Unix socket (``grpc.unix``, or a private
  ``unix-abstract:`` one the server opens when the manifest names none).
- **Calling**: for each peer this node calls, a private ``unix-abstract:``
  listener is opened in this process; ``grpc.aio`` dials it like any Unix
  socket, and each connection it makes opens one libp2p stream to the peer.

Both directions run in the trio thread (no bridge crossing per read or
write): ``trio`` socket <-> libp2p stream, 64 KiB at a time, half-closes
passed on, and an error on either side resets the stream and closes the
socket.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__ = ["PROTOCOL", "GrpcOverP2P"]

log = logging.getLogger("msuite.p2p.grpc")

PROTOCOL = "/msuite/grpc/1.0.0"
CHUNK = 64 * 1024
OPEN_TIMEOUT = 10.0

_names = itertools.count(1)


def _unix_address(target: str) -> str:
    """The socket address of a grpc ``unix:`` or ``unix-abstract:`` target."""
    if target.startswith("unix-abstract:"):
        return "\0" + target[len("unix-abstract:") :]
    if target.startswith("unix://"):
        return target[len("unix://") :]
    if target.startswith("unix:"):
        return target[len("unix:") :]
    raise ValueError(f"not a Unix socket target: {target}")


async def pipe(p2p_stream: Any, local: trio.SocketStream) -> None:
    """Copy bytes both ways until both sides have finished; on an error reset and close both."""
    from libp2p.network.stream.exceptions import StreamEOF

    async def inbound() -> None:  # peer -> local socket
        while True:
            try:
                data = await p2p_stream.read(CHUNK)
            except StreamEOF:
                break
            if not data:
                break
            await local.send_all(data)
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            await local.send_eof()

    async def outbound() -> None:  # local socket -> peer
        while True:
            data = await local.receive_some(CHUNK)
            if not data:
                break
            await p2p_stream.write(data)
        await p2p_stream.close_write() if hasattr(p2p_stream, "close_write") else await p2p_stream.close()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inbound)
            nursery.start_soon(outbound)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await p2p_stream.reset()
            await local.aclose()
        cancelled = isinstance(exc, trio.Cancelled) or (
            isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[0] is not None
        )
        if cancelled or not isinstance(exc, Exception | BaseExceptionGroup):
            raise
        log.debug("a gRPC pipe over libp2p broke: %s", exc)
        return
    with trio.CancelScope(shield=True):
        with contextlib.suppress(Exception):
            await p2p_stream.close()
        await local.aclose()


class GrpcOverP2P:
    """Serves inbound gRPC streams and opens local listeners that dial peers (in the trio thread)."""

    def __init__(self, node_name: str, server_target: Callable[[], str] | None) -> None:
        self.node_name = node_name
        self._server_target = server_target
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._dialers: dict[str, str] = {}
        """Peer ID -> the local target that reaches it (read and written on the asyncio side)."""

    def attach(self, host: IHost, nursery: trio.Nursery) -> None:
        from libp2p.custom_types import TProtocol

        self._host, self._nursery = host, nursery
        self._token = trio.lowlevel.current_trio_token()
        if self._server_target is not None:
            host.set_stream_handler(TProtocol(PROTOCOL), self._serve_stream)

    # ------------------------------------------------------------------ serving

    async def _serve_stream(self, stream: Any) -> None:
        assert self._server_target is not None
        peer = stream.muxed_conn.peer_id
        try:
            local = await trio.open_unix_socket(_unix_address(self._server_target()))
        except Exception as exc:
            log.warning("gRPC from %s: the local gRPC server is not reachable: %s", peer, exc)
            with contextlib.suppress(Exception):
                await stream.reset()
            return
        await pipe(stream, local)

    # ------------------------------------------------------------------ calling

    def target_for(self, peer_id: str) -> str:
        """A local grpc target reaching ``peer_id`` over libp2p (call from the asyncio side)."""
        target = self._dialers.get(peer_id)
        if target is not None:
            return target
        if self._token is None or self._nursery is None:
            raise RuntimeError("the p2p host is not running")
        name = f"msuite-{self.node_name}-{os.getpid()}-p2p-{next(_names)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind("\0" + name)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        nursery = self._nursery

        def serve() -> None:  # in the trio thread
            try:
                nursery.start_soon(self._serve_listener, sock, peer_id)
            except RuntimeError:  # the host is stopping: nobody will accept on it
                sock.close()

        try:
            self._token.run_sync_soon(serve)
        except trio.RunFinishedError:
            sock.close()
            raise RuntimeError("the p2p host is not running") from None
        target = f"unix-abstract:{name}"
        self._dialers[peer_id] = target
        return target

    async def _serve_listener(self, sock: socket.socket, peer_id: str) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    local = await listener.accept()
                    nursery.start_soon(self._dial, local, peer_id)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def _dial(self, local: trio.SocketStream, peer_id: str) -> None:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        assert self._host is not None
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(PROTOCOL)])
        except Exception as exc:
            why = str(exc).splitlines()[0] if str(exc) else repr(exc)
            log.warning("gRPC to %s over libp2p: cannot open a stream: %s", peer_id, why)
            await local.aclose()
            return
        await pipe(stream, local)
