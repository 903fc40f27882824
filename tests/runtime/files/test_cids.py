"""CIDs: the binary and string forms Kubo prints, the Bitswap prefix, verification.

Expected CIDs are Kubo's own (``ipfs add --cid-version=1 --raw-leaves`` of an
empty file, ``ipfs add`` CIDv0 of an empty directory), not values this module
computed."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import multibase

from msuite import MsuiteError
from msuite.runtime.files.cids import (
    BLAKE2B_256,
    DAG_CBOR,
    DAG_PB,
    IDENTITY,
    RAW,
    SHA2_256,
    SHA2_512,
    CidError,
    cid_from_prefix,
    cid_from_str,
    cid_to_str,
    make_cid,
    multihash_of,
    parse_cid,
    prefix,
    verify,
)
from msuite.runtime.varint import encode_uvarint

EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
EMPTY_DIR_BLOCK = b"\x0a\x02\x08\x01"


def test_the_codes_are_the_multicodec_table() -> None:
    assert (RAW, DAG_PB, DAG_CBOR) == (0x55, 0x70, 0x71)
    assert (IDENTITY, SHA2_256, SHA2_512, BLAKE2B_256) == (0x00, 0x12, 0x13, 0xB220)


def test_the_empty_raw_block_has_kubos_cid() -> None:
    cid = make_cid(RAW, b"")
    assert cid_to_str(cid) == EMPTY_RAW
    assert cid_from_str(EMPTY_RAW) == cid
    assert cid == b"\x01\x55\x12\x20" + hashlib.sha256(b"").digest()


def test_a_cidv0_is_a_bare_multihash_meaning_dag_pb() -> None:
    cid = cid_from_str(EMPTY_DIR_V0)
    assert cid == b"\x12\x20" + hashlib.sha256(EMPTY_DIR_BLOCK).digest()
    parsed = parse_cid(cid)
    assert (parsed.version, parsed.codec, parsed.hash_code) == (0, DAG_PB, SHA2_256)
    assert parsed.multihash == cid == multihash_of(cid)
    assert cid_to_str(cid) == EMPTY_DIR_V0
    assert verify(cid, EMPTY_DIR_BLOCK)


def test_parse_takes_a_cidv1_apart() -> None:
    cid = make_cid(DAG_PB, b"x")
    parsed = parse_cid(cid)
    assert parsed.version == 1 and parsed.codec == DAG_PB and parsed.hash_code == SHA2_256
    assert parsed.digest == hashlib.sha256(b"x").digest()
    assert parsed.multihash == cid[2:] == multihash_of(cid)


def test_other_multibases_are_read() -> None:
    cid = make_cid(RAW, b"abc")
    assert cid_from_str(multibase.encode(cid, "base58btc")) == cid
    assert cid_from_str(multibase.encode(cid, "base16")) == cid
    assert cid_from_str(cid_to_str(cid).upper()) == cid


@pytest.mark.parametrize(
    ("cid", "message"),
    [
        (b"", "empty"),
        (b"\x01\x55\x12", "truncated"),
        (b"\x01\x55\x12\x20" + bytes(31), "32-byte digest but carries 31"),
        (b"\x01\x55\x12\x1f" + bytes(31), "0x12 digest is 32 bytes, not 31"),
        (b"\x02\x55\x12\x20" + bytes(32), "unknown CID version 2"),
        (b"\x00\x70\x12\x20" + bytes(32), "unknown CID version 0"),
        (b"\x12\x20" + bytes(31), "CIDv0 is a 34-byte"),
        (b"\x81\x00\x55\x12\x20" + bytes(32), "not minimal"),
        (b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 9"),
    ],
)
def test_malformed_cids_are_refused_clearly(cid: bytes, message: str) -> None:
    with pytest.raises(CidError, match=message) as caught:
        parse_cid(cid)
    assert isinstance(caught.value, MsuiteError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "text", ["", "Qm", "hello", "bafy!!", "zzzz", "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3N0"]
)
def test_bad_text_names_itself(text: str) -> None:
    with pytest.raises(CidError) as caught:
        cid_from_str(text)
    assert repr(text) in str(caught.value)


@given(st.binary(max_size=64))
def test_parse_raises_only_cid_errors(data: bytes) -> None:
    with contextlib.suppress(CidError):
        parse_cid(data)


def test_verify_checks_each_supported_hash() -> None:
    data = b"block"
    for code, digest in [
        (SHA2_256, hashlib.sha256(data).digest()),
        (SHA2_512, hashlib.sha512(data).digest()),
        (BLAKE2B_256, hashlib.blake2b(data, digest_size=32).digest()),
        (IDENTITY, data),
    ]:
        cid = b"\x01\x55" + encode_uvarint(code) + encode_uvarint(len(digest)) + digest
        assert verify(cid, data)
        assert not verify(cid, data + b"!")
        assert cid_from_prefix(prefix(cid), data) == cid


def test_verify_never_raises() -> None:
    assert not verify(b"\x01\x55\x99\x01\x02" + bytes(2), b"")  # an unknown hash
    assert not verify(b"garbage", b"")
    assert not verify(b"", b"")


def test_the_prefix_is_four_varints() -> None:
    cid = make_cid(DAG_PB, b"node")
    assert prefix(cid) == b"\x01\x70\x12\x20"
    assert prefix(cid_from_str(EMPTY_DIR_V0)) == b"\x00\x70\x12\x20"
    assert cid_from_prefix(b"\x01\x70\x12\x20", b"node") == cid
    assert cid_from_prefix(b"\x00\x70\x12\x20", EMPTY_DIR_BLOCK) == cid_from_str(EMPTY_DIR_V0)


@pytest.mark.parametrize(
    ("raw_prefix", "message"),
    [
        (b"\x00\x55\x12\x20", "CIDv0 prefix must be dag-pb"),
        (b"\x01\x55\x99\x01\x20", "unsupported hash"),
        (b"\x01\x55\x12\x10", "not 16"),
        (b"\x01\x55\x12", "truncated"),
        (b"\x01\x55\x12\x20\x00", "after the CID prefix"),
        (b"\x02\x55\x12\x20", "unknown CID version 2"),
    ],
)
def test_bad_prefixes_are_refused(raw_prefix: bytes, message: str) -> None:
    with pytest.raises(CidError, match=message):
        cid_from_prefix(raw_prefix, b"data")
