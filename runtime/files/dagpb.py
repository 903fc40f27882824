"""DAG-PB nodes (the IPLD codec under UnixFS): :func:`encode` and a strict :func:`decode`.

The schema, as the IPLD DAG-PB specification gives it::

    message PBLink {
      optional bytes Hash = 1;    // the child's binary CID; required here
      optional string Name = 2;
      optional uint64 Tsize = 3;  // the child's cumulative size
    }
    message PBNode {
      repeated PBLink Links = 2;
      optional bytes Data = 1;
    }

The canonical form writes every link before the data, and a link's fields in
the order Hash, Name, Tsize; a protobuf library would put Data first, so the
wire format is written out here. Decoding accepts only the canonical form
(known fields, the right wire types, links before data, no field twice, a
link with a Hash) and raises :class:`DagPBError` on anything else; it never
raises another exception on arbitrary bytes. A present but empty Name or
Data (``""``, ``b""``) is kept apart from an absent one (None): both are
hashed, so both must survive a round trip.

:func:`read_varint` and :func:`read_bytes` are the protobuf readers
:mod:`msuite.runtime.files.unixfs` shares.
"""

from __future__ import annotations

from typing import NamedTuple

from msuite import MsuiteError
from msuite.runtime.varint import encode_uvarint

__all__ = ["DagPBError", "PBLink", "PBNode", "decode", "encode", "read_bytes", "read_varint"]

_MAX_UINT64 = (1 << 64) - 1


class DagPBError(MsuiteError, ValueError):
    """The bytes are not a canonical DAG-PB node; the message says where they go wrong."""


class PBLink(NamedTuple):
    """A link to a child: its binary CID, its name (None: absent) and cumulative size (None: absent)."""

    hash: bytes
    name: str | None = None
    tsize: int | None = None


class PBNode(NamedTuple):
    """A DAG-PB node: its links in order, then its data (None: absent, ``b""``: present and empty)."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def read_varint(buf: bytes, pos: int, error: type[ValueError] = DagPBError) -> tuple[int, int]:
    """The protobuf varint (at most 10 bytes, below 2**64) at ``buf[pos:]``, and the position after it."""
    value = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise error("a varint is truncated")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise error("a varint is longer than 10 bytes")
    if value > _MAX_UINT64:
        raise error("a varint is over 64 bits")
    return value, pos


def read_bytes(buf: bytes, pos: int, error: type[ValueError] = DagPBError) -> tuple[bytes, int]:
    """The length-delimited field value at ``buf[pos:]``, and the position after it."""
    length, pos = read_varint(buf, pos, error)
    if length > len(buf) - pos:
        raise error(f"a {length}-byte field runs past the end ({len(buf) - pos} bytes left)")
    return buf[pos : pos + length], pos + length


def _bytes_field(number: int, value: bytes) -> bytes:
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(value)) + value


def _encode_link(link: PBLink) -> bytes:
    parts = [_bytes_field(1, link.hash)]
    if link.name is not None:
        parts.append(_bytes_field(2, link.name.encode()))
    if link.tsize is not None:
        parts.append(b"\x18" + encode_uvarint(link.tsize))
    return b"".join(parts)


def encode(node: PBNode) -> bytes:
    """``node`` in the canonical DAG-PB form: the links (field 2) in their order, then the data (field 1)."""
    parts = [_bytes_field(2, _encode_link(link)) for link in node.links]
    if node.data is not None:
        parts.append(_bytes_field(1, node.data))
    return b"".join(parts)


def _decode_link(buf: bytes, index: int) -> PBLink:
    link_hash: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number not in (1, 2, 3):
            raise DagPBError(f"link {index}: unknown field {number}")
        if number <= last:
            what = "twice" if number == last else "out of order"
            raise DagPBError(f"link {index}: field {number} {what}")
        last = number
        if number == 3:
            if wire != 0:
                raise DagPBError(f"link {index}: Tsize has wire type {wire}, not 0 (varint)")
            tsize, pos = read_varint(buf, pos)
            continue
        if wire != 2:
            raise DagPBError(f"link {index}: field {number} has wire type {wire}, not 2 (bytes)")
        value, pos = read_bytes(buf, pos)
        if number == 1:
            link_hash = value
        else:
            try:
                name = value.decode()
            except UnicodeDecodeError:
                raise DagPBError(f"link {index}: the Name is not UTF-8") from None
    if link_hash is None:
        raise DagPBError(f"link {index} has no Hash")
    return PBLink(link_hash, name, tsize)


def decode(block: bytes) -> PBNode:
    """The node in ``block``; :class:`DagPBError` unless it is in the canonical DAG-PB form."""
    buf = bytes(block)
    links: list[PBLink] = []
    data: bytes | None = None
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number not in (1, 2):
            raise DagPBError(f"unknown field {number} in a node")
        if wire != 2:
            raise DagPBError(f"field {number} of a node has wire type {wire}, not 2 (bytes)")
        if data is not None:
            raise DagPBError("Data appears twice" if number == 1 else "a link after the Data")
        value, pos = read_bytes(buf, pos)
        if number == 1:
            data = value
        else:
            links.append(_decode_link(value, len(links)))
    return PBNode(tuple(links), data)
