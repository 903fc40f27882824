"""``node.events``: typed events published to every node of the channel, handled concurrently.

::

    @node.events.on(NoteCreated)
    async def created(event: NoteCreated) -> None:
        print(event.title, "from", event.meta.publisher)

    await node.events.publish(NoteCreated(id="n1", title="hello"))

How an event travels (``docs/events.md`` has the guarantees and the wire format):

1. ``publish`` encodes the envelope, hands it to GossipSub on the type's topic
   (``msuite/<channel>/events/<type>``) and then to this node's own handlers.
2. On every other node of the channel, the topic's subscription (joined at start
   for every type the manifest declares) decodes it, drops it when it is a
   duplicate (same publisher and id), older than what that publisher's session
   already delivered, or does not fit (each drop counted by reason), and offers
   it to each handler of the type.
3. Each handler has its own bounded queue and task: handlers never wait for one
   another. A full queue either drops its oldest event (``overflow="drop_oldest"``,
   the default, counted) or makes the topic wait for room (``overflow="block"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from msuite.runtime.p2p.faults import LOG_EVERY, PeerLogLimit
from msuite.runtime.wiring import Event, EventMeta

from .envelope import MAX_SIZE, Decoded, Decoder, EventError, Rejected, encode, new_session, topic_for

if TYPE_CHECKING:
    from msuite.runtime.p2p.host import P2PHost
    from msuite.runtime.p2p.pubsub import Message, Subscription
    from msuite.spec import Manifest

__all__ = ["DROP_REASONS", "EventError", "Events", "Overflow"]

log = logging.getLogger("msuite.events")

E = TypeVar("E", bound=Event)
Overflow = Literal["drop_oldest", "block"]
Handler = Callable[[E], Awaitable[None]]

DROP_REASONS = (
    "too_large",
    "undecodable",
    "version",
    "unknown_type",
    "invalid",
    "duplicate",
    "out_of_order",
    "queue_full",
    "topic_queue_full",
    "channel_full",
    "outbound_full",
    "stopping",
)
"""Why an event was dropped (the ``reason`` label of ``msuite_events_dropped_total``)."""

QUEUE_SIZE = 4096
"""Default events a handler's queue holds."""

TOPIC_QUEUE = 8192
"""Messages a topic's subscription holds before it is decoded (beyond: ``topic_queue_full``)."""

SEEN = 16384
"""(publisher, id) pairs remembered for dropping duplicates."""

SESSIONS = 4096
"""Publisher sessions whose next sequence number is remembered."""

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds, in seconds, of the handler latency histogram."""

RECENT = 1024
"""Latest handler latencies kept for the p50/p99 of ``/status``."""


class Latency:
    """Seconds from an event's arrival (or its ``publish``) to its handler's return."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=RECENT)

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        self.recent.append(seconds)
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[index] += 1
                return
        self.counts[-1] += 1

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the recent latencies (None before the first)."""
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class EventHandler(Generic[E]):
    """One handler of one event type: its queue, its task and its counters."""

    def __init__(  # noqa: PLR0917
        self, events: Events, cls: type[E], handler: Handler[E], name: str, queue: int, overflow: Overflow
    ) -> None:
        self.cls = cls
        self.type = cls.__name__
        self.handler = handler
        self.name = name
        self.overflow: Overflow = overflow
        self.delivered = 0
        self.errors = 0
        self.dropped = 0
        self.latency = Latency()
        self._events = events
        self._queue: asyncio.Queue[tuple[E, float]] = asyncio.Queue(queue)
        self._task: asyncio.Task[None] | None = None
        self._last_traceback = -LOG_EVERY

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"msuite-events-{self.type}-{self.name}"
            )

    async def offer(self, event: E, arrived: float) -> None:
        """Queue ``event``; on a full queue, drop the oldest or wait, as the handler's policy says."""
        if self.overflow == "block":
            await self._queue.put((event, arrived))
            return
        try:
            self._queue.put_nowait((event, arrived))
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._queue.task_done()
            self._queue.put_nowait((event, arrived))
            self.dropped += 1
            self._events._drop(self.type, "queue_full")
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "events: handler %s of %s falls behind; its queue of %d is full and %d events "
                    "were dropped, oldest first",
                    self.name,
                    self.type,
                    self._queue.maxsize,
                    self.dropped,
                )

    async def _run(self) -> None:
        queue = self._queue
        while True:
            event, arrived = await queue.get()
            try:
                await self.handler(event)
            except Exception as exc:
                self.errors += 1
                self._failed(event, exc)
            else:
                self.delivered += 1
            finally:
                self.latency.observe(time.perf_counter() - arrived)
                queue.task_done()

    def _failed(self, event: E, exc: Exception) -> None:
        meta = event.meta
        now = time.monotonic()
        with_traceback = now - self._last_traceback >= LOG_EVERY
        if with_traceback:
            self._last_traceback = now
        log.error(
            "events: handler %s failed on %s %s from %s: %s: %s",
            self.name,
            self.type,
            meta.id if meta else "?",
            meta.publisher if meta else "?",
            type(exc).__name__,
            exc,
            exc_info=exc if with_traceback else None,
        )

    async def drain(self) -> None:
        await self._queue.join()

    async def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> dict[str, Any]:
        p50, p99 = self.latency.quantile(0.5), self.latency.quantile(0.99)
        return {
            "handler": self.name,
            "overflow": self.overflow,
            "queue": self._queue.maxsize,
            "queued": self.queued,
            "delivered": self.delivered,
            "errors": self.errors,
            "dropped": self.dropped,
            "latency_ms": {
                "p50": None if p50 is None else round(p50 * 1000, 3),
                "p99": None if p99 is None else round(p99 * 1000, 3),
            },
        }


