"""msuite's yamux streams: credit in batches, whole writes, and the lean read/write of the gRPC pipe.

Both stream adjustments are scoped to msuite's hosts: ``YamuxStream`` itself is
never modified. A notifee registered on msuite's host's network
(:func:`adjust_streams`) switches each of its yamux streams to a subclass as
the stream opens. The hook is a notifee because py-libp2p 0.8 offers no other:
``new_host``'s ``muxer_opt`` cannot carry a ``Yamux`` subclass
(``MuxerMultistream.new_conn`` builds a plain ``Yamux`` whenever
``/yamux/1.0.0`` is negotiated) and ``Yamux`` builds its streams from the
module-level ``YamuxStream`` name. The swarm awaits every notifee's
``opened_stream`` before it hands a stream to its opener or its handler, so no
read or write happens on a stream before it is switched.
"""

from __future__ import annotations

import functools
import logging
import struct
from typing import TYPE_CHECKING, Any, NamedTuple

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from .gate import active, missing_attributes, register

if TYPE_CHECKING:
    from multiaddr import Multiaddr

__all__ = [
    "FRAME_PAYLOAD",
    "BatchedCreditStream",
    "MsuiteStream",
    "WholeWriteStream",
    "adjust_streams",
    "batch_yamux_credit",
    "protocols_refused",
    "read",
    "write",
]

log = logging.getLogger("msuite.p2p")

FRAME_PAYLOAD = 64 * 1024 - 12
"""The most a yamux data frame carries in py-libp2p (64 KiB frames, as go-yamux, less the header)."""


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


def _missing_yamux_credit() -> list[str]:
    needed = ("_auto_tune_and_send_window_update", "_grow_to_delta", "_apply_autotune_epoch")
    lacking = missing_attributes(YamuxStream, (*needed, "send_window_update", "target_recv_window"))
    lacking += missing_attributes(INotifee, ("opened_stream",))
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


# ---------------------------------------------------------------------------- whole writes
#
# py-libp2p 0.8's ``YamuxStream.write`` holds the stream's locks only while it
# cuts the next frame, not across the frames of one write. When the peer's
# window runs short (a reader that falls behind: a node joining under traffic),
# a write is cut into a first frame that fits, then waits for credit; another
# task writing on the same stream meanwhile gets the credit first and its frame
# lands in the middle of the first write's bytes. py-libp2p's pubsub does write
# one stream from several tasks at once (the per-peer sending loop, the replay
# of recent messages to a new subscriber, the flush of messages held for a
# peer being identified), so the peer read a length prefix, then bytes of two
# messages, and failed to parse it (``DecodeError``): seen as a joining node
# losing its host. go-yamux holds a stream's write lock across the whole
# ``Write``; msuite's streams do the same. A write that fails after some of its
# frames left (cancelled, or no credit for 5 s) resets the stream: the peer
# sees a reset, never a message cut short followed by another.


def _missing_whole_writes() -> list[str]:
    return missing_attributes(YamuxStream, ("write", "reset"))


def _write_lock(stream: Any) -> trio.Lock:
    """The lock a whole write holds on ``stream`` (made on first use: the class switch runs no __init__)."""
    lock: trio.Lock | None = stream.__dict__.get("_msuite_write_lock")
    if lock is None:
        lock = stream.__dict__["_msuite_write_lock"] = trio.Lock()
    return lock


class WholeWriteStream(YamuxStream):
    """A yamux stream of msuite's own host: one ``write`` is contiguous on the stream (see above)."""

    async def write(self, data: bytes) -> None:
        async with _write_lock(self):
            layout = _frame_layout()
            one_frame = layout is not None and len(data) <= min(self.send_window, layout.largest)
            try:
                await super().write(data)
            except BaseException:
                if not one_frame:  # some frames may have left: the peer must not read on
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        try:
                            await self.reset()
                        except Exception:
                            log.debug("yamux stream %s: reset after a cut write failed", self.stream_id)
                raise


class MsuiteStream(WholeWriteStream, BatchedCreditStream):
    """Both: credit in batches, whole writes."""


def adjust_streams(host: IHost) -> bool:
    """Make every yamux stream ``host`` opens or accepts from now on grant credit in batches and
    write whole (each where active).

    Call it on msuite's own host, before it runs (``build_host``). Streams of other hosts
    in the process keep py-libp2p's own behaviour. False when neither adjustment is active;
    calling it twice on one host changes nothing."""
    credit, whole = active("yamux_credit"), active("yamux_whole_writes")
    if not (credit or whole):
        return False
    kind: type[YamuxStream] = (
        MsuiteStream if credit and whole else BatchedCreditStream if credit else WholeWriteStream
    )
    network = host.get_network()
    if not any(isinstance(n, _StreamNotifee) for n in getattr(network, "notifees", ())):
        network.register_notifee(_StreamNotifee(kind))
    return True


batch_yamux_credit = adjust_streams
"""The name :func:`adjust_streams` had when it only batched credit."""


class _StreamNotifee(INotifee):
    """On msuite's host's network: each yamux stream is switched to ``kind`` as it opens."""

    def __init__(self, kind: type[YamuxStream]) -> None:
        self.kind = kind

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        muxed = getattr(stream, "muxed_stream", None)
        if type(muxed) is YamuxStream:  # never another muxer's, nor a subclass someone made
            muxed.__class__ = self.kind

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
# window or a frame, a whole write of another task in progress on the stream)
# goes through the stream's own write, which waits for credit and raises its
# usual errors. ``read`` takes what the stream's buffer holds (or waits for the
# connection's reader to signal more), as py-libp2p's ``read`` does, without
# taking the connection's stream lock twice around the wait: the buffer is read
# and cut with no await in between, which trio makes atomic. Together they took
# a unary gRPC call over libp2p from 1.76 ms to about 1.55 ms here.


async def write(stream: Any, data: bytes) -> None:
    """Write ``data`` on a yamux stream, as one frame when it fits (see above)."""
    writer = _frame_writer(stream)
    if writer is None:
        await stream.write(data)
        return
    layout, lock, secured = writer
    size = len(data)
    whole = stream.__dict__.get("_msuite_write_lock")
    async with lock:
        if (
            0 < size <= layout.largest
            and size <= stream.send_window
            and not (stream.send_closed or stream.closed)
            and not (whole is not None and whole.locked())
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


register("yamux_credit", _missing_yamux_credit, "its yamux streams return credit after nearly every read")
register(
    "yamux_whole_writes",
    _missing_whole_writes,
    "concurrent writes on one stream may interleave when the peer's window runs short "
    "(pubsub peers then read garbage)",
    verified=("0.8.1",),
)


def protocols_refused(error: BaseException) -> bool:
    """Whether opening a stream failed because the peer refused every protocol offered (it does
    not run the service), not for a passing reason (a timeout, a reset, a closed connection).

    py-libp2p 0.8 raises ``StreamFailure`` from a ``MultiselectClientError`` either way; only the
    message tells them apart (``protocols not supported: ...`` when every one was refused)."""
    from libp2p.protocol_muxer.exceptions import MultiselectClientError, ProtocolNotSupportedError

    seen: BaseException | None = error
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            return False
        if isinstance(seen, ProtocolNotSupportedError):
            return True
        if isinstance(seen, MultiselectClientError) and str(seen).startswith("protocols not supported"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
