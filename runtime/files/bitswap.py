"""Bitswap 1.2.0 (and 1.1.0, 1.0.0): P2P service ``bitswap``, trio side of ``node.files``.

Streams are one-way: each side sends its wantlists, blocks and presences on a
stream it opened itself (one per peer, kept open), and reads what the peer
sends on the streams the peer opened. The stream's negotiated protocol says
what the peer understands: 1.0.0 gets blocks without prefixes and no
presences or want-haves.

**Serving** (the ledger): each peer's wants are kept until it cancels them
(a full wantlist replaces them). A want-block of a block we hold queues the
block; a want-have queues HAVE; a want we can't serve queues DONT_HAVE if the
peer asked for it, and stays in the ledger (at most ``max_ledger`` per peer)
so the block goes out as soon as it arrives here. One sender task per peer
packs queued replies into messages of about ``TARGET_MESSAGE`` bytes, reading
each block from the blockstore (verified) only as it is packed.

**Fetching** (:meth:`Bitswap.fetch`, called through the bridge): wants are
keyed by multihash, so a block asked for as raw and delivered with a dag-pb
prefix (or by a 1.0.0 peer) is still recognised. A want is assigned to one
peer at a time as a want-block with send-dont-have: to the least loaded of the
peers known to serve (they answered HAVE or sent a block), at most
``per_peer`` blocks in flight each, so two providers share a file. A want no
known peer can serve is asked of every connected peer as a want-have, and a
want-block goes to the first of them. DONT_HAVE or a peer silent for
``STALL`` seconds moves the want on; once every connected peer has said no,
the DHT (when on) is asked for providers of the block, which are dialled.
A want nobody is fetching goes again, now and then, to the peers that said
DONT_HAVE (:meth:`Bitswap._nudge`): a peer may get the block later and tell
nobody (Helia). Every block received is checked, in a worker thread with its store: its
multihash must be one we want (a block whose bytes don't hash to a wanted CID
is dropped and counted against the peer); it is stored, then every waiting
fetch wakes, and the other peers asked get a cancel.

**Limits**: frames over ``max_message`` (4 MiB), blocks over ``max_block``
(2 MiB), more than ``max_entries`` entries in one message, or bytes that are
not a Bitswap message: the stream is reset (the host counts it) and the
peer's other streams, and every other peer, are served on.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from msuite.runtime.errors import NodeError
from msuite.runtime.p2p.faults import PeerLogLimit
from msuite.runtime.p2p.framing import FrameError
from msuite.runtime.varint import encode_uvarint

from .blockstore import Blockstore, BlockstoreError, MemoryBlockstore
from .cids import CidError, cid_from_prefix, cid_to_str, multihash_of, prefix
from .frames import FrameReader, write_frame
from .wire import Entry, Message, WireError, decode, encode_parts

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from msuite.runtime.p2p.bridge import Bridge
    from msuite.runtime.p2p.dht import Dht

__all__ = ["PROTOCOLS", "Bitswap", "FetchError", "FetchTimeout", "PeerStats"]

log = logging.getLogger("msuite.files.bitswap")

PROTOCOLS = ("/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/bitswap")
LEGACY = frozenset({"/ipfs/bitswap/1.0.0", "/ipfs/bitswap"})

TARGET_MESSAGE = 1024 * 1024
"""Blocks are packed into one message until it holds about this many bytes (at least one block)."""

STALL = 5.0
"""Seconds a peer may leave the blocks asked of it unanswered before they are asked elsewhere."""

SLOW = 30.0
"""Seconds a peer that stalled is asked for blocks last (unless it answers meanwhile)."""

TICK = 1.0
"""Seconds between two looks at stalled and unserved wants."""

REASK = 3
"""Every this many ``TICK``, wants nobody could serve are asked of every peer again."""

NUDGE_FIRST = 0.25
"""Seconds after a DONT_HAVE before the want is sent again to the peers that said it."""

NUDGE_MAX = 1.0
"""Longest gap between two of those re-sends (the gap doubles from ``NUDGE_FIRST``)."""

NUDGE_BUDGET = 256
"""Re-sent wants one peer gets per ``NUDGE_FIRST`` at most (the rest wait for the next round)."""

V0_PREFIX = b"\x00\x70\x12\x20"
"""The prefix of a 1.0.0 block (which has none): CIDv0, dag-pb, sha2-256."""

OPEN_TIMEOUT = 10.0
"""Longest the opening of a stream to a peer may take."""


class FetchError(NodeError):
    """A block was delivered but could not be kept (the blockstore refused it: a full disk)."""


class FetchTimeout(NodeError, TimeoutError):
    """No peer delivered a block within the deadline."""

    def __init__(self, cid: str, missing: int, timeout: float) -> None:
        more = f" (and {missing - 1} more blocks)" if missing > 1 else ""
        super().__init__(f"no peer delivered block {cid}{more} within {timeout:g} s")
        self.cid = cid


@dataclass(slots=True)
class PeerStats:
    """What one peer exchanged with this node (counts since it connected first)."""

    blocks_sent: int = 0
    bytes_sent: int = 0
    blocks_received: int = 0
    bytes_received: int = 0
    duplicates: int = 0
    rejected: int = 0
    """Blocks matching no wanted CID (bytes that don't hash to what was asked)."""
    bad_messages: int = 0
    presences_dropped: int = 0
    """HAVE/DONT_HAVE answers dropped: the peer asked more than it read."""

    def snapshot(self) -> dict[str, int]:
        return {
            "blocks_sent": self.blocks_sent,
            "bytes_sent": self.bytes_sent,
            "blocks_received": self.blocks_received,
            "bytes_received": self.bytes_received,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "bad_messages": self.bad_messages,
            "presences_dropped": self.presences_dropped,
        }


@dataclass(slots=True, eq=False)
class _Want:
    """One block this node wants (trio side)."""

    cid: bytes
    done: trio.Event = field(default_factory=trio.Event)
    waiters: int = 0
    assigned: str | None = None
    """The peer asked for the block itself."""
    asked: set[str] = field(default_factory=set)
    """Every peer that has this want in its ledger (want-have or want-block)."""
    dont_have: set[str] = field(default_factory=set)
    nudge_at: float = 0.0
    """When to send the want again to the peers in ``dont_have`` (0: not planned)."""
    nudge_gap: float = 0.0
    looked_up: bool = False
    error: str | None = None
    """Why the block, delivered, could not be stored (the blockstore refused it)."""
    data: bytes | None = None
    """The block as delivered (its hash checked), handed to the fetches that wait for it."""


@dataclass(slots=True, eq=False)
class _Arrival:
    """A block received, checked in a worker thread: its CID (from its bytes), whether it was stored."""

    cid: bytes | None
    """None: the block's prefix is unusable (``problem`` says why)."""
    data: bytes
    stored: bool = False
    problem: str | None = None
    """Why the block is unusable, or why the blockstore refused it."""


@dataclass(slots=True, eq=False)
class _Peer:
    """A connected peer: its ledger, what is queued for it, its outbound stream."""

    id: str
    ledger: dict[bytes, Entry] = field(default_factory=dict)
    """Its wants we can't serve yet, by multihash."""
    blocks: collections.OrderedDict[bytes, bytes] = field(default_factory=collections.OrderedDict)
    """Blocks to send: multihash -> CID, in the order asked."""
    presences: list[tuple[bytes, bool]] = field(default_factory=list)
    entries: dict[bytes, Entry] = field(default_factory=dict)
    """Our wantlist changes for it, by CID (a later change replaces an earlier one)."""
    wake: trio.Event = field(default_factory=trio.Event)
    stream: Any = None
    protocol: str | None = None
    sender: bool = False
    inflight: int = 0
    """Our want-blocks it has not answered."""
    heard: float = 0.0
    """When it last answered us (a block or a presence), or when we last asked it while idle."""
    useful: bool = False
    """It has answered HAVE or sent a block."""
    slow_until: float = 0.0
    """It left blocks unanswered for ``STALL`` seconds: until then, it is asked for blocks only
    when no other peer can be (a peer cut off from us keeps its connection for a while)."""
    speaks: bool = True
    """False once a stream to it could not be opened: it does not run Bitswap."""
    gone: bool = False


class Bitswap:
    """P2P service ``bitswap`` (see the module)."""

    name = "bitswap"

    def __init__(
        self,
        open_store: Callable[[], Blockstore],
        *,
        dht: Callable[[], Dht | None] = lambda: None,
        max_message: int = 4 * 1024 * 1024,
        max_block: int = 2 * 1024 * 1024,
        max_entries: int = 8192,
        max_ledger: int = 1024,
        per_peer: int = 32,
        on_blocks: Callable[[int], None] | None = None,
    ) -> None:
        self._open_store = open_store
        self.store: Blockstore = MemoryBlockstore()  # empty until the service runs
        self._dht = dht
        self.max_message = max_message
        self.max_block = max_block
        self.max_entries = max_entries
        self.max_ledger = max_ledger
        self.max_presences = 8 * max_entries
        """HAVE and DONT_HAVE answers queued for one peer at most (beyond: dropped, counted)."""
        self.per_peer = per_peer
        self._notify = on_blocks
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._peers: dict[str, _Peer] = {}
        self._wants: dict[bytes, _Want] = {}
        self._backlog: collections.deque[_Want] = collections.deque()
        self.stats: dict[str, PeerStats] = {}
        self.duplicates = 0
        self.fetches = 0
        self.timeouts = 0
        self.lookups = 0
        """DHT lookups of providers."""
        self._log_limit = PeerLogLimit()

    # ------------------------------------------------------------------ the service

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        from libp2p.custom_types import TProtocol

        self._host = host
        self.store = self._open_store()  # the repository opened before the host started
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for protocol in PROTOCOLS:
                host.set_stream_handler(TProtocol(protocol), self._receive)
            for peer_id in [str(p) for p in host.get_network().connections]:
                self.peer_connected(peer_id)
            nursery.start_soon(self._tick)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for peer in self._peers.values():
                    peer.gone = True
                    peer.wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "protocols": list(PROTOCOLS),
            "wants": len(self._wants),
            "peers": {peer: stats.snapshot() for peer, stats in list(self.stats.items())},
            "duplicates": self.duplicates,
            "dht_lookups": self.lookups,
        }

    def wanted(self) -> list[bytes]:
        """The CIDs being fetched now."""
        return [want.cid for want in list(self._wants.values())]

    def peer_connected(self, peer_id: str) -> None:
        peer = self._peer(peer_id)
        if self._wants:  # ask the newcomer for what nobody here could serve
            for want in list(self._wants.values()):
                if want.assigned is None and peer_id not in want.asked:
                    self._ask(peer, want, have=True)
            self._kick_backlog()

    def peer_disconnected(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        peer.gone = True
        peer.wake.set()
        for want in self._wants.values():
            want.asked.discard(peer_id)
            if want.assigned == peer_id:
                want.assigned = None
                self._backlog.append(want)
        self._kick_backlog()

    def _peer(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(peer_id, heard=time.monotonic())
            self.stats.setdefault(peer_id, PeerStats())
        self._ensure_sender(peer)
        return peer

    def _ensure_sender(self, peer: _Peer) -> None:
        """Run ``peer``'s sender unless it runs (it ends when a stream cannot be opened: the
        next want or message for the peer starts it again) or the peer refused Bitswap."""
        if not peer.sender and peer.speaks and not peer.gone and self._nursery is not None:
            peer.sender = True
            self._nursery.start_soon(self._send_loop, peer)

    # ------------------------------------------------------------------ fetching

    async def fetch(
        self, cids: Sequence[bytes], timeout: float, *, prefer: str | None = None
    ) -> dict[bytes, bytes]:
        """Return once every block of ``cids`` is in the blockstore, with the blocks that arrived
        for this call by CID (checked against their CID as they arrived, so the caller need not
        read and hash them again); :class:`FetchTimeout` after ``timeout`` seconds, naming the
        first block still missing. ``prefer``: a peer likely to hold the blocks (say, the one
        that announced them), asked first when it is connected, not slow and has room."""
        wants: list[_Want] = []
        new: list[_Want] = []
        for cid in cids:
            key = multihash_of(cid)
            if self.store.has(cid):
                continue
            want = self._wants.get(key)
            if want is None:
                want = self._wants[key] = _Want(cid)
                new.append(want)
            want.waiters += 1
            wants.append(want)
        if not wants:
            return {}
        self.fetches += 1
        favourite = self._peers.get(prefer) if prefer is not None else None
        if favourite is not None and favourite.speaks and not favourite.gone:
            now = time.monotonic()
            for want in new:
                if favourite.slow_until > now or favourite.inflight >= self.per_peer:
                    break
                self._give(favourite, want)
        self._assign(new)
        try:
            with trio.fail_after(timeout):
                for want in wants:
                    await want.done.wait()
            failed = next((w for w in wants if w.error is not None), None)
            if failed is not None:
                raise FetchError(f"block {cid_to_str(failed.cid)} arrived but was not stored: {failed.error}")
            return {want.cid: want.data for want in wants if want.data is not None}
        except trio.TooSlowError:
            self.timeouts += 1
            missing = [w for w in wants if not w.done.is_set()]
            raise FetchTimeout(cid_to_str(missing[0].cid), len(missing), timeout) from None
        finally:
            for want in wants:
                want.waiters -= 1
                if want.waiters == 0 and not want.done.is_set():
                    self._drop(want)

    def _drop(self, want: _Want) -> None:
        """Nobody waits for ``want`` any more: cancel it everywhere."""
        self._wants.pop(multihash_of(want.cid), None)
        for peer_id in want.asked:
            peer = self._peers.get(peer_id)
            if peer is not None:
                self._queue_entry(peer, Entry(want.cid, cancel=True, priority=0))
        if want.assigned is not None and (peer := self._peers.get(want.assigned)) is not None:
            peer.inflight -= 1
        want.assigned = None
        want.asked.clear()

    def _candidates(self) -> list[_Peer]:
        return [p for p in self._peers.values() if p.speaks and not p.gone]

    def _assign(self, wants: Sequence[_Want]) -> None:
        """Ask peers for ``wants`` (see the module); what no peer can take now waits in the backlog."""
        now = time.monotonic()
        # peers that stalled lately come last, and are given blocks only when nobody else can
        peers = sorted(self._candidates(), key=lambda p: p.slow_until > now)
        for want in wants:
            if want.done.is_set() or want.assigned is not None:
                continue
            known = [p for p in peers if p.useful and p.id not in want.dont_have]
            brisk = [p for p in known if p.slow_until <= now]
            known = brisk or known
            free = [p for p in known if p.inflight < self.per_peer]
            if free:
                self._give(min(free, key=lambda p: p.inflight), want)
            elif known:
                self._backlog.append(want)
            else:
                fresh = [p for p in peers if p.id not in want.dont_have and p.id not in want.asked]
                for index, peer in enumerate(fresh):
                    if index == 0 and peer.inflight < self.per_peer:
                        self._give(peer, want)
                    else:
                        self._ask(peer, want, have=True)
                if not fresh and all(p.id in want.dont_have for p in peers):
                    self._look_up(want)  # every connected peer said no (or there are none)

    def _give(self, peer: _Peer, want: _Want) -> None:
        want.assigned = peer.id
        if peer.inflight == 0:
            peer.heard = time.monotonic()
        peer.inflight += 1
        self._ask(peer, want, have=False)

    def _ask(self, peer: _Peer, want: _Want, *, have: bool) -> None:
        want.asked.add(peer.id)
        self._queue_entry(peer, Entry(want.cid, priority=1, want_have=have, send_dont_have=True))

    def _kick_backlog(self) -> None:
        if not self._backlog:
            return
        backlog, self._backlog = self._backlog, collections.deque()
        self._assign([w for w in backlog if not w.done.is_set() and multihash_of(w.cid) in self._wants])

    def _look_up(self, want: _Want) -> None:
        """Every peer said no: ask the DHT for providers of the block (once per want)."""
        dht = self._dht()
        if dht is None or want.looked_up or self._nursery is None:
            return
        want.looked_up = True
        self.lookups += 1
        self._nursery.start_soon(self._find, dht, want)

    async def _find(self, dht: Dht, want: _Want) -> None:
        try:
            providers = await dht.find_key(multihash_of(want.cid).hex(), timeout=10.0)
        except Exception as exc:
            log.info("DHT lookup of %s failed: %s", cid_to_str(want.cid), exc)
            return
        host = self._host
        if host is None:
            return
        for info in providers:
            if str(info.peer_id) in self._peers or info.peer_id == host.get_id():
                continue
            with trio.move_on_after(OPEN_TIMEOUT):
                try:
                    await host.connect(info)
                except Exception as exc:
                    log.debug("could not dial provider %s: %s", info.peer_id, exc)

    async def _tick(self) -> None:
        """Send refused wants again now and then; every ``TICK``, move stalled wants on and
        (every ``REASK`` ticks) ask again for what nobody could serve."""
        rounds = 0
        last = time.monotonic()
        while True:
            await trio.sleep(NUDGE_FIRST)
            now = time.monotonic()
            self._nudge(now)
            if now - last >= TICK:
                last = now
                rounds += 1
                self._look_again(now, reask=rounds % REASK == 0)

    def _look_again(self, now: float, *, reask: bool) -> None:
        stalled = {p.id for p in self._peers.values() if p.inflight and now - p.heard > STALL}
        retry: list[_Want] = []
        for want in self._wants.values():
            if want.assigned in stalled:
                want.dont_have.add(want.assigned)
                self._peers[want.assigned].inflight -= 1
                want.assigned = None
                retry.append(want)
            elif want.assigned is None and reask:
                want.dont_have.clear()  # they may have it by now
                want.asked.clear()
                want.nudge_at = 0.0
                retry.append(want)
        for peer_id in stalled:
            log.info("%s left blocks unanswered for %g s; asking other peers", peer_id, STALL)
            self._peers[peer_id].heard = now
            self._peers[peer_id].slow_until = now + SLOW
        if retry:
            self._assign(retry)

    def _nudge(self, now: float) -> None:
        """Send each want nobody is fetching again to the peers that said DONT_HAVE for it, at
        ``NUDGE_FIRST`` after the first DONT_HAVE, then at doubling gaps up to ``NUDGE_MAX``,
        ``NUDGE_BUDGET`` wants per peer per round at most (a want over the budget stays due and
        goes first in the next round).

        A peer may get the block after saying DONT_HAVE without telling us: Helia keeps our
        want but announces blocks added to it to nobody; it answers when a message from us
        arrives. The want goes again as a want-have without send-dont-have: a peer that has the
        block now says HAVE (and is then asked for it), one that hasn't says nothing, and none
        sends a block we might get twice."""
        budget: dict[str, int] = {}
        due = [w for w in self._wants.values() if w.nudge_at and w.nudge_at <= now]
        due.sort(key=lambda w: w.nudge_at)  # the longest overdue first: none waits for ever
        for want in due:
            if want.assigned is not None or want.done.is_set() or not want.dont_have:
                want.nudge_at = 0.0
                continue
            postponed = False
            for peer_id in want.dont_have:
                peer = self._peers.get(peer_id)
                if peer is None or peer.gone or not peer.speaks:
                    continue
                if budget.get(peer_id, 0) >= NUDGE_BUDGET:
                    postponed = True
                    continue
                budget[peer_id] = budget.get(peer_id, 0) + 1
                want.asked.add(peer_id)
                self._queue_entry(peer, Entry(want.cid, priority=1, want_have=True))
            if not postponed:
                want.nudge_gap = min(want.nudge_gap * 2, NUDGE_MAX)
                want.nudge_at = now + want.nudge_gap

    # ------------------------------------------------------------------ serving

    def blocks_added(self, keys: Sequence[bytes]) -> None:
        """Blocks (by multihash) just stored here: serve peers that want them (trio side)."""
        wanted = set(keys)
        for peer in self._peers.values():
            if not peer.ledger:
                continue
            hits = [k for k in peer.ledger if k in wanted]
            for key in hits:
                entry = peer.ledger.pop(key)
                if entry.want_have:
                    peer.presences.append((entry.cid, True))
                else:
                    peer.blocks[key] = entry.cid
            if hits:
                peer.wake.set()

    def _on_wantlist(self, peer: _Peer, message: Message) -> None:
        if message.full:
            peer.ledger.clear()
            peer.blocks.clear()
        for entry in message.entries:
            try:
                key = multihash_of(entry.cid)
            except CidError:
                raise WireError("a wantlist entry's CID does not parse") from None
            if entry.cancel:
                peer.ledger.pop(key, None)
                peer.blocks.pop(key, None)
                continue
            if self.store.has(entry.cid):
                if entry.want_have:
                    self._answer(peer, entry.cid, True)
                else:
                    peer.blocks[key] = entry.cid
                continue
            if entry.send_dont_have:
                self._answer(peer, entry.cid, False)
            if key in peer.ledger or len(peer.ledger) < self.max_ledger:
                peer.ledger[key] = entry
        peer.wake.set()

    def _answer(self, peer: _Peer, cid: bytes, have: bool) -> None:
        """Queue HAVE or DONT_HAVE for ``peer``, unless ``max_presences`` wait already (a peer
        that asks and does not read: the answers are dropped and counted; it may ask again)."""
        if len(peer.presences) >= self.max_presences:
            self.stats[peer.id].presences_dropped += 1
            return
        peer.presences.append((cid, have))

    async def _send_loop(self, peer: _Peer) -> None:
        """Send what is queued for ``peer`` on the stream we opened to it, until it leaves."""
        try:
            while not peer.gone:
                if not (peer.entries or peer.presences or peer.blocks):
                    peer.wake = trio.Event()
                    await peer.wake.wait()
                    continue
                if peer.stream is None and not await self._open(peer):
                    return
                frame, sent_blocks, sent_bytes = self._pack(peer)
                if frame is None:
                    continue
                try:
                    await write_frame(peer.stream, frame)
                except Exception as exc:  # some of the frame may have left: reset, never close
                    log.info("bitswap stream to %s failed: %s", peer.id, exc)
                    stream, peer.stream = peer.stream, None
                    await _reset(stream)
                    continue
                except BaseException:  # cancelled (the node stops) in the middle of a frame
                    stream, peer.stream = peer.stream, None
                    await _reset(stream)
                    raise
                stats = self.stats[peer.id]
                stats.blocks_sent += sent_blocks
                stats.bytes_sent += sent_bytes
        finally:
            peer.sender = False
            with trio.CancelScope(shield=True):
                await self._close(peer)

    async def _open(self, peer: _Peer) -> bool:
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        assert self._host is not None
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                stream = await self._host.new_stream(
                    ID.from_base58(peer.id), [TProtocol(p) for p in PROTOCOLS]
                )
        except Exception as exc:
            from msuite.runtime.p2p.compat.streams import protocols_refused

            if protocols_refused(exc):  # it does not run Bitswap: never asked again
                log.debug("%s does not speak bitswap: %s", peer.id, exc)
                peer.speaks = False
            else:  # a passing failure (a timeout, a reset): asked last for a while, then again
                log.info("no bitswap stream to %s for now: %s", peer.id, exc)
                peer.slow_until = time.monotonic() + SLOW
            peer.entries.clear()
            peer.presences.clear()
            peer.blocks.clear()
            for want in self._wants.values():
                if peer.id in want.asked:
                    want.asked.discard(peer.id)
                    want.dont_have.add(peer.id)
                    if want.assigned == peer.id:
                        want.assigned = None
                        peer.inflight -= 1
                        self._backlog.append(want)
            self._kick_backlog()
            return False
        peer.stream = stream
        peer.protocol = str(stream.get_protocol())
        return True

    async def _close(self, peer: _Peer) -> None:
        stream, peer.stream = peer.stream, None
        if stream is not None:
            with trio.move_on_after(1.0):
                try:
                    await stream.close()
                except Exception:
                    log.debug("closing a bitswap stream failed", exc_info=True)

    def _pack(self, peer: _Peer) -> tuple[bytes | None, int, int]:
        """The next message for ``peer``: our wantlist changes, presences, then blocks."""
        legacy = peer.protocol in LEGACY
        message = Message()
        if peer.entries:
            message.entries = list(peer.entries.values())[: self.max_entries // 2]
            for entry in message.entries:
                del peer.entries[entry.cid]
        if peer.presences and not legacy:
            message.presences = peer.presences[: self.max_entries // 2]
            del peer.presences[: len(message.presences)]
        elif legacy:
            peer.presences.clear()
        size = 0
        while peer.blocks and (size == 0 or size < TARGET_MESSAGE):
            key, cid = peer.blocks.popitem(last=False)
            data = self.store.get(cid)
            if data is None:  # deleted (gc) or corrupt since it was queued
                continue
            if size and size + len(data) > self.max_message - 64 * 1024:
                peer.blocks[key] = cid
                peer.blocks.move_to_end(key, last=False)
                break
            message.blocks.append((prefix(cid), data))
            size += len(data)
        if message.empty():
            return None, 0, 0
        parts = encode_parts(message, legacy=legacy)
        length = sum(len(part) for part in parts)
        return b"".join([encode_uvarint(length), *parts]), len(message.blocks), size

    def _queue_entry(self, peer: _Peer, entry: Entry) -> None:
        peer.entries[entry.cid] = entry
        peer.wake.set()
        self._ensure_sender(peer)

    # ------------------------------------------------------------------ receiving

    async def _receive(self, stream: Any) -> None:
        """Read the messages a peer sends on a stream it opened, until it closes it.

        Two tasks: this one reads and decodes frames; :meth:`_process` hashes and stores their
        blocks in a worker thread (hashing and file writes release the GIL), then acts on each
        message, in the order they came. One message waits between them at most: when the
        blocks are stored slower than they arrive, reading stops, and yamux's flow control
        stops the peer."""
        peer_id = str(stream.muxed_conn.peer_id)
        reader = FrameReader(stream)
        failed: Exception | None = None
        send, receive = trio.open_memory_channel[Message](0)

        async def process() -> None:
            nonlocal failed
            try:
                await self._process(peer_id, receive)
            except Exception as exc:  # raised below as it is, not inside an exception group
                failed = exc
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(process)
            async with send:
                try:
                    while True:
                        frame = await reader.read_frame(self.max_message)
                        if frame is None:
                            break
                        message = decode(frame, max_entries=self.max_entries, max_block=self.max_block)
                        del frame
                        await send.send(message)
                except Exception as exc:  # raised below, outside the nursery (not in a group)
                    failed = failed or exc
                    nursery.cancel_scope.cancel()
        if failed is not None:
            if isinstance(failed, WireError | FrameError):
                self.stats.setdefault(peer_id, PeerStats()).bad_messages += 1
            raise failed  # the host resets the stream and counts it
        with trio.move_on_after(1.0):
            try:
                await stream.close()
            except Exception:
                log.debug("closing a bitswap stream failed", exc_info=True)

    async def _process(self, peer_id: str, messages: trio.MemoryReceiveChannel[Message]) -> None:
        async with messages:
            async for message in messages:
                arrivals = []
                if message.blocks:
                    arrivals = await trio.to_thread.run_sync(self._check, message.blocks)
                self._on_message(self._peer(peer_id), message, arrivals)

    def _check(self, blocks: list[tuple[bytes, bytes]]) -> list[_Arrival]:
        """(In a worker thread.) Hash each block to its CID and store the wanted ones."""
        out: list[_Arrival] = []
        for block_prefix, data in blocks:
            try:
                # a 1.0.0 block has no prefix: CIDv0 (dag-pb, sha2-256), and the want is found by
                # its multihash whatever codec it was asked under
                cid = cid_from_prefix(block_prefix or V0_PREFIX, data)
            except CidError as exc:
                out.append(_Arrival(None, data, problem=f"a block with an unusable prefix ({exc})"))
                continue
            arrival = _Arrival(cid, data)
            want = self._wants.get(multihash_of(cid))  # a dict read: the trio thread may change it
            if want is not None:
                arrival.stored = self._store(want, arrival)
            out.append(arrival)
        return out

    def _store(self, want: _Want, arrival: _Arrival) -> bool:
        """Put a checked block in the blockstore; False (and ``arrival.problem``) if it refused."""
        try:
            self.store.put(want.cid, arrival.data)
        except BlockstoreError as exc:  # a full disk: fail the fetch now rather than time it out
            log.error("could not store block %s: %s", cid_to_str(want.cid), exc)
            arrival.problem = str(exc)
            return False
        return True

    def _on_message(self, peer: _Peer, message: Message, arrivals: Sequence[_Arrival] = ()) -> None:
        if message.entries or message.full:
            self._on_wantlist(peer, message)
        if arrivals:
            self._on_blocks(peer, arrivals)
        for cid, have in message.presences:
            self._on_presence(peer, cid, have)

    def _on_presence(self, peer: _Peer, cid: bytes, have: bool) -> None:
        peer.heard = time.monotonic()
        peer.slow_until = 0.0
        if have and not peer.useful:
            # a provider, even when another peer's copy came first: the rest of the DAG is
            # likely there too, so it takes a share of the blocks waiting for a free peer
            peer.useful = True
            self._kick_backlog()
        try:
            want = self._wants.get(multihash_of(cid))
        except CidError:
            return
        if want is None:
            return
        if have:
            if want.assigned is None and peer.inflight < self.per_peer:
                self._give(peer, want)
            return
        want.dont_have.add(peer.id)
        if not want.nudge_at:
            want.nudge_gap = NUDGE_FIRST
            want.nudge_at = time.monotonic() + NUDGE_FIRST
        if want.assigned == peer.id:
            want.assigned = None
            peer.inflight -= 1
            self._assign([want])

    def _on_blocks(self, peer: _Peer, arrivals: Sequence[_Arrival]) -> None:
        stats = self.stats[peer.id]
        peer.heard = time.monotonic()
        peer.slow_until = 0.0
        arrived: list[bytes] = []
        for arrival in arrivals:
            cid = arrival.cid
            if cid is None:
                self._reject(peer, arrival.problem or "an unusable block")
                continue
            key = multihash_of(cid)
            want = self._wants.pop(key, None)
            if want is None:
                if self.store.has(cid):
                    stats.duplicates += 1
                    self.duplicates += 1
                else:
                    self._reject(
                        peer, f"a block matching no wanted CID (its bytes hash to {cid_to_str(cid)})"
                    )
                continue
            if not arrival.stored and arrival.problem is None:  # wanted since it was checked
                arrival.stored = self._store(want, arrival)
            if not arrival.stored:
                want.error = arrival.problem
                want.done.set()
                continue
            data = arrival.data
            stats.blocks_received += 1
            stats.bytes_received += len(data)
            peer.useful = True
            if want.assigned is not None and (holder := self._peers.get(want.assigned)) is not None:
                holder.inflight -= 1
            for other in want.asked:
                if other != peer.id and (asked := self._peers.get(other)) is not None:
                    self._queue_entry(asked, Entry(want.cid, cancel=True, priority=0))
            want.asked.clear()
            want.assigned = None
            want.data = data
            want.done.set()
            arrived.append(key)
        if arrived:
            self.blocks_added(arrived)
            if self._notify is not None:
                self._notify(len(arrived))
            self._kick_backlog()

    def _reject(self, peer: _Peer, what: str) -> None:
        self.stats[peer.id].rejected += 1
        unlogged = self._log_limit.allow(peer.id)
        if unlogged is not None:
            more = f" ({unlogged} more from this peer in the last minute)" if unlogged else ""
            log.warning("dropped %s from %s%s", what, peer.id, more)


async def _reset(stream: Any) -> None:
    """Reset ``stream`` (a frame may have been cut short: the peer must not read on), bounded."""
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        try:
            await stream.reset()
        except Exception:
            log.debug("resetting a bitswap stream failed", exc_info=True)
