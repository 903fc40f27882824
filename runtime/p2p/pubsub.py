"""Publish/subscribe between peers (``node.p2p.pubsub``): GossipSub, as configured for events.

::

    async def on_note(message: Message) -> None:
        print(message.sender, message.data)

    subscription = await node.p2p.pubsub.subscribe("notes", on_note)
    await node.p2p.pubsub.publish("notes", b"created 42")
    await subscription.cancel()

The router is py-libp2p's GossipSub, speaking ``/meshsub/1.2.0``,
``/meshsub/1.1.0`` and ``/meshsub/1.0.0`` (so other libp2p implementations
share the topics), with every message signed (StrictSign: other
implementations reject anything else). py-libp2p's defaults lose messages,
so msuite sets:

- heartbeat every second (py-libp2p: 120 s, so a new peer joined the mesh
  only minutes later);
- spam protection off: its limit of 10 messages per second per topic also
  throttles the node's *own* publishes, and drops the rest silently;
- a subscription channel of 1,024 messages instead of 32 (py-libp2p drops
  what does not fit, with a warning);
- an outbound queue of 4,096 messages per peer instead of 32 (py-libp2p drops
  what does not fit, silently: a burst of 300 publishes lost a third);
- up to 1,000 pending messages per peer.

py-libp2p takes neither size as an argument: :func:`.compat.sized_pubsub`
sets both on this node's Pubsub only, never on other py-libp2p users in the
process. It also makes a frame that does not parse reset that peer's stream
only (reported to ``on_fault``: the host counts and logs it), and numbers
messages from ``time.time_ns()``, so a restarted node's messages are never
taken for ones its peers saw before the restart.

If the service fails, the host does not restart it: py-libp2p 0.8's peers
keep their stream and their view of this node's subscriptions until they next
write, so a GossipSub started again on the same host would be half-connected.
The old one's streams are reset and its protocols refused, the node turns
unhealthy (gRPC health NOT_SERVING, ``/status`` says why) and ``publish`` and
``subscribe`` raise, saying why: the node is meant to be restarted.

``publish`` returns once its message is queued, in order, for the trio
thread (at most :data:`PUBLISH_QUEUE` messages; beyond that it waits for
room), which signs it and hands it to GossipSub once the outbound queue
of every peer subscribed to its topic is under half full (a stalled peer excepted: see
:meth:`PubSub._room_downstream`); one wake-up of the trio
thread carries what is queued by then, and messages for the asyncio loop
cross the same way, so a burst costs a few crossings, not two per message.

Handlers are coroutine functions run on the asyncio loop, one message at a
time per subscription, in the order they arrived. Each subscription has a
queue of ``queue_size`` messages (default 1,024); a handler slower than the
traffic loses the overflow, counted in ``Subscription.dropped`` and logged,
never blocking the host. Messages this node published are not delivered to
its own subscriptions unless ``own=True``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from .bridge import Bridge

__all__ = ["Message", "PubSub", "Subscription"]

log = logging.getLogger("msuite.p2p.pubsub")

HEARTBEAT = 1
CHANNEL_SIZE = 1024
OUTBOUND_QUEUE = 4096
DELIVERY_BATCH = 256
"""At most this many messages taken from a subscription's channel before handing them over."""
SENDER_CACHE = 1024
PUBLISH_QUEUE = 1024
"""Published messages queued for the p2p thread at most; ``publish`` waits beyond that."""
PUBLISH_QUEUE_BYTES = 16 * 1024 * 1024
STALLED_AFTER = 2.0
"""A peer whose outbound queue stays half full this long no longer holds publishing back."""
DOWNSTREAM_POLL = 0.002
PUMP_REPORT = 64
"""The p2p thread reports progress to the asyncio loop after this many messages (and when idle)."""


@dataclass(frozen=True)
class Message:
    """A message received on a topic."""

    topic: str
    data: bytes
    sender: str
    """The peer ID of the publisher (signed: it cannot be forged)."""
    seqno: int


Handler = Callable[[Message], Awaitable[None]]