class _Topic:
    """One event type's topic on this node: its decoder, handlers and counters."""

    def __init__(self, type_name: str, topic: str) -> None:
        self.type = type_name
        self.topic = topic
        self.decoder: Decoder[Any] | None = None
        self.handlers: list[EventHandler[Any]] = []
        self.subscription: Subscription | None = None
        self.published = 0
        self.publish_errors = 0
        self.received = 0
        self.unhandled = 0
        self.missed = 0
        self.dropped: dict[str, int] = {}
        self.seq = 0
        self.lock = asyncio.Lock()


class Events:
    """``node.events`` and component ``events``: publish typed events, handle them on every node."""

    name = "events"

    def __init__(self, manifest: Manifest, host: P2PHost, requires: tuple[str, ...]) -> None:
        assert manifest.p2p is not None
        self.requires = requires
        self.manifest = manifest
        self.channel = manifest.p2p.channel or manifest.name
        self.state = "new"
        self._host = host
        self._session = new_session()
        self._ids = random.Random(os.urandom(32))
        """Event ids: seeded once from the OS, then no system call (``os.urandom`` releases the GIL,
        and getting it back from a busy p2p thread cost ~0.2 ms per publish)."""
        self._topics = {name: _Topic(name, topic_for(self.channel, name)) for name in manifest.events}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._sessions: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()
        self._log_limit = PeerLogLimit()
        self._names: dict[str, int] = {}
        self._checked: set[type[Event]] = set()
        """Event classes found to match the manifest (checked once each)."""

    # ------------------------------------------------------------------ handlers

    @overload
    def on(
        self,
        event: type[E],
        handler: None = None,
        *,
        queue: int = QUEUE_SIZE,
        overflow: Overflow = "drop_oldest",
    ) -> Callable[[Handler[E]], Handler[E]]: ...

    @overload
    def on(
        self,
        event: type[E],
        handler: Handler[E],
        *,
        queue: int = QUEUE_SIZE,
        overflow: Overflow = "drop_oldest",
    ) -> Handler[E]: ...

    def on(
        self,
        event: type[E],
        handler: Handler[E] | None = None,
        *,
        queue: int = QUEUE_SIZE,
        overflow: Overflow = "drop_oldest",
    ) -> Handler[E] | Callable[[Handler[E]], Handler[E]]:
        """Call ``handler(event)`` for every ``event`` of this type, from peers and from this node.

        Also a decorator: ``@node.events.on(NoteCreated)``. The handler runs in a task of its
        own, one event at a time, in arrival order; ``queue`` events wait for it, and when they
        are more, ``overflow`` says what happens: ``"drop_oldest"`` (counted as ``queue_full``)
        or ``"block"`` (the type's other handlers wait too, see ``docs/events.md``).
        May be called before start or while the node runs (from an ``impl``'s constructor)."""
        if handler is None:

            def register(function: Handler[E]) -> Handler[E]:
                self.on(event, function, queue=queue, overflow=overflow)
                return function

            return register
        topic = self._declared(event)
        if not callable(handler):
            raise EventError(f"the handler of {topic.type} must be an async function, not {handler!r}")
        if not isinstance(queue, int) or queue < 1:
            raise EventError(f"queue must be a positive number of events, not {queue!r}")
        if overflow not in ("drop_oldest", "block"):
            raise EventError(f"overflow must be 'drop_oldest' or 'block', not {overflow!r}")
        name = getattr(handler, "__qualname__", None) or type(handler).__name__
        module = getattr(handler, "__module__", None)
        name = f"{module}.{name}" if module else name
        self._names[name] = self._names.get(name, 0) + 1
        if self._names[name] > 1:
            name = f"{name}#{self._names[name]}"
        slot = EventHandler(self, event, handler, name, queue, overflow)
        topic.handlers = [*topic.handlers, slot]
        self._learn(topic, event)
        if self.state == "running":
            slot.start()
        return handler

    def _declared(self, event: type[Event]) -> _Topic:
        """The topic of ``event``, which must be a class of an event the manifest declares."""
        if event in self._checked:
            return self._topics[event.__name__]
        if not (isinstance(event, type) and issubclass(event, Event)):
            raise EventError(f"{event!r} is not an event class (the classes are in gen/events.py)")
        topic = self._topics.get(event.__name__)
        if topic is None:
            declared = ", ".join(sorted(self._topics)) or "none"
            raise EventError(
                f"{event.__name__} is not an event of node {self.manifest.name}: "
                f"its manifest's events: declares {declared}"
            )
        fields = set(self.manifest.events[event.__name__])
        if set(event.model_fields) != fields:
            raise EventError(
                f"{event.__name__} has fields {sorted(event.model_fields)}, the manifest "
                f"{sorted(fields)}: run `msuite generate` again"
            )
        self._checked.add(event)
        return topic

    @staticmethod
    def _learn(topic: _Topic, cls: type[Event]) -> None:
        if topic.decoder is None:
            topic.decoder = Decoder(cls)

    # ------------------------------------------------------------------ publishing

    async def publish(self, event: Event) -> EventMeta:
        """Hand ``event`` to every node of the channel and to this node's handlers.

        Returns once GossipSub has taken it (sent or queued to every peer) and this node's
        handlers have it queued; the result is its metadata (its ``id`` above all). Raises
        :class:`EventError` when the event is not declared or its envelope is over
        ``MAX_SIZE``, and the pubsub error when the p2p host cannot publish."""
        topic = self._declared(type(event))
        if self.state != "running":
            raise EventError(f"events are published once the node runs (it is {self.state})")
        self._learn(topic, type(event))
        async with topic.lock:  # one sequence per type: numbered in the order handed to the mesh
            moment = datetime.now(UTC)
            topic.seq += 1
            seq = topic.seq
            event_id = self._new_id()
            data = encode(event, event_id=event_id, time=moment, session=self._session, seq=seq)
            if len(data) > MAX_SIZE:
                topic.seq -= 1
                raise EventError(
                    f"{topic.type} is {len(data)} bytes as an envelope, over the {MAX_SIZE}-byte "
                    "limit: put large data in files and send its CID"
                )
            arrived = time.perf_counter()
            try:
                await self._host.pubsub.publish(topic.topic, data)
            except BaseException:
                # The number stays taken: a publish cancelled or failing in the p2p thread may
                # have reached peers, and a number given back would make the next event look
                # older than it to them (dropped as out_of_order). A gap is only counted as missed.
                topic.publish_errors += 1
                raise
            topic.published += 1
            meta = EventMeta(
                id=event_id,
                type=topic.type,
                publisher=self._host.peer_id,
                time=moment,
                topic=topic.topic,
                local=True,
                seq=seq,
            )
            await self._dispatch(topic, event, meta, arrived)  # under the lock: in sequence order
        return meta

    def _new_id(self) -> str:
        return f"{self._ids.getrandbits(128):032x}"

    # ------------------------------------------------------------------ receiving

    def _receiver(self, topic: _Topic) -> Callable[[Message], Awaitable[None]]:
        async def receive(message: Message) -> None:
            await self._receive(topic, message)

        return receive

    async def _receive(self, topic: _Topic, message: Message) -> None:
        arrived = time.perf_counter()
        if self.state != "running":
            self._drop(topic.type, "stopping")
            return
        decoder = topic.decoder
        if not topic.handlers or decoder is None:  # nobody to hand it to: not even decoded
            topic.unhandled += 1
            return
        decoded = decoder.decode(message.data)
        if isinstance(decoded, Rejected):
            self._drop(topic.type, decoded.reason)
            self._bad(message.sender, topic.type, decoded.reason, decoded.detail)
            return
        if not self._fresh(topic, message.sender, decoded):
            return
        topic.received += 1
        meta = EventMeta(
            id=decoded.id,
            type=topic.type,
            publisher=message.sender,
            time=decoded.time,
            topic=topic.topic,
            local=False,
            seq=decoded.seq,
        )
        await self._dispatch(topic, decoded.event, meta, arrived)

    def _fresh(self, topic: _Topic, sender: str, decoded: Decoded[Any]) -> bool:
        """False (counted) for a duplicate or an event older than one its session delivered."""
        key = (sender, decoded.id)
        if key in self._seen:
            self._drop(topic.type, "duplicate")
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        if decoded.session is None or decoded.seq is None:
            return True
        where = (sender, topic.type)
        known = self._sessions.get(where)
        if known is not None and known[0] == decoded.session:
            expected = known[1]
            if decoded.seq < expected:
                self._drop(topic.type, "out_of_order")
                self._bad(sender, topic.type, "out_of_order", f"seq {decoded.seq}, expected {expected}")
                return False
            if decoded.seq > expected:
                topic.missed += decoded.seq - expected
                self._bad(
                    sender,
                    topic.type,
                    "missed",
                    f"seq {decoded.seq}, expected {expected}: {decoded.seq - expected} never arrived",
                )
        self._sessions[where] = (decoded.session, decoded.seq + 1)
        self._sessions.move_to_end(where)
        if len(self._sessions) > SESSIONS:
            self._sessions.popitem(last=False)
        return True

    async def _dispatch(self, topic: _Topic, event: Event, meta: EventMeta, arrived: float) -> None:
        for slot in topic.handlers:
            delivered = event if type(event) is slot.cls else slot.cls.model_construct(**event.__dict__)
            copy = delivered.model_copy()
            copy._meta = meta
            await slot.offer(copy, arrived)

    def _drop(self, type_name: str, reason: str) -> None:
        topic = self._topics[type_name]
        topic.dropped[reason] = topic.dropped.get(reason, 0) + 1

    def _bad(self, peer: str, type_name: str, reason: str, detail: str) -> None:
        """Log a peer's bad event at most once a minute per peer (the counters show the rest)."""
        unlogged = self._log_limit.allow(peer)
        if unlogged is None:
            return
        more = f" ({unlogged} more from this peer in the last minute)" if unlogged else ""
        verb = "lost events" if reason == "missed" else f"dropped an event ({reason})"
        log.warning("events: %s of %s from %s: %s%s", verb, type_name, peer, detail, more)

    # ------------------------------------------------------------------ component

    async def start(self) -> None:
        self.state = "starting"
        pubsub = self._host.pubsub
        try:
            for topic in self._topics.values():
                topic.subscription = await pubsub.subscribe(
                    topic.topic, self._receiver(topic), queue_size=TOPIC_QUEUE
                )
        except BaseException:
            await self._leave()
            self.state = "failed"
            raise
        for topic in self._topics.values():
            for slot in topic.handlers:
                slot.start()
        self.state = "running"

    async def stop(self, grace: float) -> None:
        """Stop taking events, give the queued ones ``grace`` seconds to be handled, then end.

        The topics are not left: leaving sends peers a PRUNE that backs this node off for a
        while, and a node restarted within it was kept out of their meshes for up to a minute.
        The subscriptions end with the host, right after; what arrives meanwhile is dropped
        (``stopping``)."""
        if self.state == "stopped":
            return
        self.state = "stopping"
        slots = [slot for topic in self._topics.values() for slot in topic.handlers]
        waiting = [asyncio.ensure_future(slot.drain()) for slot in slots]
        if waiting:
            _done, pending = await asyncio.wait(waiting, timeout=max(grace, 0.0))
            for future in pending:
                future.cancel()
            left = sum(slot.queued for slot in slots)
            if left:
                log.warning("events: %d queued events were not handled within the shutdown grace", left)
        for slot in slots:
            await slot.cancel()
        self.state = "stopped"

    async def _leave(self) -> None:
        for topic in self._topics.values():
            subscription, topic.subscription = topic.subscription, None
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.cancel()

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per event type: its counters and its handlers' (what ``/metrics`` reads)."""
        report: dict[str, dict[str, Any]] = {}
        pubsub = self._host.pubsub
        for topic in self._topics.values():
            dropped = dict(topic.dropped)
            subscription = topic.subscription
            if subscription is not None and subscription.dropped:
                dropped["topic_queue_full"] = subscription.dropped
            channel = pubsub.channel_drops(topic.topic)
            if channel:
                dropped["channel_full"] = channel
            outbound = pubsub.outbound_drops(topic.topic)
            if outbound:
                dropped["outbound_full"] = outbound
            report[topic.type] = {
                "topic": topic.topic,
                "published": topic.published,
                "publish_errors": topic.publish_errors,
                "received": topic.received,
                "unhandled": topic.unhandled,
                "missed": topic.missed,
                "dropped": dropped,
                "handlers": list(topic.handlers),
            }
        return report

    def status(self) -> dict[str, Any]:
        pubsub = self._host.pubsub
        types: dict[str, Any] = {}
        for name, counts in self.counts().items():
            topic = counts["topic"]
            types[name] = {
                **counts,
                "subscribed": topic in pubsub.topics(),
                "peers": len(pubsub.peers(topic)),
                "mesh": len(pubsub.mesh(topic)),
                "handlers": [slot.status() for slot in counts["handlers"]],
            }
        return {"state": self.state, "channel": self.channel, "session": self._session, "types": types}

    def topics(self) -> list[str]:
        """The topics of this node's event types."""
        return [topic.topic for topic in self._topics.values()]
