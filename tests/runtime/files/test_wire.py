"""Bitswap messages: the bytes other implementations write decode, and ours decode in theirs.

The fixed vectors were written field by field from the Bitswap message schema
(protobuf wire format: key = field number << 3 | wire type), not by this codec.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msuite.runtime.files.wire import MAX_CID, Entry, Message, WireError, decode, encode, encode_parts

CID = bytes.fromhex("01551220") + bytes(range(32))


def test_a_wantlist_entry_is_written_as_the_schema_says() -> None:
    message = Message(entries=[Entry(CID, priority=1, want_have=True, send_dont_have=True)])
    entry = b"\x0a" + bytes([len(CID)]) + CID + b"\x10\x01" + b"\x20\x01" + b"\x28\x01"
    wantlist = b"\x0a" + bytes([len(entry)]) + entry
    assert encode(message) == b"\x0a" + bytes([len(wantlist)]) + wantlist


def test_a_block_and_presences_are_written_as_the_schema_says() -> None:
    message = Message(blocks=[(b"\x01\x55\x12\x20", b"abc")], presences=[(CID, True), (CID, False)])
    block = b"\x0a\x04\x01\x55\x12\x20" + b"\x12\x03abc"
    have = b"\x0a" + bytes([len(CID)]) + CID
    dont = have + b"\x10\x01"
    assert encode(message) == (
        b"\x1a"
        + bytes([len(block)])
        + block
        + b"\x22"
        + bytes([len(have)])
        + have
        + b"\x22"
        + bytes([len(dont)])
        + dont
    )


def test_legacy_blocks_carry_data_only_and_no_presences() -> None:
    message = Message(
        entries=[Entry(CID, want_have=True), Entry(CID, cancel=True)],
        blocks=[(b"\x01\x55\x12\x20", b"abc")],
        presences=[(CID, True)],
    )
    decoded = decode(encode(message, legacy=True))
    assert decoded.blocks == [(b"", b"abc")]
    assert decoded.presences == []
    assert [e.cancel for e in decoded.entries] == [True]  # a want-have means nothing to 1.0.0


def test_unknown_fields_are_skipped() -> None:
    entry = b"\x0a" + bytes([len(CID)]) + CID + b"\x30\x07" + b"\x3a\x02hi"  # fields 6 and 7
    wantlist = b"\x0a" + bytes([len(entry)]) + entry + b"\x10\x01"
    raw = b"\x0a" + bytes([len(wantlist)]) + wantlist + b"\x4a\x01x" + b"\x28\x05"
    decoded = decode(raw)
    assert decoded.full is True
    assert decoded.entries[0].cid == CID
    assert decoded.pending_bytes == 5


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x0a\x05\x0a", "runs past"),  # a wantlist longer than the message
        (b"\x0a\x02\x0a\x00", "without a CID"),  # an entry with no CID
        (b"\x0b", "wire type 3"),
        (b"\x1a\x02\x12\x00", "without a CID prefix"),
        (b"\x0a", "runs past its end"),
        (b"\x0a\x02\x08\x01", "wire type 0, not 2"),  # a wantlist entry as a varint
        (b"\xff" * 11, "longer than 10 bytes"),
        (b"\x22\x02\x10\x01", "without a CID"),
    ],
)
def test_malformed_messages_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode(raw)


def test_limits() -> None:
    many = Message(entries=[Entry(CID) for _ in range(11)])
    assert len(decode(encode(many), max_entries=11).entries) == 11
    with pytest.raises(WireError, match="over 10 wantlist entries"):
        decode(encode(many), max_entries=10)
    big = Message(blocks=[(b"\x01\x55\x12\x20", b"x" * 1001)])
    with pytest.raises(WireError, match="over the limit of 1000"):
        decode(encode(big), max_block=1000)
    long_cid = Message(entries=[Entry(b"\x01" * (MAX_CID + 1))])
    with pytest.raises(WireError, match="over 168"):
        decode(encode(long_cid))


entries = st.builds(
    Entry,
    st.binary(min_size=1, max_size=MAX_CID),
    st.integers(0, 2**31 - 1),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
messages = st.builds(
    Message,
    st.lists(entries, max_size=5),
    st.booleans(),
    st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=64)), max_size=3),
    st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.booleans()), max_size=3),
    st.integers(0, 2**31 - 1),
)


@given(messages)
def test_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_wire_error(raw: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(raw)


@given(messages, st.booleans())
def test_encode_parts_join_to_the_message_and_carry_each_block_uncopied(
    message: Message, legacy: bool
) -> None:
    parts = encode_parts(message, legacy=legacy)
    assert b"".join(parts) == encode(message, legacy=legacy)
    carried = [id(part) for part in parts]
    assert all(id(data) in carried for _, data in message.blocks if data)
