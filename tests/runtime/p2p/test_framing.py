"""Varint-framed messages: round trips, limits from the prefix, malformed and truncated input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msuite.runtime.p2p.framing import FrameError, FrameReader, TooLarge, encode_frame, encode_uvarint


def reader_of(data: bytes, step: int = 3) -> FrameReader:
    """A reader whose source hands out at most ``step`` bytes per read (partial reads)."""
    position = 0

    async def read(n: int) -> bytes:
        nonlocal position
        piece = data[position : position + min(n, step)]
        position += len(piece)
        return piece

    return FrameReader(read)


def test_varints_match_the_libp2p_encoding() -> None:
    assert encode_uvarint(0) == b"\x00"
    assert encode_uvarint(127) == b"\x7f"
    assert encode_uvarint(128) == b"\x80\x01"
    assert encode_uvarint(300) == b"\xac\x02"
    with pytest.raises(ValueError):
        encode_uvarint(-1)


@given(st.lists(st.binary(max_size=600), max_size=8), st.integers(min_value=1, max_value=50))
async def test_frames_round_trip_across_partial_reads(messages: list[bytes], step: int) -> None:
    reader = reader_of(b"".join(encode_frame(m) for m in messages), step)
    assert [await reader.read_frame(1000) for _ in messages] == messages
    assert await reader.read_frame(1000) is None


async def test_a_frame_over_the_limit_is_refused_from_its_prefix() -> None:
    read_sizes: list[int] = []

    async def read(n: int) -> bytes:
        read_sizes.append(n)
        return encode_uvarint(10_000_000)  # only the prefix is ever sent

    with pytest.raises(TooLarge) as caught:
        await FrameReader(read).read_frame(65536)
    assert (caught.value.length, caught.value.limit) == (10_000_000, 65536)
    assert len(read_sizes) == 1
    with pytest.raises(TooLarge):
        encode_frame(b"x" * 11, limit=10)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x05ab", "ended inside a 5-byte message"),
        (b"\x80", "ended inside a length prefix"),
        (b"\xff" * 10, "longer than 9 bytes"),
        (b"\x80\x00", "not minimal"),
    ],
)
async def test_malformed_input_is_an_error(data: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        await reader_of(data).read_frame(1 << 40)


async def test_an_empty_message_is_not_the_end() -> None:
    reader = reader_of(encode_frame(b"") + encode_frame(b"x"))
    assert await reader.read_frame(10) == b""
    assert await reader.read_frame(10) == b"x"
    assert await reader.read_frame(10) is None
