"""Bitswap frames on a libp2p stream: read and written with the lean yamux read and write.

A frame is an unsigned varint length, then that many bytes (the framing of
:mod:`msuite.runtime.p2p.framing`, with its errors). Bitswap moves blocks of
up to 2 MiB in messages of about 1 MiB, so the generic reader's costs count
there: every ``read`` through py-libp2p's ``NetStream`` takes a state lock and
the stream's read locks, and every byte is copied four times before a block
is in hand (the read, the reader's buffer, the frame, the block).

:class:`FrameReader` reads with :func:`~msuite.runtime.p2p.compat.streams.read`
(the yamux buffer cut with no lock), keeps what it read as a list of chunks,
and hands out a frame as a view of the one chunk that holds it, or as one
join of the chunks it spans: a block is copied once more, when it is decoded.
:func:`write_frame` writes a frame as yamux-frame-sized views of it with the
lean :func:`~msuite.runtime.p2p.compat.streams.write`, as the raw-stream
baseline of ``bench/bench_files.py`` does, instead of through the stream's
locks for each of its 16 yamux frames.

Both work on the stream's muxed stream and fall back to its own ``read`` and
``write`` where the lean ones don't apply (another muxer, a short send window).
The writer must be the stream's only writer: the frames of one message go out
one at a time, and a write that fails after some left leaves the stream
unusable (its caller resets it). Nothing here imports trio: the module only
awaits the stream.
"""

from __future__ import annotations

import collections
from typing import Any, cast

from msuite.runtime.p2p.compat.streams import FRAME_PAYLOAD, read, write
from msuite.runtime.p2p.framing import MAX_VARINT_BYTES, FrameError, TooLarge

__all__ = ["READ_SIZE", "FrameReader", "write_frame"]

READ_SIZE = 256 * 1024
"""Bytes asked of the stream at least, per read (it returns what its buffer holds, up to that)."""


def _muxed(stream: Any) -> Any:
    return getattr(stream, "muxed_stream", stream)


class FrameReader:
    """The frames a peer sends on ``stream`` (a libp2p ``NetStream`` or a muxed stream)."""

    def __init__(self, stream: Any) -> None:
        self._stream = _muxed(stream)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0
        """Bytes of the first chunk already handed out."""
        self._held = 0
        """Bytes read and not handed out yet."""
        self._ended = False

    async def _more(self, need: int) -> bool:
        """Read once (at least ``need`` bytes asked for); False at the end of the stream."""
        from libp2p.stream_muxer.exceptions import MuxedStreamEOF

        if self._ended:
            return False
        try:
            data = await read(self._stream, max(need, READ_SIZE))
        except MuxedStreamEOF:
            self._ended = True
            return False
        if data:
            self._chunks.append(data)
            self._held += len(data)
        return True

    def _peek(self, count: int) -> bytes:
        """Up to ``count`` of the next bytes, not handed out."""
        out = b""
        offset = self._offset
        for chunk in self._chunks:
            out += chunk[offset : offset + count - len(out)]
            offset = 0
            if len(out) >= count:
                break
        return out

    def _skip(self, count: int) -> None:
        """Hand out the next ``count`` bytes (held) to nobody."""
        self._held -= count
        while count:
            chunk = self._chunks[0]
            step = min(count, len(chunk) - self._offset)
            self._offset += step
            count -= step
            if self._offset == len(chunk):
                self._chunks.popleft()
                self._offset = 0

    def _take(self, length: int) -> bytes | memoryview:
        """The next ``length`` bytes (held): a view of one chunk, or one join of several."""
        self._held -= length
        chunk = self._chunks[0]
        start = self._offset
        if len(chunk) - start >= length:
            self._offset += length
            if self._offset == len(chunk):
                self._chunks.popleft()
                self._offset = 0
            if start == 0 and length == len(chunk):
                return chunk
            return memoryview(chunk)[start : start + length]
        pieces: list[bytes | memoryview] = []
        left = length
        while left:
            chunk = self._chunks[0]
            piece = memoryview(chunk)[self._offset : self._offset + left]
            pieces.append(piece)
            left -= len(piece)
            self._offset += len(piece)
            if self._offset == len(chunk):
                self._chunks.popleft()
                self._offset = 0
        return b"".join(pieces)

    async def read_frame(self, limit: int) -> bytes | memoryview | None:
        """The next frame's payload (valid until the next call); None when the stream ended
        cleanly between frames. :class:`FrameError` for a malformed prefix or a stream that
        ends inside a frame, :class:`TooLarge` over ``limit`` (from the prefix alone)."""
        while True:
            head = self._peek(MAX_VARINT_BYTES)
            length = shift = index = 0
            complete = False
            for byte in head:
                index += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    complete = True
                    break
                shift += 7
            if complete:
                break
            if len(head) >= MAX_VARINT_BYTES:
                raise FrameError("a length prefix longer than 9 bytes")
            if not await self._more(1):
                if not head:
                    return None
                raise FrameError("the stream ended inside a length prefix")
        if index > 1 and head[index - 1] == 0:
            raise FrameError("a length prefix that is not minimal")
        if length > limit:
            raise TooLarge(length, limit)
        self._skip(index)
        while self._held < length:
            if not await self._more(length - self._held):
                raise FrameError(f"the stream ended inside a {length}-byte message")
        return self._take(length) if length else b""


async def write_frame(stream: Any, frame: bytes) -> None:
    """Write ``frame`` (length prefix included) on ``stream``, one yamux frame's worth at a time."""
    muxed = _muxed(stream)
    view = memoryview(frame)
    for at in range(0, len(view), FRAME_PAYLOAD):
        # a view, not a copy: the lean write and yamux's own only take its length, slice it and
        # append it to a frame header (msuite's hosts mux with yamux alone)
        await write(muxed, cast("bytes", view[at : at + FRAME_PAYLOAD]))
