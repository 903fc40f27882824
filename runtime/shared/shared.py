"""Component ``shared``: the store shared by every node of a channel (``node.shared(ns)``).

Data flow (the merge itself is in :mod:`.replica`):

1. A write through a namespace's store (:class:`SharedStore`, the item
   store's API) lands in the local view at once, in one LevelDB batch with a
   pending record of it; ``on_change`` callbacks are queued.
2. ``storage.shared.batch_delay`` after the first pending write (or at once
   when ``batch_max`` are pending) the pending writes become one delta: its
   block goes to the repository's blockstore, then the replica records it
   (one LevelDB batch), then the new heads are published on the channel's
   topic ``msuite/<channel>/shared``.
3. A node that hears of a head it has not applied walks the DAG down from it:
   blocks it lacks come over Bitswap (``walk_concurrency`` at a time), until
   every branch reaches a delta applied here; then it applies the fetched
   deltas bottom-up. A round fetches at most ``walk_limit`` deltas and lasts
   at most ``walk_timeout``; a cut round goes on in the next one (the blocks
   fetched stay in the blockstore).
4. Every ``rebroadcast`` seconds, and soon after a peer connects, the heads
   are published again, so late and healed nodes learn them.

Bad input from peers (a heads message or a delta that does not decode, a
delta with a wrong height or malformed writes, a head nobody serves) is
counted and logged, rate-limited per peer, and changes nothing here; a
rejected delta is remembered so announcements of it are not chased again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from msuite.runtime.errors import NodeError
from msuite.runtime.p2p.faults import PeerLogLimit
from msuite.runtime.store.store import Batch, Store, _namespace_key

from .delta import Delta, DeltaError, decode_announcement, decode_delta, encode_heads
from .replica import Change, Replica, parse_record_key

if TYPE_CHECKING:
    from msuite.runtime.auth.component import AuthComponent
    from msuite.runtime.files.bitswap import Bitswap
    from msuite.runtime.files.blockstore import Blockstore
    from msuite.runtime.p2p.host import P2PHost
    from msuite.runtime.p2p.pubsub import Message, Subscription
    from msuite.runtime.repo.component import RepoComponent
    from msuite.runtime.store.kv import Snapshot
    from msuite.spec import Manifest

__all__ = [
    "RESERVED_PREFIX",
    "ItemKey",
    "OnChange",
    "Shared",
    "SharedError",
    "SharedStore",
    "SyncTimeout",
    "topic_for",
]

log = logging.getLogger("msuite.shared")

T = TypeVar("T")

RESERVED_PREFIX = "msuite."
"""Namespaces starting with this are msuite's own (the ACL lives in ``msuite.acl``)."""

WALKS = 256
"""Most catch-up rounds (one per unknown head) at once; a head heard beyond that is taken up when
it is announced again. Rounds waiting for a delta nobody serves hold no other round up."""

PEER_REBROADCAST_DELAY = 1.0
"""Seconds after a peer connects before the heads are published again (its mesh forms first)."""

APPLY_SLICE = 0.005
"""Seconds of applying deltas between two turns of the event loop."""

DECODED_KEPT = 20_000
"""Decoded deltas kept for other catch-up rounds until they are applied."""

REJECTED_KEPT = 10_000
"""Rejected delta CIDs remembered (so announcements of them are ignored)."""


class SharedError(NodeError):
    """The shared store cannot do what was asked (the message says why)."""


class SyncTimeout(SharedError, TimeoutError):
    """:meth:`SharedStore.sync` ran out of time before every node's heads were applied here."""


class ItemKey(NamedTuple):
    """Which item changed: its class's store namespace and its id."""

    namespace: str
    id: str


OnChange = Callable[[ItemKey, bytes | None, str], Awaitable[None] | None]
"""``on_change(key, value, origin)``: ``value`` is the item's stored bytes (decode them with
:meth:`SharedStore.decode`), None when it was deleted; ``origin`` is ``"local"`` or the peer id
of the node that wrote it."""


def topic_for(channel: str) -> str:
    """The pubsub topic of a channel's head announcements."""
    return f"msuite/{channel}/shared"


