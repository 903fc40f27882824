"""msuite's Pubsub: py-libp2p's, with its sizes, its stream handler and its sequence numbers adjusted.

All on msuite's own instance (:func:`sized_pubsub` builds it), never on
py-libp2p's module globals or class:

- **sizes** (``pubsub_subscription_channel``, ``pubsub_outbound_queue``): py-libp2p
  0.8 takes neither as an argument: the subscription channel is
  ``trio.open_memory_channel(SUBSCRIPTION_CHANNEL_SIZE)`` and the outbound queue
  ``RpcQueue()``, both module globals. The subscription channel: msuite opens
  its own before py-libp2p opens its 32-message one, delivers into it
  (``notify_subscriptions``, the one place py-libp2p delivers) and hands it to
  the subscription py-libp2p returns, so messages arriving while the subscribe
  is announced land in the large one. The outbound queue: ``peer_queues`` is a
  dict that sizes each queue as py-libp2p stores it, before anything is pushed.
- **bad frames** (``pubsub_bad_frames``): py-libp2p 0.8.1's stream handler
  catches a malformed length prefix but not a frame that is not a protobuf
  RPC (``DecodeError``), nor anything else its read loop raises; that escaped
  into the connection's nursery and took the whole host down (any peer could
  do it with 13 bytes). msuite's handler resets that stream, drops the peer's
  pubsub state as py-libp2p does for a malformed prefix (it re-opens its own
  stream to the peer while the peer stays connected), and reports the fault
  (``on_fault``: counted and logged by the host). Nothing else is affected.
- **coalesced writes** (``pubsub_coalesced_writes``): py-libp2p 0.8.1's
  per-peer sending loop writes each queued RPC on its own: one Noise frame,
  one yamux frame and one send each, and on the peer one read and one
  decryption each. In a burst the queue holds many; msuite's loop takes what
  the queue holds when it wakes (in the queue's order, priority first) up to
  :data:`COALESCE_BYTES` and writes the length-prefixed RPCs back to back in
  one write, as go-libp2p's writer does with what its queue holds. Each RPC
  keeps its own length prefix and size limit, so any peer reads the same
  byte stream as before, only in fewer frames.
- **buffered reads** (with ``pubsub_bad_frames``): py-libp2p 0.8.1 reads an
  inbound RPC with three reads of the stream or more (its length prefix one
  byte at a time, then the body), each through the stream's locks and
  yamux's buffer. msuite's handler gives the same read loop a view of the
  stream that reads whatever the stream holds (up to :data:`READ_CHUNK`) and
  hands it out as asked: one read of the stream per yamux frame. The loop,
  its size limit and its errors are py-libp2p's own. Each read is still a
  trio schedule point, as a read of the stream is: py-libp2p handles each
  message in a task of its own, and messages are handled in the order they
  came only because the reader yields between them.
- **one task for inbound messages** (``pubsub_ordered_handling``): py-libp2p
  0.8.1's read loop starts a managed task (``manager.run_task``: a task
  object, a parent lookup, statistics) for every message it reads, to run
  ``push_msg`` (check, validate, deliver, forward): about a third of a
  receiving node's CPU in a burst went to starting them, and they ran in
  whatever order trio scheduled them. msuite's Pubsub hands those messages to
  one long-lived task of the same service, which runs ``push_msg`` for each
  in arrival order. An error it raises fails the service as one from
  py-libp2p's task did; a connection shutting down is ignored as there.
  ``push_msg`` never waits on the network (it queues what it forwards), and
  msuite registers no slow validators, so nothing waits behind a message.
- **sequence numbers** (``pubsub_seqno``): py-libp2p 0.8.1 seeds the message
  counter with ``int(time.time())``, so a node restarted after publishing more
  messages than seconds passed reused message IDs its peers had seen, and their
  seen-cache (120 s) dropped its new messages. msuite seeds it with
  ``time.time_ns()``, as go-libp2p does.

:meth:`MsuitePubsub.close` lets a restarted pubsub service take over from a
failed one on the same host (see ``P2PHost``'s supervision).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream, IPubsubRouter, ISubscriptionAPI
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.pubsub.subscription import TrioSubscriptionAPI
from libp2p.utils.varint import encode_uvarint

from .gate import active, missing_attributes, register

__all__ = ["FaultHandler", "MsuitePubsub", "SizedPubsub", "sized_pubsub"]

log = logging.getLogger("msuite.p2p")
_libp2p_pubsub_log = logging.getLogger("libp2p.pubsub.pubsub")

COALESCE_BYTES = 64 * 1024
"""At most this many bytes of queued RPCs go out in one write (one Noise frame's worth)."""

READ_CHUNK = 64 * 1024
"""The most an inbound pubsub stream's reader takes from the stream at once."""

FaultHandler = Callable[[str, str, BaseException], None]
"""``on_fault(peer_id, protocol, exception)``: a peer's stream was reset because of ``exception``."""


def _missing_pubsub_channel() -> list[str]:
    names = ("subscribe", "unsubscribe", "notify_subscriptions", "topic_ids")
    lacking = missing_attributes(Pubsub, (*names, "subscribed_topics_send", "subscribed_topics_receive"))
    return lacking + missing_attributes(TrioSubscriptionAPI, ("receive_channel",))


def _missing_pubsub_queue() -> list[str]:
    lacking = missing_attributes(Pubsub, ("peer_queues",))
    if not hasattr(getattr(RpcQueue(), "_queue", None), "max_size"):
        lacking.append("RpcQueue._queue.max_size")
    return lacking


def _missing_bad_frames() -> list[str]:
    return missing_attributes(Pubsub, ("stream_handler", "continuously_read_stream", "_handle_dead_peer"))


def _missing_coalesce() -> list[str]:
    lacking = missing_attributes(Pubsub, ("handle_sending_messages", "write_msg", "_handle_dead_peer"))
    inner = getattr(RpcQueue(), "_queue", None)
    if not callable(getattr(inner, "pop", None)):
        lacking.append("RpcQueue._queue.pop")
    return lacking


def _missing_ordered() -> list[str]:
    lacking = missing_attributes(Pubsub, ("run", "push_msg", "continuously_read_stream", "manager"))
    reader = getattr(Pubsub, "continuously_read_stream", None)
    if reader is not None and "run_task" not in reader.__code__.co_names:
        lacking.append("Pubsub.continuously_read_stream -> manager.run_task(push_msg)")
    try:
        from libp2p.utils.connection_shutdown import is_expected_connection_shutdown  # noqa: F401
    except ImportError:
        lacking.append("libp2p.utils.connection_shutdown.is_expected_connection_shutdown")
    return lacking


def _missing_seqno() -> list[str]:
    return missing_attributes(Pubsub, ("counter", "_next_seqno"))


def sized_pubsub(
    host: IHost,
    router: IPubsubRouter,
    *,
    subscription_channel: int,
    outbound_queue: int,
    on_fault: FaultHandler | None = None,
    **kwargs: Any,
) -> Pubsub:
    """py-libp2p's ``Pubsub(host, router, **kwargs)`` with msuite's adjustments (those active):
    subscriptions hold ``subscription_channel`` messages and per-peer outbound queues hold
    ``outbound_queue`` RPCs (py-libp2p: 32 each), a bad frame resets its stream only (and calls
    ``on_fault``), sequence numbers start at ``time.time_ns()``.

    Only this instance is changed; with no adjustment active it is py-libp2p's plain Pubsub."""
    channel = subscription_channel if active("pubsub_subscription_channel") else None
    queue = outbound_queue if active("pubsub_outbound_queue") else None
    guard, seqno = active("pubsub_bad_frames"), active("pubsub_seqno")
    coalesce, ordered = active("pubsub_coalesced_writes"), active("pubsub_ordered_handling")
    if channel is None and queue is None and not any((guard, seqno, coalesce, ordered)):
        return Pubsub(host, router, **kwargs)
    return MsuitePubsub(
        host,
        router,
        subscription_channel=channel,
        outbound_queue=queue,
        guard=guard,
        seqno_from_ns=seqno,
        coalesce_writes=coalesce,
        ordered_handling=ordered,
        on_fault=on_fault,
        **kwargs,
    )


class _SizedQueues(dict[ID, RpcQueue]):
    """``Pubsub.peer_queues`` whose queues hold ``size`` RPCs: sized as py-libp2p stores them."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, peer: ID, queue: RpcQueue) -> None:
        queue._queue.max_size = self.size  # nothing pushed yet: py-libp2p stores a queue first
        super().__setitem__(peer, queue)


class MsuitePubsub(Pubsub):
    """py-libp2p's Pubsub with msuite's adjustments, each on or off (see the module).
    Build it with :func:`sized_pubsub`."""

    def __init__(
        self,
        host: IHost,
        router: IPubsubRouter,
        *,
        subscription_channel: int | None,
        outbound_queue: int | None,
        guard: bool = False,
        seqno_from_ns: bool = False,
        coalesce_writes: bool = False,
        ordered_handling: bool = False,
        on_fault: FaultHandler | None = None,
        **kwargs: Any,
    ) -> None:
        network: Any = host.get_network()
        before = list(getattr(network, "notifees", ()))
        super().__init__(host, router, **kwargs)
        self._notifees = [n for n in getattr(network, "notifees", ()) if all(n is not b for b in before)]
        """The notifees py-libp2p registered for this instance (unregistered by :meth:`close`)."""
        self.subscription_channel = subscription_channel
        self._sized_channels: dict[str, trio.MemorySendChannel[rpc_pb2.Message]] = {}
        self.channel_drops: dict[str, int] = {}
        """Messages dropped per topic because the subscription channel was full (replaced whole)."""
        if outbound_queue is not None:
            self.peer_queues = _SizedQueues(outbound_queue)
        self.guard = guard
        self.on_fault = on_fault
        self._inbound: set[INetStream] = set()
        if seqno_from_ns:
            self.counter = time.time_ns()
        self.coalesce_writes = coalesce_writes
        self.ordered_handling = ordered_handling
        self.coalesced = 0
        """RPCs that went out in a write with others (each write counts its RPCs after the first)."""

    # ------------------------------------------------------------------ one task for inbound messages

    async def run(self) -> None:
        if self.ordered_handling:
            manager: Any = self.manager
            spawn = manager.run_task  # py-libp2p's, bound to this service's own manager
            push = self.push_msg
            send, receive = trio.open_memory_channel[tuple[Any, ...]](math.inf)  # as unbounded as tasks

            def run_task(async_fn: Any, *args: Any, **kwargs: Any) -> None:
                if async_fn == push and not kwargs:
                    send.send_nowait(args)  # (peer, message), handled in order by _push_in_order
                else:
                    spawn(async_fn, *args, **kwargs)

            manager.run_task = run_task  # this manager only: this Pubsub's tasks
            manager.run_daemon_task(self._push_in_order, receive)
        await super().run()

    async def _push_in_order(self, receive: trio.MemoryReceiveChannel[tuple[Any, ...]]) -> None:
        from libp2p.utils.connection_shutdown import is_expected_connection_shutdown

        async for args in receive:
            try:
                await self.push_msg(*args)
            except Exception as exc:
                if not is_expected_connection_shutdown(exc):
                    raise  # fails the service, as an error in py-libp2p's task for it did
                log.debug("pubsub: a message was not handled as its connection closed: %r", exc)

    # ------------------------------------------------------------------ coalesced writes

    async def handle_sending_messages(self, peer_id: ID, stream: INetStream, queue: RpcQueue) -> None:
        """py-libp2p's per-peer sending loop, writing what the queue holds in one write (up to
        :data:`COALESCE_BYTES`) instead of one write per RPC; errors are handled as py-libp2p does."""
        if not self.coalesce_writes:
            await super().handle_sending_messages(peer_id, stream, queue)
            return
        pending = queue._queue
        try:
            while True:
                rpc = await queue.pop()
                if rpc is None:
                    return  # closed
                parts: list[bytes] = []
                size = 0
                while rpc is not None:
                    data = rpc.SerializeToString()
                    parts += (encode_uvarint(len(data)), data)
                    size += len(data)
                    if size >= COALESCE_BYTES:
                        break
                    rpc = pending.pop()
                self.coalesced += len(parts) // 2 - 1
                try:
                    await stream.write(b"".join(parts))
                except (StreamClosed, StreamReset):
                    log.debug("pubsub: could not write to %s: stream closed or reset", peer_id)
                    self._handle_dead_peer(peer_id)
                    return
        except Exception:
            log.debug("pubsub: the sending loop for %s ended with an error", peer_id, exc_info=True)
            self._handle_dead_peer(peer_id)

    # ------------------------------------------------------------------ bad frames

    async def stream_handler(self, stream: INetStream) -> None:
        """py-libp2p's handler (``stream_handler`` in 0.8.1), which let all but a few errors escape
        into the connection's nursery: here a stream that ends or breaks is dropped as py-libp2p
        does, and anything else it raises (``DecodeError``, a malformed length prefix, a router
        error on that peer's RPC) is a fault of that peer: counted, its stream reset."""
        if not self.guard:
            await super().stream_handler(stream)
            return
        from libp2p.io.exceptions import IncompleteReadError
        from libp2p.network.stream.exceptions import StreamError

        peer = stream.muxed_conn.peer_id
        self._inbound.add(stream)
        try:
            await self.continuously_read_stream(BufferedStream(stream))  # type: ignore[arg-type]
        except (StreamError, IncompleteReadError) as exc:  # the stream ended or broke: no fault
            log.debug("pubsub: the stream of %s ended: %r", peer, exc)
            await _reset(stream)
            self._drop_peer(peer)
        except Exception as exc:
            await _reset(stream)
            if not self.manager.is_running:  # this pubsub is stopping: not the peer's fault
                log.debug("pubsub: a stream of %s ended as pubsub stopped: %r", peer, exc)
                return
            if self.on_fault is not None:
                self.on_fault(str(peer), str(stream.get_protocol() or ""), exc)
            self._drop_peer(peer)
        finally:
            self._inbound.discard(stream)

    def _drop_peer(self, peer: ID) -> None:
        """Forget ``peer``'s pubsub state as py-libp2p does when its stream fails (its outbound
        stream is opened again while the peer stays connected)."""
        try:
            self._handle_dead_peer(peer)
        except Exception:
            log.debug("pubsub: dropping the state of %s failed", peer, exc_info=True)

    async def close(self) -> None:
        """Let another Pubsub take over this host: refuse new pubsub streams, stop hearing of peers,
        reset every pubsub stream (peers notice, and retry new ones until the next Pubsub's handler
        takes them). Bounded; never raises."""
        for protocol in self.protocols:  # until the next Pubsub sets its own, a peer's new stream is
            self.host.remove_stream_handler(protocol)  # refused, and the peer keeps retrying
        network: Any = self.host.get_network()
        for notifee in self._notifees:
            with contextlib.suppress(ValueError):
                network.notifees.remove(notifee)
        self._notifees = []
        streams = [*self._inbound, *dict(self.peers).values()]
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            for stream in streams:
                await _reset(stream)

    # ------------------------------------------------------------------ sizes

    async def subscribe(self, topic_id: str) -> ISubscriptionAPI:
        if self.subscription_channel is None or topic_id in self.topic_ids:
            return await super().subscribe(topic_id)
        send, receive = trio.open_memory_channel[rpc_pb2.Message](self.subscription_channel)
        self._sized_channels[topic_id] = send  # delivered into from now on (notify_subscriptions)
        try:
            subscription = await super().subscribe(topic_id)
        except BaseException:
            self._drop_channel(topic_id, send)
            raise
        if isinstance(subscription, TrioSubscriptionAPI):
            subscription.receive_channel = receive
        else:  # not the subscription this was written for: py-libp2p's channel stays
            self._drop_channel(topic_id, send)
        return subscription

    def _drop_channel(self, topic_id: str, send: trio.MemorySendChannel[rpc_pb2.Message]) -> None:
        if self._sized_channels.get(topic_id) is send:
            del self._sized_channels[topic_id]
        send.close()

    async def unsubscribe(self, topic_id: str) -> None:
        channel = self._sized_channels.pop(topic_id, None)
        if channel is not None:
            channel.close()
        await super().unsubscribe(topic_id)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        if not self._sized_channels:
            super().notify_subscriptions(publish_message)
            return
        # py-libp2p's own, delivering into the sized channel where there is one
        for topic in publish_message.topicIDs:
            if topic not in self.topic_ids:
                continue
            channel = self._sized_channels.get(topic)
            if channel is None:
                channel = self.subscribed_topics_send[topic]
            try:
                channel.send_nowait(publish_message)
            except trio.WouldBlock:
                self.channel_drops = {**self.channel_drops, topic: self.channel_drops.get(topic, 0) + 1}
                _libp2p_pubsub_log.warning("fail to deliver message to subscription for topic %s", topic)


class BufferedStream:
    """A stream as its reader sees it: each read of the stream takes what it holds (up to
    :data:`READ_CHUNK` bytes), and ``read(n)`` hands that out ``n`` bytes at a time. Everything
    else is the stream's own (``__getattr__``)."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream
        self._held = b""
        self._at = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    async def read(self, n: int | None = None) -> bytes:
        held, at = self._held, self._at
        if at < len(held):
            # a schedule point, as a read of the stream has: py-libp2p starts a task for each
            # message it reads, and only a checkpoint between reads keeps them in order
            await trio.lowlevel.checkpoint()
            end = len(held) if n is None or n < 0 else min(len(held), at + n)
            self._at = end
            return held[at:end]
        data: bytes = await self.stream.read(READ_CHUNK)
        if n is None or n < 0 or len(data) <= n:
            return data
        self._held, self._at = data, n
        return data[:n]


SizedPubsub = MsuitePubsub
"""The name :class:`MsuitePubsub` had when it only sized."""


async def _reset(stream: INetStream) -> None:
    """Reset ``stream``, bounded, ignoring a stream that is gone already."""
    with trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception:
            log.debug("pubsub: resetting a stream failed", exc_info=True)


register(
    "pubsub_subscription_channel",
    _missing_pubsub_channel,
    "a subscription holds py-libp2p's 32 messages and drops the rest",
)
register(
    "pubsub_outbound_queue",
    _missing_pubsub_queue,
    "a peer's outbound queue holds py-libp2p's 32 RPCs and drops the rest",
)
register(
    "pubsub_bad_frames",
    _missing_bad_frames,
    "one malformed pubsub frame from any peer takes the whole p2p host down",
    verified=("0.8.1",),
)
register(
    "pubsub_coalesced_writes",
    _missing_coalesce,
    "each queued pubsub RPC is written on its own (one Noise frame and one read each at the peer)",
    verified=("0.8.1",),
)
register(
    "pubsub_ordered_handling",
    _missing_ordered,
    "each inbound pubsub message starts a managed task of its own (a third of a receiver's CPU)",
    verified=("0.8.1",),
)
register(
    "pubsub_seqno",
    _missing_seqno,
    "a node restarted after a burst reuses message IDs, and its peers drop its new messages for up to 120 s",
    verified=("0.8.1",),
)
