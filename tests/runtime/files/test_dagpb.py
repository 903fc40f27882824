"""DAG-PB and UnixFS Data: the canonical bytes, byte for byte, and a strict decoder.

The expected encodings are written field by field from the IPLD DAG-PB and
UnixFS schemas (key = field number << 3 | wire type), not by the codec, and
the empty directory's block is the one behind Kubo's
``QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn``."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msuite import MsuiteError
from msuite.runtime.files import dagpb
from msuite.runtime.files.cids import DAG_PB, cid_to_str, make_cid
from msuite.runtime.files.dagpb import DagPBError, PBLink, PBNode, decode, encode
from msuite.runtime.files.unixfs import (
    DIRECTORY_DATA,
    DataType,
    UnixFSData,
    UnixFSError,
    decode_data,
    encode_data,
    file_node,
)

HASH = b"\x01\x55\x12\x20" + bytes(range(32))


def test_links_come_before_data_and_link_fields_in_order() -> None:
    node = PBNode((PBLink(HASH, "", 5), PBLink(HASH, None, None)), b"\x08\x02")
    link1 = b"\x0a\x24" + HASH + b"\x12\x00" + b"\x18\x05"
    link2 = b"\x0a\x24" + HASH
    expected = (
        b"\x12" + bytes([len(link1)]) + link1 + b"\x12" + bytes([len(link2)]) + link2 + b"\x0a\x02\x08\x02"
    )
    assert encode(node) == expected
    assert decode(expected) == node


def test_absent_and_empty_are_kept_apart() -> None:
    assert encode(PBNode()) == b""
    assert decode(b"") == PBNode((), None)
    assert encode(PBNode((), b"")) == b"\x0a\x00"
    assert decode(b"\x0a\x00") == PBNode((), b"")
    assert decode(encode(PBNode((PBLink(HASH, ""),)))).links[0].name == ""
    assert decode(encode(PBNode((PBLink(HASH),)))).links[0].name is None


def test_the_empty_directory_is_kubos() -> None:
    assert encode(PBNode((), DIRECTORY_DATA)) == b"\x0a\x02\x08\x01"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x0a\x00\x12\x00", "a link after the Data"),
        (b"\x0a\x00\x0a\x00", "Data appears twice"),
        (b"\x1a\x00", "unknown field 3"),
        (b"\x08\x01", "wire type 0"),
        (b"\x12\x00", "link 0 has no Hash"),
        (b"\x12\x04\x12\x00\x0a\x00", "out of order"),
        (b"\x12\x04\x0a\x00\x0a\x00", "field 1 twice"),
        (b"\x12\x02\x18\x01", "link 0 has no Hash"),
        (b"\x12\x04\x0a\x00\x1a\x00", "Tsize has wire type 2"),
        (b"\x12\x04\x0a\x00\x10\x01", "field 2 has wire type 0"),
        (b"\x12\x04\x0a\x00\x12\x01", "runs past the end"),
        (b"\x12\x05\x0a\x00\x12\x01\xff", "not UTF-8"),
        (b"\x12\x02\x22\x00", "unknown field 4"),
        (b"\x0a", "truncated"),
        (b"\x0a\x05abc", "runs past the end"),
        (b"\x0a" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    ],
)
def test_non_canonical_blocks_are_refused(block: bytes, message: str) -> None:
    with pytest.raises(DagPBError, match=message) as caught:
        decode(block)
    assert isinstance(caught.value, MsuiteError) and isinstance(caught.value, ValueError)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_dagpb_error(block: bytes) -> None:
    with contextlib.suppress(DagPBError):
        node = decode(block)
        assert decode(encode(node)) == node


names = st.one_of(st.none(), st.text(max_size=8))
links = st.builds(
    PBLink, st.binary(min_size=0, max_size=40), names, st.one_of(st.none(), st.integers(0, 2**64 - 1))
)


@given(
    st.builds(PBNode, st.lists(links, max_size=4).map(tuple), st.one_of(st.none(), st.binary(max_size=40)))
)
def test_every_node_round_trips(node: PBNode) -> None:
    assert decode(encode(node)) == node


def test_unixfs_file_data_is_written_in_field_order_with_unpacked_blocksizes() -> None:
    message = UnixFSData(DataType.FILE, None, 262145, (262144, 1))
    expected = b"\x08\x02" + b"\x18\x81\x80\x10" + b"\x20\x80\x80\x10" + b"\x20\x01"
    assert encode_data(message) == expected
    assert decode_data(expected) == message


def test_unixfs_reads_packed_blocksizes_and_every_field() -> None:
    packed = b"\x08\x02\x18\x03" + b"\x22\x02\x01\x02"
    assert decode_data(packed).blocksizes == (1, 2)
    full = UnixFSData(DataType.HAMT_SHARD, b"xy", 7, (3, 4), 0x22, 256, 0o644, (-5, 999))
    assert decode_data(encode_data(full)) == full
    assert decode_data(encode_data(UnixFSData(DataType.FILE, mtime=(1, None)))).mtime == (1, None)
    assert decode_data(b"\x08\x00\x58\x01") == UnixFSData(DataType.RAW)  # unknown field 11 skipped


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no Type"),
        (b"\x08\x09", "unknown Type 9"),
        (b"\x08", "truncated"),
        (b"\x08\x02\x12\x05ab", "runs past the end"),
        (b"\x0a\x00", "field 1 has wire type 2"),
        (b"\x08\x02\x42\x02\x15\x00", "truncated"),
        (b"\x08\x02\x42\x00", "mtime without Seconds"),
        (b"\x08\x02\x5b", "unsupported wire type 3"),
    ],
)
def test_malformed_unixfs_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(UnixFSError, match=message):
        decode_data(data)


@given(st.binary(max_size=100))
def test_arbitrary_unixfs_bytes_decode_or_raise_unixfs_error(data: bytes) -> None:
    with contextlib.suppress(UnixFSError):
        decode_data(data)


def test_the_protobuf_readers_are_shared() -> None:
    assert dagpb.read_varint(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 0) == (2**64 - 1, 10)
    with pytest.raises(DagPBError, match="over 64 bits"):
        dagpb.read_varint(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 0)


def _file_leaf(data: bytes) -> bytes:
    return dagpb.encode(PBNode((), encode_data(UnixFSData(DataType.FILE, data or None, len(data)))))


def test_published_js_unixfs_vectors() -> None:
    """CIDs @ipld/unixfs publishes in its tests (``test/file.spec.js``: "splits into 3 chunks",
    "write empty with defaults"): leaves are UnixFS File nodes there, and the parent links them
    with an empty, present Name; so the node, link and Data encodings here are theirs byte for byte."""
    assert (
        cid_to_str(make_cid(DAG_PB, _file_leaf(b"")))
        == "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"
    )
    assert len(_file_leaf(b"")) == 6
    leaves = [_file_leaf(bytes([n]) * 262144) for n in (1, 2, 3)]
    assert [cid_to_str(make_cid(DAG_PB, leaf)) for leaf in leaves] == [
        "bafybeihhsdoupgd3fnl3e3367ymsanmikafpllldsdt37jzyoh6nuatowe",
        "bafybeief3dmadxfymhhhrflqytqmlhlz47w6glaxvyzmm6s6tpfb6izzee",
        "bafybeihznihf5g5ibdyoawn7uu3inlyqrxjv63lt6lop6h3w6rzwrp67a4",
    ]
    cid, block = file_node([(make_cid(DAG_PB, leaf), len(leaf), 262144) for leaf in leaves])
    assert cid_to_str(cid) == "bafybeiegda62p2cdi5sono3h3hqjnxwc56z4nocynrj44rz7rtc2p246cy"
    assert len(block) + sum(len(leaf) for leaf in leaves) == 786632
