"""msuite's adjustments to py-libp2p, in one place: the only module that touches its private names.

They were written for py-libp2p 0.8.x (``pyproject.toml`` pins ``libp2p==0.8.*``).
:func:`apply` checks the installed version against that range; outside it,
each adjustment is used only if py-libp2p still has everything it touches,
and otherwise logs one warning and leaves py-libp2p as it is (the same checks
run inside the range, where they pass). :func:`status` says which are active.

None of them changes py-libp2p for another user in the same process: each is
scoped to what msuite builds.

===============================  ==========================================  ==========================
adjustment                       scope                                       entry point
===============================  ==========================================  ==========================
``yamux_credit``                 the streams of msuite's host                :func:`batch_yamux_credit`
``pubsub_subscription_channel``  msuite's Pubsub instance                    :func:`sized_pubsub`
``pubsub_outbound_queue``        msuite's Pubsub instance                    :func:`sized_pubsub`
``forget_failed_dial``           the host passed in                          :func:`forget_failed_dial`
``log_routing``                  ``logging`` (loggers are process-wide)      :func:`route_logs`
===============================  ==========================================  ==========================

The lean yamux :func:`read` and :func:`write` of the gRPC pipe live here too
(they read yamux internals); each checks what it needs on every call and falls
back to py-libp2p's own ``read`` or ``write``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee, IPubsubRouter, ISubscriptionAPI
from libp2p.network import swarm as _swarm
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.pubsub.subscription import TrioSubscriptionAPI
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import YamuxStream

if TYPE_CHECKING:
    from multiaddr import Multiaddr

__all__ = [
    "FRAME_PAYLOAD",
    "WRITTEN_FOR",
    "BatchedCreditStream",
    "SizedPubsub",
    "apply",
    "batch_yamux_credit",
    "forget_failed_dial",
    "in_range",
    "read",
    "route_logs",
    "sized_pubsub",
    "status",
    "write",
]

log = logging.getLogger("msuite.p2p")

WRITTEN_FOR = (0, 8)
"""The py-libp2p release series (major, minor) these adjustments were written for."""


# ---------------------------------------------------------------------------- the version gate


def installed_version() -> str:
    return importlib.metadata.version("libp2p")


def in_range(version: str) -> bool:
    """Whether py-libp2p ``version`` is in the series the adjustments were written for."""
    found = re.match(r"(\d+)\.(\d+)(?!\d)", version)
    return found is not None and (int(found[1]), int(found[2])) == WRITTEN_FOR


_lock = threading.Lock()
_state: dict[str, Any] = {}
"""What the last :func:`apply` found (empty before the first)."""


def apply(version: str | None = None) -> dict[str, Any]:
    """Check py-libp2p, record which adjustments are active, route its logs; return :func:`status`.

    ``version`` is the installed py-libp2p's by default (tests pass another). Calling it
    again for the same version changes nothing and logs nothing. It patches nothing
    process-wide: the adjustments take effect where msuite asks for them (the table above)."""
    version = version or installed_version()
    with _lock:
        if _state.get("libp2p") != version:
            _state.clear()
            _state.update(_check(version))
            route_logs()
        return _copy(_state)


def status() -> dict[str, Any]:
    """``{"libp2p": version, "written_for": "0.8.x", "in_range": bool, "patches": {name: active}}``
    (``{"libp2p": version, "applied": False}`` before :func:`apply`)."""
    with _lock:
        if not _state:
            return {"libp2p": installed_version(), "applied": False}
        return _copy(_state)


def _check(version: str) -> dict[str, Any]:
    written_for = "{}.{}.x".format(*WRITTEN_FOR)
    supported = in_range(version)
    if not supported:
        log.warning(
            "py-libp2p %s is not %s, which msuite's adjustments to it were written for: "
            "each is used only where py-libp2p still has what it touches",
            version,
            written_for,
        )
    patches = {}
    for name, (missing_in, without) in _PATCHES.items():
        lacking = missing_in()
        if lacking:
            log.warning(
                "py-libp2p %s lacks %s: msuite leaves it as it is, so %s",
                version,
                ", ".join(lacking),
                without,
            )
        patches[name] = not lacking
    return {"libp2p": version, "written_for": written_for, "in_range": supported, "patches": patches}


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "patches": dict(state["patches"])}


def _active(name: str) -> bool:
    state = _state or apply()
    return bool(state["patches"].get(name, False))


def _missing_attributes(owner: Any, names: tuple[str, ...]) -> list[str]:
    """``owner.name`` for each of ``names`` that ``owner`` lacks (class attributes or annotations)."""
    present = set(dir(owner)) | set(getattr(owner, "__annotations__", {}))
    return [f"{getattr(owner, '__name__', owner)}.{name}" for name in names if name not in present]


# ---------------------------------------------------------------------------- yamux credit in batches
#
# py-libp2p 0.8's streams send a WINDOW_UPDATE frame after nearly every read: a
# read that leaves the window short of its target by less than half the target
# still returns the credit at once (its "partial slack" and "release on read"
# branches). A request/response exchange of small messages therefore carries
# twice the frames it needs: every message is followed by a 12-byte update the
# other side must decrypt and handle. msuite grants credit the way the yamux
# spec describes and go-yamux does: once the reader has consumed at least half
# of the target window, as one update carrying everything consumed so far, with
# py-libp2p's own window auto-tuning applied when it is sent. The sender never
# stalls on it: until the reader has consumed half the window, it still holds
# at least half the window of credit. Measured on one persistent stream with
# 64-byte messages: 722 us per round trip before, 450 us after. The bytes on
# the wire stay standard yamux.
#
# Scoped: ``YamuxStream`` itself is never modified, so every other py-libp2p
# user in the process keeps py-libp2p's own rule. A notifee registered on
# msuite's host's network turns each of its streams into a BatchedCreditStream
# (a subclass whose only change is the credit rule) as the stream opens. The
# hook is a notifee because py-libp2p 0.8 offers no other: ``new_host``'s
# ``muxer_opt`` cannot carry a ``Yamux`` subclass (``MuxerMultistream.new_conn``
# builds a plain ``Yamux`` whenever ``/yamux/1.0.0`` is negotiated) and ``Yamux``
# builds its streams from the module-level ``YamuxStream`` name. The swarm awaits
# every notifee's ``opened_stream`` before it hands a stream to its opener or its
# handler, so no read happens on a stream before it is switched.

FRAME_PAYLOAD = 64 * 1024 - 12
"""The most a yamux data frame carries in py-libp2p (64 KiB frames, as go-yamux, less the header)."""


def _missing_yamux_credit() -> list[str]:
    needed = ("_auto_tune_and_send_window_update", "_grow_to_delta", "_apply_autotune_epoch")
    lacking = _missing_attributes(YamuxStream, (*needed, "send_window_update", "target_recv_window"))
    lacking += _missing_attributes(INotifee, ("opened_stream",))
    if _frame_layout() is None:
        lacking.append("the yamux frame constants")
    return lacking


class BatchedCreditStream(YamuxStream):
    """A yamux stream of msuite's own host: it grants receive credit in batches (see above)."""

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        # no await before the frame is built: trio switches tasks only at awaits, so the window
        # arithmetic is atomic without taking the stream's window lock
        del bytes_read  # the window itself records what was consumed
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self.target_recv_window // 2:
            return
        increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
        if increment > 0:
            await _grant(self, increment)


