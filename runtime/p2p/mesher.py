"""The mesher (``/msuite/mesher/1.0.0``): one bootstrap peer is enough for a full mesh.

When two nodes connect, each sends the other one message: the addresses it
listens on (``self``) and the peers it is connected to, each with the
addresses that peer announced. A node receiving it records the sender's
addresses, dials every listed peer it is not connected to, and passes the
sender on to its other peers. So with four nodes where three know only the
first, every node has three peers after a couple of round trips (go-msuite's
case; it is tested).

The message is one varint-framed JSON object of at most 64 KiB listing at
most 64 peers: ``{"self": [multiaddr...], "peers": [{"id": ..., "addrs":
[...]}], "services": [...], "epoch": t, "rev": n}``. ``services`` names the gRPC
services the sender serves over libp2p (``grpc.p2p``): the directory
``node.grpc.client(name)`` falls back to. The list is empty until the
sender's gRPC server is bound and again once it stops; an update is sent to
every connected peer when it changes. ``epoch`` (when the sender's process
began, in ns) and ``rev`` (its count of updates) stamp each list, so an
older list arriving late (each message has its own stream), or one from the
process before a restart, is ignored; so is a message whose connection ended
while it was read.
Anything else is logged and ignored. Dials are bounded (8 at once, 5 s
each) and failures are logged at DEBUG: a listed peer may well be gone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import multiaddr
import trio

from .framing import FrameError, FrameReader, encode_frame
from .protocols import stream_reader

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from .bridge import Bridge

__all__ = ["MAX_PEERS", "PROTOCOL", "Mesher"]

log = logging.getLogger("msuite.p2p.mesher")

PROTOCOL = "/msuite/mesher/1.0.0"
MAX_MESSAGE = 64 * 1024
MAX_PEERS = 64
DIAL_TIMEOUT = 5.0
DIALS_AT_ONCE = 8


def _count(value: object) -> int:
    """A non-negative int from a message field (anything else: 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _valid_addrs(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    found = []
    for text in value[:16]:
        if isinstance(text, str) and len(text) < 256:
            try:
                multiaddr.Multiaddr(text)
            except Exception:
                continue
            found.append(text)
    return found


class Mesher:
    """P2P service ``mesher`` (trio side): introduces peers to each other, and announces
    the gRPC services this node serves over libp2p."""

    name = "mesher"

    def __init__(self, on_announce: Callable[[str, list[str]], None] | None = None) -> None:
        self.on_announce = on_announce
        """Called (trio side) with a peer's ID and the addresses it announced for itself."""
        self.services: tuple[str, ...] = ()
        """The gRPC services this node serves over libp2p, announced to every peer: none until
        :meth:`announce` (the gRPC server is bound), so a peer never learns of one it can't call."""
        self.directory: dict[str, tuple[str, ...]] = {}
        """Peer ID -> the services it announced (replaced as a whole: readable from any thread)."""
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._announced: dict[str, list[str]] = {}
        """Peer ID -> the listen addresses it announced (without /p2p/)."""
        self._epoch = time.time_ns()
        """When this process's mesher began: sent as ``epoch`` with every ``services`` list."""
        self._revision = 0
        """Counts this node's announcements; sent as ``rev`` with every ``services`` list."""
        self._revisions: dict[str, tuple[int, int]] = {}
        """Peer ID -> the ``(epoch, rev)`` of the newest services list it sent."""
        self._dials = trio.CapacityLimiter(DIALS_AT_ONCE)
        self._pending: set[str] = set()
        """Peers a dial is queued or running for (at most ``MAX_PEERS``)."""

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        from libp2p.custom_types import TProtocol

        async with trio.open_nursery() as nursery:
            self._host, self._nursery = host, nursery
            host.set_stream_handler(TProtocol(PROTOCOL), self._receive)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def status(self) -> dict[str, Any]:
        return {
            "services": list(self.services),
            "peer_services": {peer: list(names) for peer, names in self.directory.items()},
        }

    def announce(self, services: tuple[str, ...]) -> None:
        """Serve ``services`` over libp2p from now on (empty: none): tell every connected peer (trio side)."""
        self.services = tuple(services)
        self._revision += 1
        if self._host is None or self._nursery is None:
            return
        update = {
            "self": self._own_addrs(),
            "services": list(services),
            "epoch": self._epoch,
            "rev": self._revision,
        }
        for peer in self._host.get_connected_peers():
            self._nursery.start_soon(self._send, str(peer), update)

    def peer_connected(self, peer_id: str) -> None:
        """A connection opened: tell that peer who we are and whom we know."""
        if self._nursery is not None:
            self._nursery.start_soon(self._introduce, peer_id)

    def is_newest(self, sender: str, epoch: object, revision: object) -> bool:
        """Whether a services list stamped ``(epoch, revision)`` is the newest seen from ``sender``
        (and remember it). Messages travel on separate streams, so an older list may arrive after
        a newer one; a restarted process keeps its peer ID but has a later epoch, so its lists
        win over any late one of the process before it. A missing stamp counts as (0, 0)."""
        stamp = (_count(epoch), _count(revision))
        if stamp < self._revisions.get(sender, (-1, -1)):
            return False
        self._revisions[sender] = stamp
        return True

    def peer_disconnected(self, peer_id: str) -> None:
        self._announced.pop(peer_id, None)
        self._revisions.pop(peer_id, None)
        if peer_id in self.directory:
            self.directory = {peer: names for peer, names in self.directory.items() if peer != peer_id}

    # ------------------------------------------------------------------ sending

    def _own_addrs(self) -> list[str]:
        assert self._host is not None
        return [str(addr) for addr in self._host.get_transport_addrs()]

    def _known(self, exclude: str) -> list[dict[str, Any]]:
        assert self._host is not None
        connected = {str(peer) for peer in self._host.get_connected_peers()}
        return [
            {"id": peer, "addrs": addrs}
            for peer, addrs in self._announced.items()
            if peer != exclude and peer in connected and addrs
        ][:MAX_PEERS]

    async def _send(self, peer_id: str, message: dict[str, Any]) -> None:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        assert self._host is not None
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(PROTOCOL)])
                try:
                    await stream.write(encode_frame(json.dumps(message).encode(), MAX_MESSAGE))
                finally:
                    await stream.close()
        except Exception as exc:
            log.debug("mesher: could not tell %s about peers: %s", peer_id, exc)

    async def _introduce(self, peer_id: str) -> None:
        hello = {
            "self": self._own_addrs(),
            "peers": self._known(exclude=peer_id),
            "services": list(self.services),
            "epoch": self._epoch,
            "rev": self._revision,
        }
        await self._send(peer_id, hello)

    # ------------------------------------------------------------------ receiving

    async def _receive(self, stream: Any) -> None:
        sender = str(stream.muxed_conn.peer_id)
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                frame = await FrameReader(stream_reader(stream)).read_frame(MAX_MESSAGE)
            await stream.close()
            if frame is None:  # the peer went away before saying anything
                return
            message = json.loads(frame)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
        except (FrameError, ValueError, trio.TooSlowError) as exc:
            log.warning("mesher: ignoring a malformed message from %s: %s", sender, exc)
            with trio.CancelScope(shield=True):
                await stream.reset()
            return
        except Exception as exc:
            log.debug("mesher: reading from %s failed: %s", sender, exc)
            return
        if getattr(stream.muxed_conn, "is_closed", False):
            return  # the connection ended while we read: the peer's state was dropped with it
        services = message.get("services")
        if isinstance(services, list) and self.is_newest(sender, message.get("epoch"), message.get("rev")):
            names = tuple(sorted({s for s in services[:256] if isinstance(s, str) and 0 < len(s) < 256}))
            self.directory = {**self.directory, sender: names}
        announced = _valid_addrs(message.get("self"))
        is_new = sender not in self._announced
        if announced:
            self._announced[sender] = announced
            if self.on_announce is not None:
                self.on_announce(sender, announced)
        peers = message.get("peers")
        if isinstance(peers, list):
            for entry in peers[:MAX_PEERS]:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    self._dial_soon(entry["id"], _valid_addrs(entry.get("addrs")))
        if is_new and announced:  # pass the sender on to the peers we have
            for peer in list(self._announced):
                if peer != sender and self._nursery is not None:
                    self._nursery.start_soon(
                        self._send,
                        peer,
                        {"self": self._own_addrs(), "peers": [{"id": sender, "addrs": announced}]},
                    )

    def _dial_soon(self, peer_id: str, addrs: list[str]) -> None:
        assert self._host is not None
        if not addrs or peer_id == str(self._host.get_id()) or self._nursery is None:
            return
        if peer_id in {str(peer) for peer in self._host.get_connected_peers()}:
            return
        if peer_id in self._pending or len(self._pending) >= MAX_PEERS:
            return  # bounded: a flood of introductions cannot pile up dials
        self._pending.add(peer_id)
        self._nursery.start_soon(self._dial, peer_id, addrs)

    async def _dial(self, peer_id: str, addrs: list[str]) -> None:
        from libp2p.peer.id import ID
        from libp2p.peer.peerinfo import PeerInfo

        assert self._host is not None
        try:
            async with self._dials:
                try:
                    info = PeerInfo(ID.from_base58(peer_id), [multiaddr.Multiaddr(a) for a in addrs])
                    with trio.fail_after(DIAL_TIMEOUT):
                        await self._host.connect(info)
                except Exception as exc:
                    log.debug("mesher: could not dial %s: %s", peer_id, exc)
                else:
                    log.debug("mesher: connected to %s", peer_id)
        finally:
            self._pending.discard(peer_id)
