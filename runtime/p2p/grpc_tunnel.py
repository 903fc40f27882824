"""gRPC over libp2p (``grpc.p2p: true``; protocol ``/msuite/grpc/1.0.0``).

Bytes are piped, not calls: gRPC's HTTP/2 connection runs inside one libp2p
stream, so every call, stream and deadline works as it does over TCP, and the
server's interceptors (auth, ACL, metrics, tracing) see every call the same
way whatever transport it came in on.

- **Serving** (:class:`TunnelServer`, set up by component ``grpc_p2p`` once
  the gRPC server is bound): each inbound stream on ``/msuite/grpc/1.0.0`` is piped to the
  node's gRPC server over its Unix socket (``grpc.unix``, or a private
  ``unix-abstract:`` one the server opens when the manifest names none).
- **Calling** (:class:`TunnelDialer`, a service of the host): for each peer
  this node calls, a private ``unix-abstract:`` listener is opened in this
  process; ``grpc.aio`` dials it like any Unix socket, and each connection it
  makes opens one libp2p stream to the peer.

Both directions run in the trio thread (no bridge crossing per read or
write). The pipe is lean because every scheduler pass in the trio thread
costs latency: it reads and writes the yamux stream with msuite's lean
:func:`.yamux.read` and :func:`.yamux.write` (the libp2p stream wrapper
takes a lock on every call, and is still used to close and reset, which
keep the swarm's books), and it uses the Unix socket's own
non-blocking calls, waiting only when the socket has nothing to give or no
room. Half-closes are passed on; an error on either side resets the stream
and closes the socket.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from . import yamux
from .bridge import Bridge, BridgeClosed

if TYPE_CHECKING:
    from libp2p.abc import IHost

__all__ = ["PROTOCOL", "TunnelDialer", "TunnelServer", "connect_unix", "pipe"]

log = logging.getLogger("msuite.p2p.grpc")

PROTOCOL = "/msuite/grpc/1.0.0"
CHUNK = 64 * 1024
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
"""Longest a pipe spends closing or resetting its libp2p stream (a peer that stopped reading)."""

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


async def connect_unix(address: str) -> socket.socket:
    """A connected non-blocking Unix socket to a local server.

    A full accept queue makes Linux refuse a non-blocking Unix connect with
    EAGAIN and start nothing, so the connect is retried (every 5 ms, for up
    to ``OPEN_TIMEOUT``) until the server has accepted enough to make room.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with trio.fail_after(OPEN_TIMEOUT):
            while True:
                try:
                    sock.connect(address)
                    break
                except BlockingIOError:
                    await trio.sleep(0.005)
    except BaseException:
        sock.close()
        raise
    return sock


