"""CIDs as their binary form (``bytes``), the way Kubo and Bitswap write them.

A CID is kept as the bytes on the wire: they are fast dict keys, and the
string forms are only for people (``cid_to_str``: base32 ``b...`` for v1,
base58btc ``Qm...`` for v0). A CIDv1 is ``varint(1) varint(codec)
multihash``; a CIDv0 is a bare 34-byte sha2-256 multihash (``0x12 0x20``
then the digest) and always means dag-pb. Varints are the unsigned,
minimal, at most 9-byte varints of multiformats.

Hashing goes to :mod:`hashlib` directly (no objects per call): sha2-256,
sha2-512, blake2b-256 and identity are supported; :func:`verify` answers
False for any other hash, and never raises.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

from multiformats import multibase

from msuite import MsuiteError
from msuite.runtime.varint import encode_uvarint

__all__ = [
    "BLAKE2B_256",
    "DAG_CBOR",
    "DAG_PB",
    "IDENTITY",
    "RAW",
    "SHA2_256",
    "SHA2_512",
    "Cid",
    "CidError",
    "cid_from_prefix",
    "cid_from_str",
    "cid_to_str",
    "make_cid",
    "multihash_of",
    "parse_cid",
    "prefix",
    "verify",
    "verify_multihash",
]

RAW = 0x55
"""The codec of a raw block (a file's leaf: its bytes as they are)."""
DAG_PB = 0x70
"""The codec of a DAG-PB node (UnixFS files and directories)."""
DAG_CBOR = 0x71
"""The codec of a DAG-CBOR node (known, never descended into here)."""

IDENTITY = 0x00
SHA2_256 = 0x12
SHA2_512 = 0x13
BLAKE2B_256 = 0xB220

MAX_VARINT_BYTES = 9
"""Longest varint multiformats allows (values below 2**63)."""

_HASHERS: dict[int, tuple[Callable[[bytes], bytes], int]] = {
    SHA2_256: (lambda data: hashlib.sha256(data).digest(), 32),
    SHA2_512: (lambda data: hashlib.sha512(data).digest(), 64),
    BLAKE2B_256: (lambda data: hashlib.blake2b(data, digest_size=32).digest(), 32),
}
"""Hash code -> (digest function, digest length); identity is handled on its own."""

_V1_SHA256_HEADERS = {
    codec: b"\x01" + encode_uvarint(codec) + b"\x12\x20" for codec in (RAW, DAG_PB, DAG_CBOR)
}


class CidError(MsuiteError, ValueError):
    """The bytes or the text are not a CID this module can read; the message says what is wrong."""


class Cid(NamedTuple):
    """A binary CID taken apart (:func:`parse_cid`)."""

    version: int
    codec: int
    hash_code: int
    digest: bytes
    multihash: bytes


def _read_uvarint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it; :class:`CidError` if it is not one."""
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(data):
            raise CidError(f"the {what} varint is truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise CidError(f"the {what} varint is longer than {MAX_VARINT_BYTES} bytes")
    if pos - start > 1 and byte == 0:
        raise CidError(f"the {what} varint is not minimal")
    return value, pos


def _parse_multihash(data: bytes, pos: int) -> tuple[int, bytes]:
    """The hash code and digest of the multihash that runs from ``pos`` to the end of ``data``."""
    code, pos = _read_uvarint(data, pos, "hash code")
    length, pos = _read_uvarint(data, pos, "digest length")
    digest = data[pos:]
    if len(digest) != length:
        raise CidError(f"the multihash announces a {length}-byte digest but carries {len(digest)} bytes")
    known = _HASHERS.get(code)
    if known is not None and length != known[1]:
        raise CidError(f"a 0x{code:x} digest is {known[1]} bytes, not {length}")
    return code, digest


def _is_v0(cid: bytes) -> bool:
    return len(cid) == 34 and cid[0] == SHA2_256 and cid[1] == 32


def parse_cid(cid: bytes) -> Cid:
    """``cid`` taken apart; :class:`CidError` if it is not a well-formed CIDv0 or CIDv1."""
    cid = bytes(cid)
    if _is_v0(cid):
        return Cid(0, DAG_PB, SHA2_256, cid[2:], cid)
    if not cid:
        raise CidError("an empty CID")
    if cid[0] == SHA2_256:
        raise CidError(f"a CIDv0 is a 34-byte sha2-256 multihash, not {len(cid)} bytes")
    version, pos = _read_uvarint(cid, 0, "version")
    if version != 1:
        raise CidError(f"unknown CID version {version}")
    codec, pos = _read_uvarint(cid, pos, "codec")
    code, digest = _parse_multihash(cid, pos)
    return Cid(1, codec, code, digest, cid[pos:])


def make_cid(codec: int, data: bytes) -> bytes:
    """The CIDv1 of ``data`` under ``codec``, hashed with sha2-256."""
    header = _V1_SHA256_HEADERS.get(codec)
    if header is None:
        header = b"\x01" + encode_uvarint(codec) + b"\x12\x20"
    return header + hashlib.sha256(data).digest()


def multihash_of(cid: bytes) -> bytes:
    """The multihash inside ``cid`` (the key a blockstore files the block under)."""
    return parse_cid(cid).multihash


def verify_multihash(multihash: bytes, data: bytes) -> bool:
    """Whether ``data`` hashes to ``multihash``; False for an unknown hash or a malformed multihash."""
    if len(multihash) == 34 and multihash[0] == SHA2_256 and multihash[1] == 32:
        return hashlib.sha256(data).digest() == multihash[2:]
    try:
        code, digest = _parse_multihash(multihash, 0)
    except CidError:
        return False
    if code == IDENTITY:
        return digest == data
    known = _HASHERS.get(code)
    return known is not None and known[0](data) == digest


def verify(cid: bytes, data: bytes) -> bool:
    """Whether ``data`` hashes to the multihash in ``cid``; False (never an error) when it cannot tell."""
    if len(cid) == 36 and cid[0] == 1 and cid[2] == SHA2_256 and cid[3] == 32 and cid[1] < 0x80:
        return hashlib.sha256(data).digest() == cid[4:]
    try:
        multihash = parse_cid(cid).multihash
    except CidError:
        return False
    return verify_multihash(multihash, data)


def cid_to_str(cid: bytes) -> str:
    """``cid`` as text: base58btc ``Qm...`` for a CIDv0, multibase base32 ``b...`` for a CIDv1."""
    parsed = parse_cid(cid)
    if parsed.version == 0:
        return str(multibase.get("base58btc").raw_encoder(bytes(cid)))
    return "b" + str(multibase.get("base32").raw_encoder(bytes(cid)))


def cid_from_str(text: str) -> bytes:
    """The binary CID written as ``text`` (``Qm...``, or any multibase); :class:`CidError` otherwise."""
    try:
        if len(text) == 46 and text.startswith("Qm"):
            raw = bytes(multibase.get("base58btc").raw_decoder(text))
        else:
            raw = bytes(multibase.decode(text))
    except Exception as exc:  # multiformats raises several unrelated types for bad text
        raise CidError(f"{text!r} is not a CID: {exc}") from None
    try:
        parse_cid(raw)
    except CidError as exc:
        raise CidError(f"{text!r} is not a CID: {exc}") from None
    return raw


def prefix(cid: bytes) -> bytes:
    """The Bitswap 1.1 prefix of ``cid``: varints of version, codec, hash code and digest length."""
    parsed = parse_cid(cid)
    return b"".join(
        encode_uvarint(value)
        for value in (parsed.version, parsed.codec, parsed.hash_code, len(parsed.digest))
    )


def cid_from_prefix(prefix: bytes, data: bytes) -> bytes:
    """The CID of ``data`` under a Bitswap ``prefix`` (hashed here, so it matches by construction).

    :class:`CidError` for a malformed prefix, an unsupported hash or digest
    length, or a version 0 prefix that is not dag-pb with sha2-256."""
    prefix = bytes(prefix)
    version, pos = _read_uvarint(prefix, 0, "version")
    codec, pos = _read_uvarint(prefix, pos, "codec")
    code, pos = _read_uvarint(prefix, pos, "hash code")
    length, pos = _read_uvarint(prefix, pos, "digest length")
    if pos != len(prefix):
        raise CidError(f"{len(prefix) - pos} bytes after the CID prefix")
    if code == IDENTITY:
        if length != len(data):
            raise CidError(f"an identity prefix for {length} bytes, but the block has {len(data)}")
        digest = bytes(data)
    else:
        known = _HASHERS.get(code)
        if known is None:
            raise CidError(f"unsupported hash 0x{code:x} in a CID prefix")
        if length != known[1]:
            raise CidError(f"a 0x{code:x} digest is {known[1]} bytes, not {length}")
        digest = known[0](data)
    multihash = encode_uvarint(code) + encode_uvarint(length) + digest
    if version == 0:
        if codec != DAG_PB or code != SHA2_256:
            raise CidError(
                f"a CIDv0 prefix must be dag-pb with sha2-256, not codec 0x{codec:x} hash 0x{code:x}"
            )
        return multihash
    if version != 1:
        raise CidError(f"unknown CID version {version}")
    return encode_uvarint(1) + encode_uvarint(codec) + multihash