@dataclass
class _PeerSync:
    heard: float = 0.0
    """When its last announcement arrived (wall clock)."""
    synced: float = 0.0
    """When every head it announced was last applied here (wall clock)."""
    waiting: set[bytes] = field(default_factory=set)
    """Heads of its last announcement not applied here yet."""


@dataclass
class _Walk:
    head: bytes
    peer: str
    task: asyncio.Task[None] | None = None
    fetching: int = 0


@dataclass
class _Counters:
    bad_messages: int = 0
    bad_deltas: int = 0
    walk_failures: int = 0
    walks_cut: int = 0
    deltas_fetched: int = 0
    deltas_made: int = 0
    publish_failures: int = 0
    callback_errors: int = 0
    by_peer: dict[str, _PeerSync] = field(default_factory=dict)


# --------------------------------------------------------------------------- the store


class _View:
    """The item store's KV: the replica's materialized view; writes go through the replica."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared

    def get(self, key: bytes) -> bytes | None:
        return self._shared.replica.view.get(key)

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        shared = self._shared
        changes = shared.replica.local_write(puts, deletes, changes=shared._listened)
        shared._written(changes)

    def snapshot(self) -> Snapshot:
        return self._shared.replica.view.snapshot()

    def close(self) -> None:
        pass


class SharedStore(Store):
    """One namespace of the shared store: the item store's API (see ``docs/storage.md``).

    Writes apply here at once and reach the channel's other nodes within about
    ``batch_delay`` plus a round trip; reads answer from this node's copy."""

    def __init__(self, shared: Shared, namespace: str) -> None:
        super().__init__(_View(shared), prefix=_namespace_key(namespace))
        self.namespace = namespace
        self._shared = shared
        self._callbacks: list[OnChange] = []
        self._queue: asyncio.Queue[tuple[ItemKey, bytes | None, str]] | None = None
        self._task: asyncio.Task[None] | None = None

    def _reads_from(self, replica: Replica | None) -> None:
        """Point reads straight at ``replica``'s view while it is open (one Python call less per
        read than through :class:`_View`); None: back through the view, which raises
        :class:`SharedError` once the node is stopped."""
        self._get = self._kv.get if replica is None else replica.view.get

    def on_change(self, callback: OnChange) -> None:
        """Call ``callback(key, value, origin)`` after each change of an item here (local or
        remote), in order, one at a time; a callback added twice is called once."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)
            self._shared._listened = True

    @staticmethod
    def decode(kind: type[T], value: bytes) -> T:
        """The item of class ``kind`` whose stored bytes an ``on_change`` callback got."""
        from msuite.runtime.store.items import codec_for

        return codec_for(kind).decode(value)

    async def flush(self) -> None:
        """Send the writes made so far to the channel now (instead of after ``batch_delay``)."""
        await self._shared.flush()

    async def sync(self, timeout: float = 5.0) -> None:
        """Catch up with the channel now: return once every write the other reachable nodes had
        acknowledged when this was called (pending ones included: the request makes them send
        them) is applied here, in every namespace. :class:`SyncTimeout` after ``timeout``
        seconds, naming the nodes that did not answer or whose writes could not be fetched."""
        await self._shared.sync(timeout)

    # a write returns after one turn of the event loop when ``batch_max`` writes are pending,
    # so a loop of writes that never awaits anything else still sends full deltas as it goes

    async def create(self, item: T) -> T:
        stored = await super().create(item)
        await self._shared.settle()
        return stored

    async def update(self, item: T) -> T:
        stored = await super().update(item)
        await self._shared.settle()
        return stored

    async def delete(self, kind: type[Any], id: str) -> None:
        await super().delete(kind, id)
        await self._shared.settle()

    def batch(self) -> Batch:
        return _SharedBatch(self)

    def _notify(self, key: ItemKey, value: bytes | None, origin: str) -> None:
        if not self._callbacks:
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(
                self._deliver(), name=f"msuite-shared-{self.namespace}"
            )
        self._queue.put_nowait((key, value, origin))

    async def _deliver(self) -> None:
        assert self._queue is not None
        while True:
            key, value, origin = await self._queue.get()
            for callback in list(self._callbacks):
                try:
                    result = callback(key, value, origin)
                    if result is not None:
                        await result
                except Exception:
                    self._shared.counters.callback_errors += 1
                    log.exception(
                        "shared %s: on_change failed for %s/%s", self.namespace, key.namespace, key.id
                    )

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._queue = None


class _SharedBatch(Batch):
    async def commit(self) -> list[Any]:
        results = await super().commit()
        await self._store._shared.settle()  # type: ignore[attr-defined]
        return results


# --------------------------------------------------------------------------- the component


class Shared:
    """Component ``shared`` (see the module); ``node.shared(ns)`` returns its namespaces."""

    name = "shared"
    status_does_io = True
    """``status()`` counts the applied deltas in LevelDB."""

    def __init__(
        self,
        manifest: Manifest,
        host: P2PHost,
        repo: RepoComponent,
        bitswap: Bitswap,
        requires: tuple[str, ...],
    ) -> None:
        assert manifest.storage.shared is not None
        self.config = manifest.storage.shared
        self.channel = self.config.channel
        self.topic = topic_for(self.channel)
        self.requires = requires
        self.bitswap = bitswap
        self._sync = manifest.storage.sync
        self._host = host
        self._repo = repo
        self._replica: Replica | None = None
        self._blocks: Blockstore | None = None
        self._stores: dict[str, SharedStore] = {}
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._walks: dict[bytes, _Walk] = {}
        self._retry_after: dict[bytes, float] = {}
        self._rejected: dict[bytes, None] = {}
        self._fetching: dict[bytes, asyncio.Future[Delta]] = {}
        """Deltas some catch-up round is fetching now."""
        self._decoded: dict[bytes, Delta] = {}
        """Deltas decoded lately and not applied yet (oldest first, at most ``DECODED_KEPT``)."""
        self._flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._publish_wanted = asyncio.Event()
        self._asked = False
        """A node asked for the heads (``sync``): the next announcement goes out even if empty."""
        self._synced = asyncio.Event()
        """Set whenever a peer's announced heads are all applied here (``sync`` waits for it)."""
        self._log_limit = PeerLogLimit()
        self.counters = _Counters()
        self.state = "stopped"
        self.auth: AuthComponent | None = None
        """The auth component, when the node has one: its ACL's run-time entries are shared."""
        self._listened = False
        """Whether some namespace has an ``on_change`` callback (else changes are not dispatched)."""

    # ------------------------------------------------------------------ access

    @property
    def replica(self) -> Replica:
        if self._replica is None:
            raise SharedError("node.shared works while the node runs")
        return self._replica

    def namespace(
        self, name: str, on_change: OnChange | None = None, *, internal: bool = False
    ) -> SharedStore:
        """The store of namespace ``name`` (the same object on every call)."""
        if not isinstance(name, str):
            raise TypeError(f"a namespace is a str, not {type(name).__name__}")
        if name.startswith(RESERVED_PREFIX) and not internal:
            raise ValueError(
                f"namespaces starting with {RESERVED_PREFIX!r} are msuite's own: choose another name"
            )
        store = self._stores.get(name)
        if store is None:
            store = self._stores[name] = SharedStore(self, name)  # checks the name's length
            store._reads_from(self._replica)
        if on_change is not None:
            store.on_change(on_change)
        return store

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        repo = self._repo.opened()
        self._blocks = repo.blockstore(sync=self._sync)
        self._replica = Replica(repo.space(f"shared/{self.channel}"), self._host.peer_id)
        for store in self._stores.values():
            store._reads_from(self._replica)
        self.state = "starting"
        self._subscription = await self._host.pubsub.subscribe(self.topic, self._on_message)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._publisher(), name="msuite-shared-publish"),
            loop.create_task(self._rebroadcaster(), name="msuite-shared-rebroadcast"),
        ]
        self._host.on_peer(self._on_peer)
        self.state = "running"
        if self.auth is not None:
            await self.auth.current.acl.share(self.namespace("msuite.acl", internal=True))
        if self._replica.pending:  # writes a crash left unsent
            self._schedule_flush()
        if self._replica.heads:
            self._publish_wanted.set()

    async def stop(self, grace: float) -> None:
        """Send the pending writes and the heads (within ``grace``), then stop syncing."""
        if self.state == "stopped":
            return
        self.state = "stopping"
        if self._replica is not None:
            with contextlib.suppress(Exception):
                self._flush_pending()
        if self._host.bridge.running and self._replica is not None and self._replica.heads:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publish_heads(), timeout=min(grace, 2.0) or 0.5)
        for walk in list(self._walks.values()):
            if walk.task is not None:
                walk.task.cancel()
        for task in self._tasks:
            task.cancel()
        for task in [w.task for w in self._walks.values() if w.task is not None] + self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._walks.clear()
        self._tasks = []
        for store in self._stores.values():
            await store._close()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.cancel()
            self._subscription = None
        self._replica = None
        for store in self._stores.values():
            store._reads_from(None)
        self.state = "stopped"

    # ------------------------------------------------------------------ local writes

    def _written(self, changes: list[Change]) -> None:
        self._dispatch(changes, "local")
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self.state not in ("running", "starting"):
            return
        loop = asyncio.get_running_loop()
        if len(self.replica.pending) >= self.config.batch_max:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush_handle = loop.call_soon(self._flush_now)
        elif self._flush_handle is None:
            delay = self.config.batch_delay.total_seconds()
            self._flush_handle = (
                loop.call_later(delay, self._flush_now) if delay else loop.call_soon(self._flush_now)
            )

    def _flush_now(self) -> None:
        """Turn the pending writes into deltas (synchronously: nothing writes in between)."""
        self._flush_handle = None
        replica, blocks = self.replica, self._blocks
        assert blocks is not None
        made: list[bytes] = []
        while replica.pending:
            cid, block, delta = replica.make_delta(self.config.batch_max)  # type: ignore[misc]
            try:
                blocks.put(cid, block)
            except Exception as exc:  # a full disk: keep the writes pending, try again later
                log.error("shared %s: cannot store a delta (%s); the writes stay pending", self.channel, exc)
                self._flush_handle = asyncio.get_running_loop().call_later(1.0, self._flush_now)
                break
            self._dispatch(replica.commit_local(cid, delta), "local")
            self.counters.deltas_made += 1
            made.append(cid)
        if made:
            from msuite.runtime.files.cids import multihash_of

            if self._host.bridge.running:
                self._host.bridge.run_sync_soon(self.bitswap.blocks_added, [multihash_of(c) for c in made])
            self._publish_wanted.set()

    async def settle(self) -> None:
        """Let a due flush run (one turn of the event loop) when ``batch_max`` writes are pending."""
        replica = self._replica
        if replica is not None and len(replica.pending) >= self.config.batch_max:
            await asyncio.sleep(0)

    def _flush_pending(self) -> None:
        """Make deltas of the pending writes now, instead of when the scheduled flush is due."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_now()

    def _heads(self) -> list[tuple[bytes, int]]:
        """The heads as announced: highest first, then by CID."""
        return sorted(self.replica.heads.items(), key=lambda item: (-item[1], item[0]))

    async def flush(self) -> None:
        """Make deltas of the pending writes now and publish the heads; returns once published."""
        self._flush_pending()
        await self._publish_heads()

    async def sync(self, timeout: float = 5.0) -> None:
        """Return once this node has applied every head the channel's other nodes announce
        after this call: it publishes its heads asking each node on the topic to announce its
        own at once, then waits for those announcements and for what they name to be applied.
        :class:`SyncTimeout` after ``timeout`` seconds, naming the nodes not caught up with."""
        began = time.time()
        peers = self._host.pubsub.peers(self.topic)
        self._flush_pending()  # this node's own pending writes go out with the request
        await self._host.pubsub.publish(self.topic, encode_heads(self._heads(), ask=True))

        def behind() -> list[str]:
            out = []
            for peer in peers:
                sync = self.counters.by_peer.get(peer)
                if sync is None or sync.heard < began or sync.waiting:
                    out.append(peer)
            return out

        deadline = time.monotonic() + timeout
        while lagging := behind():
            left = deadline - time.monotonic()
            if left <= 0:
                raise SyncTimeout(
                    f"shared {self.channel}: not in step with {len(lagging)} of {len(peers)} nodes "
                    f"after {timeout:g} s ({', '.join(sorted(lagging)[:3])}"
                    + (", ..." if len(lagging) > 3 else "")
                    + ")"
                )
            self._synced.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), min(left, 0.05))

    # ------------------------------------------------------------------ announcing

    async def _publish_heads(self, *, even_none: bool = False) -> None:
        """Announce the heads; with none, only when ``even_none`` (an answer to a ``sync``:
        the asker waits to hear from every node, a node that never wrote included)."""
        heads = self._heads()
        if not heads and not even_none:
            return
        try:
            await self._host.pubsub.publish(self.topic, encode_heads(heads))
        except Exception as exc:
            self.counters.publish_failures += 1
            log.debug("shared %s: cannot publish the heads: %s", self.channel, exc)

    async def _publisher(self) -> None:
        while True:
            await self._publish_wanted.wait()
            self._publish_wanted.clear()
            answer, self._asked = self._asked, False
            await self._publish_heads(even_none=answer)

    async def _rebroadcaster(self) -> None:
        interval = self.config.rebroadcast.total_seconds()
        while True:
            await asyncio.sleep(interval)
            self._publish_wanted.set()

    async def _on_peer(self, peer: str, connected: bool) -> None:
        if connected and self.state == "running":
            await asyncio.sleep(PEER_REBROADCAST_DELAY)
            self._publish_wanted.set()

    # ------------------------------------------------------------------ catching up

    async def _on_message(self, message: Message) -> None:
        if self.state != "running":
            return
        peer = message.sender
        sync = self.counters.by_peer.setdefault(peer, _PeerSync())
        sync.heard = time.time()
        try:
            heads, ask = decode_announcement(message.data)
        except DeltaError as exc:
            self.counters.bad_messages += 1
            self._warn(peer, f"a heads message that does not decode ({exc})")
            return
        if ask:  # a node wants to catch up now: send what is pending here too, then the heads
            if self.replica.pending:
                self._flush_pending()
            self._asked = True
            self._publish_wanted.set()
        replica = self.replica
        sync.waiting = set()
        now = time.monotonic()
        for cid, _height in heads:
            if replica.height_of(cid) is not None or cid in self._rejected:
                continue
            sync.waiting.add(cid)
            if cid in self._walks or self._retry_after.get(cid, 0.0) > now or len(self._walks) >= WALKS:
                continue
            walk = self._walks[cid] = _Walk(cid, peer)
            walk.task = asyncio.get_running_loop().create_task(self._walk(walk), name="msuite-shared-walk")
        if not sync.waiting:
            sync.synced = time.time()
            self._synced.set()

    async def _walk(self, walk: _Walk) -> None:
        try:
            await self._catch_up(walk)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters.walk_failures += 1
            self._retry_after[walk.head] = time.monotonic() + self.config.rebroadcast.total_seconds()
            self._warn(walk.peer, f"cannot catch up with head {_short(walk.head)}: {exc}")
        finally:
            self._walks.pop(walk.head, None)

    async def _catch_up(self, walk: _Walk) -> None:
        """Fetch what ``walk.head`` needs (one bounded round), then apply it bottom-up.

        Walks run side by side and their DAGs overlap: a delta another walk is fetching is
        awaited, not fetched again, and a delta decoded lately is taken from ``_decoded``."""
        from msuite.runtime.files.bitswap import FetchTimeout

        replica, blocks = self.replica, self._blocks
        assert blocks is not None
        limit, concurrency = self.config.walk_limit, self.config.walk_concurrency
        deadline = time.monotonic() + self.config.walk_timeout.total_seconds()
        graph: dict[bytes, Delta] = {}
        frontier = [walk.head]
        fetched = 0
        loop = asyncio.get_running_loop()
        while frontier:
            todo = list(
                dict.fromkeys(
                    c
                    for c in frontier
                    if c not in graph and c not in self._rejected and replica.height_of(c) is None
                )
            )  # a rejected delta is not fetched again: what builds on it is refused with it
            missing: list[bytes] = []
            waiting: list[tuple[bytes, asyncio.Future[Delta]]] = []
            for cid in todo:
                known = self._decoded.get(cid)
                if known is not None:
                    graph[cid] = known
                    continue
                inflight = self._fetching.get(cid)
                if inflight is not None:
                    waiting.append((cid, inflight))
                    continue
                block = blocks.get(cid)
                if block is None:
                    missing.append(cid)
                else:
                    graph[cid] = self._remember(cid, self._decode(cid, block, walk.peer))
            remaining = deadline - time.monotonic()
            if missing:
                if fetched >= limit:
                    self.counters.walks_cut += 1
                    self._retry_after.pop(walk.head, None)
                    loop.call_soon(self._rewalk, walk.head, walk.peer)
                    return
                if remaining <= 0:
                    raise FetchTimeout(
                        _short(missing[0]), len(missing), self.config.walk_timeout.total_seconds()
                    )
                futures: dict[bytes, asyncio.Future[Delta]] = {cid: loop.create_future() for cid in missing}
                self._fetching.update(futures)
                chunks = [missing[i : i + concurrency] for i in range(0, len(missing), concurrency)]
                walk.fetching = len(missing)
                try:
                    fetch = functools.partial(self.bitswap.fetch, prefer=walk.peer)  # it holds them
                    results = await asyncio.gather(
                        *(self._host.bridge.run(fetch, chunk, remaining) for chunk in chunks)
                    )
                    got: dict[bytes, bytes] = {}
                    for result in results:
                        got.update(result)
                    for cid in missing:
                        block = got.get(cid) or blocks.get(cid)
                        if block is None:
                            raise SharedError(f"delta {_short(cid)} was fetched but cannot be read back")
                        graph[cid] = self._remember(cid, self._decode(cid, block, walk.peer))
                        futures[cid].set_result(graph[cid])
                except BaseException:
                    for future in futures.values():
                        if not future.done():
                            future.set_exception(SharedError("another catch-up round could not fetch it"))
                            future.exception()  # retrieved: the waiters, if any, raise it
                    raise
                finally:
                    walk.fetching = 0
                    for cid in missing:
                        self._fetching.pop(cid, None)
                fetched += len(missing)
                self.counters.deltas_fetched += len(missing)
            for cid, future in waiting:
                graph[cid] = await asyncio.wait_for(asyncio.shield(future), max(remaining, 0.001))
            frontier = [link for cid in todo for link in graph[cid].links]
        await self._apply(walk, graph)

    def _remember(self, cid: bytes, delta: Delta) -> Delta:
        self._decoded[cid] = delta
        if len(self._decoded) > DECODED_KEPT:
            del self._decoded[next(iter(self._decoded))]
        return delta

    def _decode(self, cid: bytes, block: bytes, peer: str) -> Delta:
        try:
            return decode_delta(cid, block)
        except DeltaError as exc:
            self._reject(cid, peer, f"delta {_short(cid)} does not decode ({exc})")
            raise

    def _reject(self, cid: bytes, peer: str, why: str) -> None:
        self.counters.bad_deltas += 1
        self._rejected[cid] = None
        if len(self._rejected) > REJECTED_KEPT:
            del self._rejected[next(iter(self._rejected))]
        self._warn(peer, why)

    def _rewalk(self, head: bytes, peer: str) -> None:
        if self.state != "running" or head in self._walks or self.replica.height_of(head) is not None:
            return
        walk = self._walks[head] = _Walk(head, peer)
        walk.task = asyncio.get_running_loop().create_task(self._walk(walk), name="msuite-shared-walk")

    async def _apply(self, walk: _Walk, graph: dict[bytes, Delta]) -> None:
        """Apply ``graph``'s deltas, each after the deltas it links to, letting the event loop
        run every ``APPLY_SLICE`` seconds (each delta is applied whole, in one batch)."""
        replica = self.replica
        order: list[bytes] = []
        visited: set[bytes] = set()
        stack: list[tuple[bytes, bool]] = [(walk.head, False)]
        while stack:
            cid, children_done = stack.pop()
            if children_done:
                order.append(cid)
                continue
            if cid in visited or cid not in graph:
                continue
            visited.add(cid)
            stack.append((cid, True))
            stack.extend((link, False) for link in graph[cid].links if link in graph and link not in visited)
        slice_began = time.monotonic()
        for cid in order:
            if time.monotonic() - slice_began > APPLY_SLICE:
                await asyncio.sleep(0)
                slice_began = time.monotonic()
                if self._replica is None:
                    return  # stopped meanwhile
            delta = graph[cid]
            if replica.height_of(cid) is not None:
                continue
            if any(link in self._rejected for link in delta.links):
                self._reject(cid, walk.peer, f"delta {_short(cid)} builds on a rejected delta")
                continue
            self._decoded.pop(cid, None)
            try:
                changes = replica.apply(cid, delta)
            except DeltaError as exc:
                self._reject(cid, walk.peer, f"delta {_short(cid)} from {delta.node} is refused: {exc}")
                continue
            self._dispatch(changes, delta.node)
        now = time.time()
        for sync in self.counters.by_peer.values():
            if sync.waiting:
                sync.waiting = {cid for cid in sync.waiting if replica.height_of(cid) is None}
                if not sync.waiting:
                    sync.synced = now
                    self._synced.set()

    # ------------------------------------------------------------------ callbacks

    def _dispatch(self, changes: list[Change], origin: str) -> None:
        if not self._listened:
            return  # no namespace has an on_change callback: nothing to look up
        for change in changes:
            parsed = parse_record_key(change.key)
            if parsed is None:
                continue
            ns, item_ns, raw_id = parsed
            store = self._stores.get(ns[1:].decode(errors="replace"))
            if store is None or not store._callbacks:
                continue
            value = None if change.value is None else change.value[17:]
            key = ItemKey(item_ns[1:].decode(errors="replace"), raw_id.decode(errors="replace"))
            store._notify(key, value, origin)

    # ------------------------------------------------------------------ reporting

    def _warn(self, peer: str, what: str) -> None:
        unlogged = self._log_limit.allow(peer)
        if unlogged is None:
            return
        more = f" ({unlogged} more from this peer in the last minute)" if unlogged else ""
        log.warning("shared %s: from %s: %s%s", self.channel, peer, what, more)

    def pending_fetches(self) -> int:
        return sum(walk.fetching for walk in list(self._walks.values()))

    def status(self) -> dict[str, Any]:
        replica = self._replica
        if replica is None:
            return {"state": self.state, "channel": self.channel}
        counters = self.counters
        return {
            "state": self.state,
            "channel": self.channel,
            "topic": self.topic,
            "heads": len(replica.heads),
            "height": replica.height,
            "pending_writes": len(replica.pending),
            "pending_fetches": self.pending_fetches(),
            "walks": len(self._walks),
            "deltas": replica.count_applied(),
            "deltas_applied": replica.applied,
            "deltas_made": counters.deltas_made,
            "deltas_fetched": counters.deltas_fetched,
            "conflicts": replica.conflicts,
            "bad_messages": counters.bad_messages,
            "bad_deltas": counters.bad_deltas,
            "walk_failures": counters.walk_failures,
            "walks_cut": counters.walks_cut,
            "publish_failures": counters.publish_failures,
            "callback_errors": counters.callback_errors,
            "namespaces": sorted(self._stores),
            "peers": {
                peer: {"last_heard": _iso(sync.heard), "last_sync": _iso(sync.synced)}
                for peer, sync in sorted(counters.by_peer.items())
            },
        }

    def applied_keys(self) -> list[bytes]:
        """The multihashes of every delta applied here (the blocks ``files.gc`` keeps)."""
        from msuite.runtime.files.cids import multihash_of

        replica = self._replica
        if replica is None:
            return []
        snap = replica.kv.snapshot()
        try:
            return [multihash_of(key[1:]) for key in snap.keys(b"a")]
        finally:
            snap.close()


def _short(cid: bytes) -> str:
    from msuite.runtime.files.cids import cid_to_str

    return cid_to_str(cid)


def _iso(stamp: float) -> str | None:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds") if stamp else None