async def pipe(p2p_stream: Any, local: socket.socket) -> None:
    """Copy bytes both ways until both sides have finished; on an error reset and close both.

    ``local`` is a connected non-blocking Unix socket; the pipe owns it and closes it.
    """
    from libp2p.stream_muxer.exceptions import MuxedStreamEOF

    muxed = p2p_stream.muxed_stream

    async def inbound() -> None:  # peer -> local socket
        while True:
            try:
                data = await yamux.read(muxed, CHUNK)  # never empty: the end raises
            except MuxedStreamEOF:
                break
            view = memoryview(data)
            while view:
                try:
                    view = view[local.send(view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(local.fileno())
        with contextlib.suppress(OSError):
            local.shutdown(socket.SHUT_WR)

    async def outbound() -> None:  # local socket -> peer
        while True:
            try:
                data = local.recv(yamux.FRAME_PAYLOAD)  # whatever is there, up to one frame
            except BlockingIOError:
                await trio.lowlevel.wait_readable(local.fileno())
                continue
            if not data:
                break
            await yamux.write(muxed, data)
        await p2p_stream.close_write()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inbound)
            nursery.start_soon(outbound)
    except BaseException as exc:
        await _finish(p2p_stream.reset)
        _close(local)
        cancelled = isinstance(exc, trio.Cancelled) or (
            isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[0] is not None
        )
        if cancelled or not isinstance(exc, Exception | BaseExceptionGroup):
            raise
        log.debug("a gRPC pipe over libp2p broke: %s", exc)
        return
    await _finish(p2p_stream.close)
    _close(local)


async def _finish(end: Callable[[], Awaitable[None]]) -> None:
    """Close or reset a libp2p stream, even when cancelled, but for at most ``CLOSE_TIMEOUT``."""
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(Exception):
        await end()


def _close(sock: socket.socket) -> None:
    """Close a socket trio may be waiting on (trio must forget it first)."""
    with contextlib.suppress(Exception):
        trio.lowlevel.notify_closing(sock.fileno())
    sock.close()


class TunnelServer:
    """Serves inbound ``/msuite/grpc/1.0.0`` streams by piping each into the local gRPC server."""

    def __init__(self, server_target: str) -> None:
        self.server_target = server_target
        """The local gRPC server's Unix target (``unix:`` or ``unix-abstract:``)."""

    async def serve_stream(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            local = await connect_unix(_unix_address(self.server_target))
        except Exception as exc:
            log.warning("gRPC from %s: the local gRPC server is not reachable: %s", peer, exc)
            with contextlib.suppress(Exception):
                await stream.reset()
            return
        await pipe(stream, local)


class TunnelDialer:
    """P2P service ``grpc_dialer``: local Unix listeners whose connections open streams to a peer."""

    name = "grpc_dialer"

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._bridge: Bridge | None = None
        self._dialers: dict[str, str] = {}
        """Peer ID -> the local target that reaches it (added on the asyncio side, dropped by trio)."""
        self._dialers_lock = threading.Lock()

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        async with trio.open_nursery() as nursery:
            self._host, self._nursery, self._bridge = host, nursery, bridge
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def status(self) -> dict[str, Any]:
        with self._dialers_lock:  # the trio thread drops entries
            return {"peers": sorted(self._dialers)}

    def peer_of(self, target: str) -> str | None:
        """The peer a target of :meth:`target_for` reaches (None for any other target)."""
        with self._dialers_lock:
            return next((peer for peer, known in self._dialers.items() if known == target), None)

    def target_for(self, peer_id: str) -> str:
        """A local grpc target reaching ``peer_id`` over libp2p (call from the asyncio side)."""
        target = self._dialers.get(peer_id)
        if target is not None:
            return target
        nursery, bridge = self._nursery, self._bridge
        if nursery is None or bridge is None:
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
        target = f"unix-abstract:{name}"

        def serve() -> None:  # in the trio thread
            try:
                nursery.start_soon(self._serve_listener, sock, peer_id, target)
            except RuntimeError:  # the host is stopping: nobody will accept on it
                sock.close()
                self._forget(peer_id, target)

        with self._dialers_lock:
            self._dialers[peer_id] = target
        try:
            bridge.run_sync_soon(serve)
        except BridgeClosed:
            sock.close()
            self._forget(peer_id, target)
            raise RuntimeError("the p2p host is not running") from None
        return target

    def _forget(self, peer_id: str, target: str) -> None:
        """Drop a listener that no longer accepts, so the next call opens a new one."""
        with self._dialers_lock:
            if self._dialers.get(peer_id) == target:
                del self._dialers[peer_id]

    async def _serve_listener(self, sock: socket.socket, peer_id: str, target: str) -> None:
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        local, _ = sock.accept()
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(sock.fileno())
                        continue
                    local.setblocking(False)
                    nursery.start_soon(self._dial, local, peer_id)
        finally:
            self._forget(peer_id, target)
            _close(sock)

    async def _dial(self, local: socket.socket, peer_id: str) -> None:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        assert self._host is not None
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(PROTOCOL)])
        except Exception as exc:
            why = str(exc).splitlines()[0] if str(exc) else repr(exc)
            log.warning("gRPC to %s over libp2p: cannot open a stream: %s", peer_id, why)
            _close(local)
            return
        except BaseException:  # cancelled: the host is stopping
            _close(local)
            raise
        await pipe(stream, local)
