"""Bitswap frames on a stream: whatever way the bytes are cut into reads, the same frames come
out, the framing errors are the generic reader's, and a frame leaves in yamux-sized writes."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest
import trio
from libp2p.stream_muxer.exceptions import MuxedStreamEOF

from msuite.runtime.files.frames import FrameReader, write_frame
from msuite.runtime.p2p.compat.streams import FRAME_PAYLOAD
from msuite.runtime.p2p.framing import FrameError, TooLarge, encode_frame


class Pieces:
    """A stream that returns its bytes in the given pieces (each cut to the reader's limit), then EOF."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = collections.deque(p for p in pieces if p)
        self.reads = 0
        self.written: list[bytes] = []

    async def read(self, limit: int) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.pieces:
            raise MuxedStreamEOF("end")
        self.reads += 1
        piece = self.pieces.popleft()
        if len(piece) > limit:
            self.pieces.appendleft(piece[limit:])
            piece = piece[:limit]
        return piece

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.written.append(bytes(data))


def cut(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    pieces, at = [], 0
    while at < len(data):
        step = rng.randint(1, largest)
        pieces.append(data[at : at + step])
        at += step
    return pieces


def frames_of(stream: Any, limit: int = 4 << 20) -> list[bytes]:
    async def main() -> list[bytes]:
        reader = FrameReader(stream)
        out = []
        while (frame := await reader.read_frame(limit)) is not None:
            out.append(bytes(frame))
        return out

    return trio.run(main)


PAYLOADS = [b"", b"x", bytes(range(256)) * 3, random.Random(1).randbytes(70_000), b"y" * 127, b"z" * 128]


@pytest.mark.parametrize("largest", [1, 2, 7, 130, 65_536, 1 << 20])
def test_frames_come_out_whole_however_the_bytes_are_cut(largest: int) -> None:
    wire = b"".join(encode_frame(p) for p in PAYLOADS)
    stream = Pieces(cut(wire, random.Random(largest), largest))
    assert frames_of(stream) == PAYLOADS


def test_a_frame_in_one_read_is_handed_out_without_a_join() -> None:
    payload = b"p" * 1000
    stream = Pieces([encode_frame(payload) + encode_frame(b"next")])

    async def main() -> None:
        reader = FrameReader(stream)
        first = await reader.read_frame(4096)
        assert isinstance(first, memoryview) and first == payload
        assert await reader.read_frame(4096) == b"next"
        assert await reader.read_frame(4096) is None

    trio.run(main)
    assert stream.reads == 1


@pytest.mark.parametrize(
    ("wire", "error", "why"),
    [
        (b"\x80", FrameError, "inside a length prefix"),
        (b"\x05abc", FrameError, "inside a 5-byte message"),
        (b"\x80\x00", FrameError, "not minimal"),
        (b"\xff" * 10, FrameError, "longer than 9 bytes"),
        (encode_frame(b"x" * 101), TooLarge, "over the limit of 100"),
    ],
)
def test_malformed_framing_is_refused(wire: bytes, error: type[Exception], why: str) -> None:
    with pytest.raises(error, match=why):
        frames_of(Pieces(cut(wire, random.Random(0), 3)), limit=100)


def test_a_frame_is_written_in_yamux_frame_sized_pieces() -> None:
    frame = encode_frame(random.Random(2).randbytes(3 * FRAME_PAYLOAD + 5))
    stream = Pieces([])
    trio.run(write_frame, stream, frame)
    assert b"".join(stream.written) == frame
    assert [len(w) for w in stream.written] == [FRAME_PAYLOAD] * 3 + [len(frame) - 3 * FRAME_PAYLOAD]
