"""UnixFS v1: the ``Data`` message inside a DAG-PB node's Data, and the file and directory nodes.

The schema (proto2, as go-unixfs and js ipfs-unixfs write it)::

    message Data {
      enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
      required DataType Type = 1;
      optional bytes Data = 2;
      optional uint64 filesize = 3;
      repeated uint64 blocksizes = 4;   // not packed: one field per size
      optional uint64 hashType = 5;
      optional uint64 fanout = 6;
      optional uint32 mode = 7;
      optional UnixTime mtime = 8;
    }
    message UnixTime { required int64 Seconds = 1; optional fixed32 FractionalNanoseconds = 2; }

:func:`encode_data` writes the fields in number order, omitting absent ones;
:func:`decode_data` also reads packed blocksizes and skips unknown fields
(as proto2 readers do), and raises :class:`UnixFSError` on anything malformed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple

from msuite import MsuiteError
from msuite.runtime.files import dagpb
from msuite.runtime.files.cids import DAG_PB, make_cid
from msuite.runtime.files.dagpb import read_bytes, read_varint
from msuite.runtime.varint import encode_uvarint

__all__ = [
    "DIRECTORY_DATA",
    "DataType",
    "UnixFSData",
    "UnixFSError",
    "decode_data",
    "directory_node",
    "encode_data",
    "file_node",
]


class UnixFSError(MsuiteError, ValueError):
    """The bytes are not a UnixFS Data message; the message says where they go wrong."""


class DataType(IntEnum):
    """What a UnixFS node is."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


class UnixFSData(NamedTuple):
    """A UnixFS Data message; None (or an empty ``blocksizes``) is an absent field.

    ``mtime`` is ``(seconds, nanoseconds or None)``."""

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None


def _varint_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3) + encode_uvarint(value)


def encode_data(message: UnixFSData) -> bytes:
    """``message`` in protobuf form, fields in number order, blocksizes unpacked."""
    parts = [_varint_field(1, message.type)]
    if message.data is not None:
        parts.append(b"\x12" + encode_uvarint(len(message.data)) + message.data)
    if message.filesize is not None:
        parts.append(_varint_field(3, message.filesize))
    parts.extend(_varint_field(4, size) for size in message.blocksizes)
    if message.hash_type is not None:
        parts.append(_varint_field(5, message.hash_type))
    if message.fanout is not None:
        parts.append(_varint_field(6, message.fanout))
    if message.mode is not None:
        parts.append(_varint_field(7, message.mode))
    if message.mtime is not None:
        seconds, nanos = message.mtime
        body = _varint_field(1, seconds & ((1 << 64) - 1))
        if nanos is not None:
            body += b"\x15" + struct.pack("<I", nanos)
        parts.append(b"\x42" + encode_uvarint(len(body)) + body)
    return b"".join(parts)


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return read_varint(buf, pos, UnixFSError)[1]
    if wire == 1:
        pos += 8
    elif wire == 2:
        return read_bytes(buf, pos, UnixFSError)[1]
    elif wire == 5:
        pos += 4
    else:
        raise UnixFSError(f"unsupported wire type {wire}")
    if pos > len(buf):
        raise UnixFSError("a fixed-size field runs past the end")
    return pos


def _decode_mtime(buf: bytes) -> tuple[int, int | None]:
    seconds: int | None = None
    nanos: int | None = None
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos, UnixFSError)
        number, wire = key >> 3, key & 7
        if number == 1 and wire == 0:
            raw, pos = read_varint(buf, pos, UnixFSError)
            seconds = raw - (1 << 64) if raw >= 1 << 63 else raw
        elif number == 2 and wire == 5:
            if pos + 4 > len(buf):
                raise UnixFSError("the mtime nanoseconds are truncated")
            (nanos,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        elif number in (1, 2):
            raise UnixFSError(f"mtime field {number} has wire type {wire}")
        else:
            pos = _skip(buf, pos, wire)
    if seconds is None:
        raise UnixFSError("an mtime without Seconds")
    return seconds, nanos


def decode_data(data: bytes) -> UnixFSData:
    """The UnixFS message in ``data`` (a DAG-PB node's Data); :class:`UnixFSError` if malformed."""
    buf = bytes(data)
    fields: dict[int, int] = {}
    payload: bytes | None = None
    blocksizes: list[int] = []
    mtime: tuple[int, int | None] | None = None
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos, UnixFSError)
        number, wire = key >> 3, key & 7
        if number in (1, 3, 5, 6, 7) and wire == 0:
            fields[number], pos = read_varint(buf, pos, UnixFSError)
        elif number == 2 and wire == 2:
            payload, pos = read_bytes(buf, pos, UnixFSError)
        elif number == 4 and wire == 0:
            size, pos = read_varint(buf, pos, UnixFSError)
            blocksizes.append(size)
        elif number == 4 and wire == 2:
            packed, pos = read_bytes(buf, pos, UnixFSError)
            inner = 0
            while inner < len(packed):
                size, inner = read_varint(packed, inner, UnixFSError)
                blocksizes.append(size)
        elif number == 8 and wire == 2:
            body, pos = read_bytes(buf, pos, UnixFSError)
            mtime = _decode_mtime(body)
        elif 1 <= number <= 8:
            raise UnixFSError(f"field {number} has wire type {wire}")
        elif number == 0:
            raise UnixFSError("field number 0")
        else:
            pos = _skip(buf, pos, wire)
    if 1 not in fields:
        raise UnixFSError("no Type")
    try:
        kind = DataType(fields[1])
    except ValueError:
        raise UnixFSError(f"unknown Type {fields[1]}") from None
    return UnixFSData(
        kind,
        payload,
        fields.get(3),
        tuple(blocksizes),
        fields.get(5),
        fields.get(6),
        fields.get(7),
        mtime,
    )


DIRECTORY_DATA = encode_data(UnixFSData(DataType.DIRECTORY))
"""The Data of a basic directory: ``Type = Directory`` and nothing else (``08 01``)."""


def file_node(children: Sequence[tuple[bytes, int, int]], data: bytes | None = None) -> tuple[bytes, bytes]:
    """The CIDv1 and block of a UnixFS File node over ``children`` ``(cid, tsize, filesize)``.

    Each link has an empty (present) Name and the child's cumulative size as
    Tsize; the Data holds ``filesize`` (inline ``data`` plus the children's
    sizes) and one blocksize per child, as Kubo writes them."""
    sizes = tuple(size for _, _, size in children)
    inline = data or None  # empty inline data is left out, as js ipfs-unixfs does
    message = UnixFSData(DataType.FILE, inline, len(inline or b"") + sum(sizes), sizes)
    links = tuple(dagpb.PBLink(cid, "", tsize) for cid, tsize, _ in children)
    block = dagpb.encode(dagpb.PBNode(links, encode_data(message)))
    return make_cid(DAG_PB, block), block


def directory_node(entries: Sequence[tuple[str, bytes, int]]) -> tuple[bytes, bytes]:
    """The CIDv1 and block of a basic UnixFS directory of ``(name, cid, tsize)``, sorted by name bytes."""
    ordered = sorted(entries, key=lambda entry: entry[0].encode())
    links = tuple(dagpb.PBLink(cid, name, tsize) for name, cid, tsize in ordered)
    block = dagpb.encode(dagpb.PBNode(links, DIRECTORY_DATA))
    return make_cid(DAG_PB, block), block