class Subscription:
    """One handler on one topic; ``await cancel()`` to stop it."""

    def __init__(self, pubsub: PubSub, topic: str, handler: Handler, own: bool, queue_size: int) -> None:
        self.topic = topic
        self.own = own
        self.received = 0
        self.dropped = 0
        self._pubsub = pubsub
        self._handler = handler
        self._queue: asyncio.Queue[Message] = asyncio.Queue(queue_size)
        self._task = asyncio.get_running_loop().create_task(self._consume(), name=f"msuite-pubsub-{topic}")

    def _offer(self, message: Message) -> None:  # on the asyncio loop
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "pubsub %s: the handler falls behind; %d messages dropped", self.topic, self.dropped
                )

    async def _consume(self) -> None:
        while True:
            message = await self._queue.get()
            self.received += 1
            try:
                await self._handler(message)
            except Exception:
                log.exception(
                    "pubsub %s: the handler failed on a message from %s", self.topic, message.sender
                )

    async def cancel(self) -> None:
        """Stop delivering; the topic is left when its last subscription is cancelled.

        May be called from the subscription's own handler."""
        try:
            await asyncio.shield(self._pubsub._remove(self))
        finally:
            self._task.cancel()


class PubSub:
    """``node.p2p.pubsub``: topics shared with every peer speaking GossipSub (a p2p service)."""

    name = "pubsub"
    restartable = False
    """Not restarted in place by the host (see the module): a failure makes the node unhealthy."""

    def __init__(
        self,
        on_fault: Callable[[str, str, BaseException], None] | None = None,
        down: Callable[[], str | None] | None = None,
    ) -> None:
        """``on_fault(peer, protocol, error)`` is told of each stream reset for a bad frame (in the
        trio thread); ``down()`` says why pubsub does not run, for the errors that says so."""
        self._on_fault = on_fault
        self._down = down
        self._host: IHost | None = None
        self._bridge: Bridge | None = None
        self._pubsub: Any = None
        self._router: Any = None
        self._nursery: trio.Nursery | None = None
        self._my_id = b""
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._readers: dict[str, trio.CancelScope] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._senders: dict[bytes, str] = {}
        """Peer IDs as text, by their bytes (in the trio thread)."""
        self._outbox: collections.deque[tuple[Message, bool]] = collections.deque()
        """Messages on their way to the asyncio loop, with whether this node sent them."""
        self._flush_due = False
        """A :meth:`_flush` is scheduled on the asyncio loop and has not started yet."""
        self._outgoing: collections.deque[tuple[str, bytes]] = collections.deque()
        """Published messages on their way to the trio thread (:meth:`_pump`), in order."""
        self._pump_due = False
        """The pump was woken (or is draining) and has not yet taken what :meth:`publish` queued."""
        self._pump_event: trio.Event | None = None
        self._queued = self._handed = self._queued_bytes = 0
        """Messages published, and handed over (or dropped); bytes queued and not handed over."""
        self._waiters: list[asyncio.Future[None]] = []
        self._stalled: set[Any] = set()
        """Peers left to drop what they cannot take (see :meth:`_room_downstream`)."""

    # ------------------------------------------------------------------ asyncio side

    async def publish(self, topic: str, data: bytes) -> None:
        """Send ``data`` to every peer subscribed to ``topic`` (signed by this node).

        Returns once the message is queued, in order, for the p2p thread, which signs it and
        hands it to GossipSub (as go-libp2p's ``Publish`` returns once its event loop has it).
        The queue holds :data:`PUBLISH_QUEUE` messages (:data:`PUBLISH_QUEUE_BYTES` bytes):
        beyond that, ``publish`` waits for room. Unsubscribing and stopping wait until what was
        published before has been handed over."""
        payload = bytes(data)
        bridge = self._require()
        while self._queued - self._handed >= PUBLISH_QUEUE or self._queued_bytes >= PUBLISH_QUEUE_BYTES:
            # woken by the p2p thread's progress; looked at again each second all the same, so
            # a p2p thread that ended without saying so cannot leave a publisher waiting
            await asyncio.wait((self._progress(),), timeout=1.0)
            bridge = self._require()
            if not bridge.running:
                raise RuntimeError("pubsub is not running: the p2p thread has ended")
        self._outgoing.append((topic, payload))
        self._queued += 1
        self._queued_bytes += len(payload)
        if not self._pump_due:
            self._pump_due = True
            try:
                bridge.run_sync_soon(self._wake_pump)
            except BaseException:
                self._outgoing.pop()  # ours: only this loop appends
                self._queued -= 1
                self._queued_bytes -= len(payload)
                self._pump_due = False
                raise
        await asyncio.sleep(0)  # a suspension point still: a loop of publishes lets other tasks run

    @property
    def pending(self) -> int:
        """Messages published here and not yet handed to GossipSub (at most :data:`PUBLISH_QUEUE`)."""
        return self._queued - self._handed

    def _progress(self) -> asyncio.Future[None]:
        """A future done when the p2p thread next reports messages handed over (or dropped)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _handed_over(self, count: int, size: int) -> None:  # on the asyncio loop
        self._handed += count
        self._queued_bytes -= size
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _flushed(self) -> None:
        """Wait until every message published so far is handed over (or dropped as pubsub ended)."""
        target = self._queued
        while self._handed < target and self._pubsub is not None and self._bridge is not None:
            if not self._bridge.running:
                return
            await self._progress()

    async def subscribe(
        self, topic: str, handler: Handler, *, own: bool = False, queue_size: int = 1024
    ) -> Subscription:
        """Call ``handler(message)`` for each message on ``topic``."""
        bridge = self._require()
        async with self._topic_lock(topic):
            subscription = Subscription(self, topic, handler, own, queue_size)
            first = topic not in self._subscriptions
            self._subscriptions.setdefault(topic, []).append(subscription)
            try:
                if first:
                    await bridge.run(self._join, topic)
            except BaseException:
                subscription._task.cancel()
                if self._drop(subscription) and bridge.running:  # undo a join that went through
                    with contextlib.suppress(Exception):
                        await asyncio.shield(bridge.run(self._leave, topic))
                raise
        return subscription

    def _topic_lock(self, topic: str) -> asyncio.Lock:
        lock = self._locks.get(topic)
        if lock is None:
            lock = self._locks[topic] = asyncio.Lock()
        return lock

    def _drop(self, subscription: Subscription) -> bool:
        """Forget ``subscription``; True when it was the topic's last one."""
        found = self._subscriptions.get(subscription.topic, [])
        if subscription in found:
            found.remove(subscription)
        if not found and subscription.topic in self._subscriptions:
            del self._subscriptions[subscription.topic]
            return True
        return False

    def topics(self) -> list[str]:
        """The topics this node is subscribed to."""
        return sorted(self._subscriptions)

    def peers(self, topic: str) -> list[str]:
        """Peers known to be subscribed to ``topic``."""
        if self._pubsub is None:
            return []
        # copied in one C-level step each: the trio thread changes them meanwhile
        members = list(dict(self._pubsub.peer_topics).get(topic, ()))
        return sorted(str(peer) for peer in members)

    def mesh(self, topic: str) -> list[str]:
        """Peers in this node's GossipSub mesh for ``topic`` (those it forwards full messages to)."""
        if self._router is None or self._pubsub is None:
            return []
        members = list(dict(getattr(self._router, "mesh", {})).get(topic, ()))
        return sorted(str(peer) for peer in members)

    def outbound_drops(self, topic: str) -> int:
        """Messages on ``topic`` a peer did not get because its outbound queue was full."""
        drops = getattr(self._router, "outbound_drops", None)
        return int(dict(drops).get(topic, 0)) if drops is not None else 0

    def channel_drops(self, topic: str) -> int:
        """Messages on ``topic`` lost because the subscription channel in the p2p thread was full."""
        drops = getattr(self._pubsub, "channel_drops", None)
        return int(dict(drops).get(topic, 0)) if drops is not None else 0

    async def _remove(self, subscription: Subscription) -> None:
        async with self._topic_lock(subscription.topic):
            if self._drop(subscription) and self._bridge is not None and self._bridge.running:
                await self._flushed()  # what this node published before is in the mesh first
                await self._bridge.run(self._leave, subscription.topic)

    async def close(self, timeout: float = 2.0) -> None:
        """Hand over what was published (at most ``timeout`` seconds), then stop every
        subscription's handler (the node is stopping)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flushed(), timeout)
        subscriptions = [s for subs in self._subscriptions.values() for s in subs]
        self._subscriptions = {}
        for subscription in subscriptions:
            subscription._task.cancel()
        for subscription in subscriptions:
            with contextlib.suppress(asyncio.CancelledError):
                await subscription._task

    def _require(self) -> Bridge:
        if self._bridge is None or self._pubsub is None:
            why = self._down() if self._down is not None else None
            raise RuntimeError(
                f"pubsub is not running: {why}" if why else "pubsub runs once the p2p host runs"
            )
        return self._bridge

    def status(self) -> dict[str, Any]:
        return {
            topic: {
                "peers": len(self.peers(topic)),
                "received": sum(s.received for s in subs),
                "dropped": sum(s.dropped for s in subs),
            }
            for topic, subs in sorted(self._subscriptions.items())
        }

    # ------------------------------------------------------------------ trio side

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        """Run GossipSub in the host's nursery until cancelled."""
        from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12
        from libp2p.tools.anyio_service import background_trio_service

        from . import compat

        router = compat.gossipsub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=HEARTBEAT,
            heartbeat_initial_delay=0.1,
            spam_protection_enabled=False,
            max_pending_messages_per_peer=1000,
        )
        pubsub = compat.sized_pubsub(
            host,
            router,
            subscription_channel=CHANNEL_SIZE,
            outbound_queue=OUTBOUND_QUEUE,
            on_fault=self._on_fault,
            strict_signing=True,
        )
        self._host, self._bridge, self._router = host, bridge, router
        self._my_id = host.get_id().to_bytes()
        try:
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._pump, pubsub, bridge)
                    self._pubsub = pubsub
                    task_status.started()
                    await trio.sleep_forever()
        except Exception:
            close = getattr(pubsub, "close", None)
            if close is not None:  # peers stop writing into it
                await close()
            raise
        finally:
            self._pubsub = None
            self._nursery = None
            self._readers = {}
            self._drop_outgoing(bridge)
            pubsub.seen_messages.stop()  # a plain thread py-libp2p's service never stops

    def _wake_pump(self) -> None:
        if self._pump_event is not None:
            self._pump_event.set()
        elif self._pubsub is None and self._bridge is not None:
            # pubsub ended between a publish's check and its append: nothing will take the message
            self._drop_outgoing(self._bridge)

    async def _pump(self, pubsub: Any, bridge: Bridge) -> None:
        """Hand what :meth:`publish` queued to py-libp2p, in order; report progress in batches."""
        outgoing = self._outgoing
        while True:
            event = self._pump_event = trio.Event()
            self._pump_due = False  # after the new event: a wake from now on ends its wait
            count = size = 0
            while outgoing:
                await self._room_downstream(pubsub, outgoing[0][0])
                topic, data = outgoing.popleft()
                try:
                    await pubsub.publish(topic, data)
                except Exception:
                    log.exception("pubsub %s: publishing a message failed", topic)
                count += 1
                size += len(data)
                if count == PUMP_REPORT:
                    bridge.call_soon_in_asyncio(self._handed_over, count, size)
                    count = size = 0
            if count:
                bridge.call_soon_in_asyncio(self._handed_over, count, size)
            await event.wait()

    async def _room_downstream(self, pubsub: Any, topic: str) -> None:
        """Wait while the outbound queue of a peer subscribed to ``topic`` is half full (it drops
        what does not fit), unless that peer is stalled: one that has not drained below half
        within :data:`STALLED_AFTER` seconds is left to drop what it cannot take, until it is
        back below a quarter. Peers of other topics do not hold this one back."""
        queues = getattr(pubsub, "peer_queues", None)
        if not queues:
            return
        subscribed = getattr(pubsub, "peer_topics", {}).get(topic)
        if subscribed is None:
            return  # nobody to wait for (py-libp2p sends to nobody, or to fanout peers it picks)
        high, low = OUTBOUND_QUEUE // 2, OUTBOUND_QUEUE // 4
        since: float | None = None
        while True:
            stalled = self._stalled
            if stalled:
                self._stalled = {peer for peer in stalled if len(queues.get(peer, ())) >= low}
            full = [peer for peer in list(subscribed) if len(queues.get(peer, ())) >= high]
            full = [peer for peer in full if peer not in self._stalled]
            if not full:
                return
            now = trio.current_time()
            if since is None:
                since = now
            elif now - since >= STALLED_AFTER:
                self._stalled.update(full)
                log.warning(
                    "pubsub: %s not taking messages for %.0f s: publishing on without waiting for it",
                    ", ".join(str(peer) for peer in full),
                    STALLED_AFTER,
                )
                return
            await trio.sleep(DOWNSTREAM_POLL)

    def _drop_outgoing(self, bridge: Bridge) -> None:
        """Pubsub ended: what is still queued is not sent; publishers waiting for room are told."""
        self._pump_event = None
        self._pump_due = False
        count = size = 0
        while self._outgoing:
            count += 1
            size += len(self._outgoing.popleft()[1])
        if count:
            log.warning("pubsub stopped with %d published messages not yet handed over: dropped", count)
        bridge.call_soon_in_asyncio(self._handed_over, count, size)

    async def _join(self, topic: str) -> None:
        assert self._nursery is not None
        if topic in self._readers:
            return
        scope = trio.CancelScope()
        self._readers[topic] = scope  # before the await: a second join of the topic returns at once
        try:
            subscription = await self._pubsub.subscribe(topic)
        except BaseException:
            if self._readers.get(topic) is scope:
                del self._readers[topic]
            raise
        self._nursery.start_soon(self._read, topic, subscription, scope)

    async def _leave(self, topic: str) -> None:
        scope = self._readers.pop(topic, None)
        if scope is not None:
            scope.cancel()
        if self._pubsub is not None and topic in self._pubsub.topic_ids:
            with trio.CancelScope(shield=True):  # half an unsubscribe leaves the node in the mesh
                await self._pubsub.unsubscribe(topic)

    async def _read(self, topic: str, subscription: Any, scope: trio.CancelScope) -> None:
        bridge = self._bridge
        assert bridge is not None
        channel = getattr(subscription, "receive_channel", None)
        take = getattr(channel, "receive_nowait", None)  # what else has arrived, without waiting
        with scope:
            while True:
                batch = [self._message(topic, await subscription.get())]
                while take is not None and len(batch) < DELIVERY_BATCH:
                    try:
                        batch.append(self._message(topic, take()))
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break
                if not self._hand_over(bridge, batch):
                    return  # the asyncio loop is closed: nobody is left to deliver to

    def _message(self, topic: str, raw: Any) -> tuple[Message, bool]:
        sender = self._senders.get(raw.from_id)
        if sender is None:
            if len(self._senders) >= SENDER_CACHE:
                self._senders.clear()
            sender = self._senders[raw.from_id] = _peer_id(raw.from_id)
        message = Message(
            topic=topic, data=bytes(raw.data), sender=sender, seqno=int.from_bytes(raw.seqno, "big")
        )
        return message, raw.from_id == self._my_id

    def _hand_over(self, bridge: Bridge, batch: list[tuple[Message, bool]]) -> bool:
        """Queue ``batch`` for the asyncio loop; one crossing (one wake-up of the loop) carries
        whatever is queued by the time the loop runs it. False: the loop is closed."""
        self._outbox.extend(batch)
        if self._flush_due:
            return True
        self._flush_due = True
        if bridge.call_soon_in_asyncio(self._flush):
            return True
        self._flush_due = False
        return False

    def _flush(self) -> None:  # on the asyncio loop
        self._flush_due = False  # first: a batch queued from now on schedules a flush of its own
        outbox = self._outbox
        while outbox:
            message, own = outbox.popleft()
            for subscription in self._subscriptions.get(message.topic, ()):
                if subscription.own or not own:
                    subscription._offer(message)


def _peer_id(raw: bytes) -> str:
    from libp2p.peer.id import ID

    return str(ID(raw))