def batch_yamux_credit(host: IHost) -> bool:
    """Make every yamux stream ``host`` opens or accepts from now on grant credit in batches.

    Call it on msuite's own host, before it runs (``build_host``). Streams of other hosts
    in the process keep py-libp2p's own rule. False (and py-libp2p's rule) when the
    adjustment is not active; calling it twice on one host changes nothing."""
    if not _active("yamux_credit"):
        return False
    network = host.get_network()
    if not any(isinstance(n, _CreditNotifee) for n in getattr(network, "notifees", ())):
        network.register_notifee(_CreditNotifee())
    return True


def _batch_credit(stream: INetStream) -> None:
    """Switch a plain ``YamuxStream`` (never another muxer's, nor a subclass someone made)."""
    muxed = getattr(stream, "muxed_stream", None)
    if type(muxed) is YamuxStream:
        muxed.__class__ = BatchedCreditStream


class _CreditNotifee(INotifee):
    """On msuite's host's network: each stream grants credit in batches from the moment it opens."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        _batch_credit(stream)

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


async def _grant(stream: Any, increment: int) -> None:
    """Send ``increment`` of credit the window already counts; take it back if it never left.

    A batch is at least half the window: lost (the reading task cancelled while the
    update waits for the connection's write lock), the window would stay short of its
    target by more than the threshold that triggers the next update, and the sender
    would wait forever. Taken back, the next read grants it again. The frame is written
    here rather than with py-libp2p's ``send_window_update``, whose write ends with a
    checkpoint that can be cancelled after the frame has left.
    """
    from libp2p.io.exceptions import IOException

    writer = _frame_writer(stream)
    if writer is None:
        await stream.send_window_update(increment, skip_lock=True)
        return
    layout, lock, secured = writer
    frame = layout.header.pack(0, layout.window_update, 0, stream.stream_id, increment)
    try:
        async with lock:
            await secured.write(frame)
    except BaseException as exc:
        stream.recv_window -= increment
        if isinstance(exc, IOException):  # the connection is closing: the data read is still good
            log.debug("yamux stream %s: credit not sent: %s", stream.stream_id, exc)
            return
        raise


class _Layout(NamedTuple):
    header: struct.Struct
    data: int
    window_update: int
    largest: int


@functools.cache
def _frame_layout() -> _Layout | None:
    """py-libp2p's yamux header layout, frame types and largest payload, if it still has them."""
    try:
        largest = _yamux.MAX_MESSAGE_SIZE - _yamux.HEADER_SIZE
        header = struct.Struct(_yamux.YAMUX_HEADER_FORMAT)
        return _Layout(header, _yamux.TYPE_DATA, _yamux.TYPE_WINDOW_UPDATE, largest)
    except AttributeError:
        return None


def _frame_writer(stream: Any) -> tuple[_Layout, Any, Any] | None:
    """The layout, write lock and secured connection a direct frame write needs, or None."""
    layout = _frame_layout()
    conn = getattr(stream, "conn", None)
    lock = getattr(conn, "_write_lock", None)
    secured = getattr(conn, "secured_conn", None)
    if layout is None or lock is None or secured is None:
        return None
    return layout, lock, secured


# ---------------------------------------------------------------------------- the lean read and write
#
# Used by the gRPC pipe, where every scheduler pass in the trio thread is
# latency. py-libp2p's ``YamuxStream.write`` passes through a stream lock, a
# window lock, the connection's write lock and a trailing checkpoint: four trio
# scheduler passes before the next task runs, each one a point where the thread
# may lose the GIL. When the data fits in one frame and in the send window,
# ``write`` takes only the connection's write lock and sends the frame; the
# window is checked and charged under that lock, so frames of concurrent
# writers never reorder. Anything else (a closed stream, data larger than the
# window or a frame) goes through py-libp2p's own write, which waits for credit
# and raises its usual errors. ``read`` takes what the stream's buffer holds
# (or waits for the connection's reader to signal more), as py-libp2p's
# ``read`` does, without taking the connection's stream lock twice around the
# wait: the buffer is read and cut with no await in between, which trio makes
# atomic. Together they took a unary gRPC call over libp2p from 1.76 ms to
# about 1.55 ms here.


async def write(stream: Any, data: bytes) -> None:
    """Write ``data`` on a yamux stream, as one frame when it fits (see above)."""
    writer = _frame_writer(stream)
    if writer is None:
        await stream.write(data)
        return
    layout, lock, secured = writer
    size = len(data)
    async with lock:
        if (
            0 < size <= layout.largest
            and size <= stream.send_window
            and not (stream.send_closed or stream.closed)
        ):
            stream.send_window -= size
            await secured.write(layout.header.pack(0, layout.data, 0, stream.stream_id, size) + data)
            return
    await stream.write(data)


async def read(stream: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes from a yamux stream, waiting for some (see above).

    Raises py-libp2p's ``MuxedStreamEOF`` once the peer has closed its side and
    everything it sent was read, and ``MuxedStreamReset`` after a reset. Credit goes
    back by the stream's own rule: in batches on msuite's streams.
    """
    from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamReset

    if limit < 1:
        raise ValueError(f"read needs a limit of at least 1 byte, not {limit}")
    conn = getattr(stream, "conn", None)
    buffers = getattr(conn, "stream_buffers", None)
    events = getattr(conn, "stream_events", None)
    if buffers is None or events is None or not hasattr(stream, "_auto_tune_and_send_window_update"):
        data: bytes = await stream.read(limit)
        return data
    assert conn is not None
    key = stream.stream_id
    while True:
        buffer = buffers.get(key)
        if buffer:
            data = bytes(buffer[:limit])
            del buffer[:limit]
            await stream._auto_tune_and_send_window_update(bytes_read=len(data))
            return data
        if stream.reset_received:
            raise MuxedStreamReset("the stream was reset")
        if buffer is None or stream.recv_closed or conn.event_shutting_down.is_set():
            raise MuxedStreamEOF("the stream is closed for reading")
        if stream.closed:
            raise MuxedStreamReset("the stream is closed")
        event = events.get(key)
        if event is None:
            raise MuxedStreamEOF("the stream was removed")
        await event.wait()
        if events.get(key) is event:  # re-armed here, as py-libp2p's read does after a wake-up
            events[key] = trio.Event()


# ---------------------------------------------------------------------------- pubsub sizes
#
# py-libp2p 0.8 takes neither size as an argument: the subscription channel is
# ``trio.open_memory_channel(SUBSCRIPTION_CHANNEL_SIZE)`` and the outbound queue
# ``RpcQueue()``, both module globals of ``libp2p.pubsub.pubsub``. Rewriting
# those would resize every Pubsub in the process, so SizedPubsub sizes its own:
#
# - subscription channel: it opens its own channel before py-libp2p opens its
#   32-message one, delivers into it (``notify_subscriptions``, the one place
#   py-libp2p delivers) and hands it to the subscription py-libp2p returns, so
#   messages arriving while the subscribe is announced land in the large one;
# - outbound queue: ``peer_queues`` is a dict that sizes each queue as
#   py-libp2p stores it, before anything is pushed onto it.

_libp2p_pubsub_log = logging.getLogger("libp2p.pubsub.pubsub")


def _missing_pubsub_channel() -> list[str]:
    names = ("subscribe", "unsubscribe", "notify_subscriptions", "topic_ids")
    lacking = _missing_attributes(Pubsub, (*names, "subscribed_topics_send", "subscribed_topics_receive"))
    return lacking + _missing_attributes(TrioSubscriptionAPI, ("receive_channel",))


def _missing_pubsub_queue() -> list[str]:
    lacking = _missing_attributes(Pubsub, ("peer_queues",))
    if not hasattr(getattr(RpcQueue(), "_queue", None), "max_size"):
        lacking.append("RpcQueue._queue.max_size")
    return lacking


def sized_pubsub(
    host: IHost, router: IPubsubRouter, *, subscription_channel: int, outbound_queue: int, **kwargs: Any
) -> Pubsub:
    """py-libp2p's ``Pubsub(host, router, **kwargs)`` whose subscriptions hold ``subscription_channel``
    messages and whose per-peer outbound queues hold ``outbound_queue`` RPCs (py-libp2p: 32 each).

    Only this instance is sized; where an adjustment is not active, py-libp2p's size stays."""
    channel = subscription_channel if _active("pubsub_subscription_channel") else None
    queue = outbound_queue if _active("pubsub_outbound_queue") else None
    if channel is None and queue is None:
        return Pubsub(host, router, **kwargs)
    return SizedPubsub(host, router, subscription_channel=channel, outbound_queue=queue, **kwargs)


class _SizedQueues(dict[ID, RpcQueue]):
    """``Pubsub.peer_queues`` whose queues hold ``size`` RPCs: sized as py-libp2p stores them."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, peer: ID, queue: RpcQueue) -> None:
        queue._queue.max_size = self.size  # nothing pushed yet: py-libp2p stores a queue first
        super().__setitem__(peer, queue)


class SizedPubsub(Pubsub):
    """py-libp2p's Pubsub whose subscription channels and outbound queues have the given sizes
    (None keeps py-libp2p's own). Build it with :func:`sized_pubsub`."""

    def __init__(
        self,
        host: IHost,
        router: IPubsubRouter,
        *,
        subscription_channel: int | None,
        outbound_queue: int | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, router, **kwargs)
        self.subscription_channel = subscription_channel
        self._sized_channels: dict[str, trio.MemorySendChannel[rpc_pb2.Message]] = {}
        if outbound_queue is not None:
            self.peer_queues = _SizedQueues(outbound_queue)

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
                _libp2p_pubsub_log.warning("fail to deliver message to subscription for topic %s", topic)


# ---------------------------------------------------------------------------- forgetting a failed dial


def _missing_forget_failed_dial() -> list[str]:
    if hasattr(_swarm.Swarm, "unblock_peer") or hasattr(_swarm, "_NegativePeerCache"):
        return []
    return ["Swarm.unblock_peer"]


def forget_failed_dial(host: IHost, peer_id: ID) -> None:
    """Let ``host`` dial ``peer_id`` again at once: py-libp2p refuses for 60 s after a failed dial,
    msuite decides when to retry. Never raises."""
    network: Any = host.get_network()
    try:
        unblock = getattr(network, "unblock_peer", None)
        if unblock is not None:
            unblock(peer_id)
            return
        cache = getattr(network, "_negative_peer_cache", None)  # before unblock_peer existed
        if cache is not None:
            cache.evict(str(peer_id))
    except Exception:  # never fail a redial over it
        log.debug("could not clear py-libp2p's failed-dial cache", exc_info=True)


# ---------------------------------------------------------------------------- py-libp2p's logs

_NOISY = (
    "libp2p.host.basic_host",
    "libp2p.protocol_muxer.multiselect_client",
    "libp2p.transport.tcp.tcp",
    "libp2p.network.swarm",
)


class _Demote(logging.Filter):
    """py-libp2p logs a failed stream open at ERROR, with a multi-line dump, although the caller
    gets the exception and msuite reports it where it matters (``PeerUnreachable``, the mesher's
    DEBUG lines): such records become DEBUG records."""

    PREFIXES = (
        "Failed to open stream",
        "MultiselectClient handshake",
        "Failed to open TCP stream",
        "Failed to dial",
        "fail to upgrade",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self.PREFIXES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("libp2p").isEnabledFor(logging.DEBUG)
        return True


def route_logs() -> None:
    """py-libp2p sends its records to raw stderr (no handler, no propagation): route them to ours.

    Loggers are process-wide, so this is: it touches ``logging`` only. Call it again after
    more of py-libp2p is imported (each module makes its logger on import); twice is once."""
    root = logging.getLogger("libp2p")
    root.handlers.clear()
    root.propagate = True
    root.setLevel(logging.WARNING)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("libp2p.") and isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
    for name in _NOISY:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Demote) for f in logger.filters):
            logger.addFilter(_Demote())


_PATCHES: dict[str, tuple[Callable[[], list[str]], str]] = {
    "yamux_credit": (_missing_yamux_credit, "its yamux streams return credit after nearly every read"),
    "pubsub_subscription_channel": (
        _missing_pubsub_channel,
        "a subscription holds py-libp2p's 32 messages and drops the rest",
    ),
    "pubsub_outbound_queue": (
        _missing_pubsub_queue,
        "a peer's outbound queue holds py-libp2p's 32 RPCs and drops the rest",
    ),
    "forget_failed_dial": (_missing_forget_failed_dial, "a failed bootstrap peer is redialled after 60 s"),
    "log_routing": (lambda: [], ""),
}
"""Each adjustment: what it touches that py-libp2p lacks, and what happens without it."""
