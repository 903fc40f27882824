"""Bitswap messages on the wire: :func:`encode` and :func:`decode` (Bitswap 1.0.0 to 1.2.0).

The message is the protobuf every Bitswap implementation exchanges::

    message Message {
      message Wantlist {
        enum WantType { Block = 0; Have = 1; }
        message Entry {
          bytes block = 1;          // the CID, binary
          int32 priority = 2;
          bool cancel = 3;
          WantType wantType = 4;    // 1.2.0
          bool sendDontHave = 5;    // 1.2.0
        }
        repeated Entry entries = 1;
        bool full = 2;
      }
      message Block {
        bytes prefix = 1;           // CID version, codec, hash code, digest length (varints)
        bytes data = 2;
      }
      enum BlockPresenceType { Have = 0; DontHave = 1; }
      message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; }
      Wantlist wantlist = 1;
      repeated bytes blocks = 2;               // 1.0.0: the data, CIDv0 implied
      repeated Block payload = 3;              // 1.1.0 and later
      repeated BlockPresence blockPresences = 4;  // 1.2.0
      int32 pendingBytes = 5;
    }

Each message travels as a frame (an unsigned varint length, then the bytes)
on a stream that only its opener writes. The codec is written out here (a
few dozen lines) rather than generated: decoding checks every length against
the buffer and the limits as it goes, and unknown fields are skipped, as
protobuf readers do, so a newer peer's additions pass through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msuite import MsuiteError
from msuite.runtime.varint import encode_uvarint

__all__ = ["MAX_CID", "Entry", "Message", "WireError", "decode", "encode", "encode_parts"]

MAX_CID = 168
"""Longest binary CID accepted in a message (a CIDv1 with a 128-byte digest and room to spare)."""


class WireError(MsuiteError, ValueError):
    """The bytes are not a Bitswap message within the limits."""


@dataclass(slots=True)
class Entry:
    """One wantlist entry: a want (``want_have``: is it there? else send the block) or a cancel."""

    cid: bytes
    priority: int = 1
    cancel: bool = False
    want_have: bool = False
    send_dont_have: bool = False


@dataclass(slots=True)
class Message:
    """A decoded message. ``blocks`` holds (prefix, data); the prefix is ``b""`` for a 1.0.0 block."""

    entries: list[Entry] = field(default_factory=list)
    full: bool = False
    blocks: list[tuple[bytes, bytes]] = field(default_factory=list)
    presences: list[tuple[bytes, bool]] = field(default_factory=list)
    """(CID, have): HAVE or DONT_HAVE."""
    pending_bytes: int = 0

    def empty(self) -> bool:
        return not (self.entries or self.full or self.blocks or self.presences)


# ---------------------------------------------------------------------------- encoding


def _bytes_field(number: int, value: bytes) -> bytes:
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(value)) + value


def _varint_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3) + encode_uvarint(value & 0xFFFFFFFFFFFFFFFF)


def _entry(entry: Entry) -> bytes:
    out = _bytes_field(1, entry.cid)
    if entry.priority:
        out += _varint_field(2, entry.priority)
    if entry.cancel:
        out += _varint_field(3, 1)
    if entry.want_have:
        out += _varint_field(4, 1)
    if entry.send_dont_have:
        out += _varint_field(5, 1)
    return out


def _head(number: int, length: int) -> bytes:
    """The key and length of a bytes field whose ``length`` bytes follow."""
    return encode_uvarint(number << 3 | 2) + encode_uvarint(length)


def encode_parts(message: Message, *, legacy: bool = False) -> list[bytes]:
    """The message's protobuf bytes as pieces, in order: each block's data is a piece of its
    own, the very object in ``message.blocks`` (a sender joins the pieces once, behind its
    frame's length prefix, instead of copying every block into each enclosing field).
    ``legacy`` writes blocks as 1.0.0 does (data only, field 2) and leaves out what 1.0.0
    lacks (presences, want-have entries, send-dont-have flags)."""
    parts: list[bytes] = []
    if message.entries or message.full:
        entries = b"".join(
            _bytes_field(1, _entry(e))
            for e in message.entries
            if not (legacy and e.want_have and not e.cancel)
        )
        wantlist = entries + (_varint_field(2, 1) if message.full else b"")
        parts.append(_bytes_field(1, wantlist))
    for prefix, data in message.blocks:
        if legacy:
            parts.append(_head(2, len(data)))
        else:
            inner = _bytes_field(1, prefix) + _head(2, len(data))
            parts.append(_head(3, len(inner) + len(data)) + inner)
        parts.append(data)
    if not legacy:
        for cid, have in message.presences:
            parts.append(_bytes_field(4, _bytes_field(1, cid) + (b"" if have else _varint_field(2, 1))))
    if message.pending_bytes:
        parts.append(_varint_field(5, message.pending_bytes))
    return parts


def encode(message: Message, *, legacy: bool = False) -> bytes:
    """The message's protobuf bytes (see :func:`encode_parts`)."""
    return b"".join(encode_parts(message, legacy=legacy))


# ---------------------------------------------------------------------------- decoding


def _varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("a varint runs past its end")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("a varint longer than 10 bytes")


def _fields(buf: bytes | memoryview, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(number, wire type, value or start, end) of each field in ``buf[start:end]``."""
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise WireError("a field numbered 0")
        if kind == 0:
            value, pos = _varint(buf, pos, end)
            out.append((number, 0, value, pos))
        elif kind == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise WireError(f"a {length}-byte field runs past the end of its message")
            out.append((number, 2, pos, pos + length))
            pos += length
        elif kind == 1:
            pos += 8
            out.append((number, 1, 0, pos))
        elif kind == 5:
            pos += 4
            out.append((number, 5, 0, pos))
        else:
            raise WireError(f"wire type {kind} (field {number}) is not one this message uses")
        if pos > end:
            raise WireError("a fixed-size field runs past the end of its message")
    return out


def _expect(kind: int, want: int, what: str) -> None:
    if kind != want:
        raise WireError(f"{what} has wire type {kind}, not {want}")


def _cid(buf: bytes | memoryview, start: int, end: int, what: str) -> bytes:
    if end - start > MAX_CID:
        raise WireError(f"{what} of {end - start} bytes is over {MAX_CID}")
    if end == start:
        raise WireError(f"{what} is empty")
    return bytes(buf[start:end])


def _decode_entry(buf: bytes | memoryview, start: int, end: int) -> Entry:
    entry = Entry(b"", priority=0)
    for number, kind, a, b in _fields(buf, start, end):
        if number == 1:
            _expect(kind, 2, "an entry's CID")
            entry.cid = _cid(buf, a, b, "an entry's CID")
        elif number == 2:
            _expect(kind, 0, "an entry's priority")
            entry.priority = a
        elif number == 3:
            _expect(kind, 0, "an entry's cancel flag")
            entry.cancel = bool(a)
        elif number == 4:
            _expect(kind, 0, "an entry's want type")
            entry.want_have = a == 1
        elif number == 5:
            _expect(kind, 0, "an entry's send-dont-have flag")
            entry.send_dont_have = bool(a)
    if not entry.cid:
        raise WireError("a wantlist entry without a CID")
    return entry


def decode(buf: bytes | memoryview, *, max_entries: int = 8192, max_block: int = 2 * 1024 * 1024) -> Message:
    """The message in ``buf``; :class:`WireError` when it is malformed, holds more than
    ``max_entries`` wantlist entries or presences, or a block over ``max_block`` bytes."""
    view = memoryview(buf)
    message = Message()
    counted = 0
    for number, kind, a, b in _fields(view, 0, len(view)):
        if number == 1:
            _expect(kind, 2, "the wantlist")
            for inner, inner_kind, c, d in _fields(view, a, b):
                if inner == 1:
                    _expect(inner_kind, 2, "a wantlist entry")
                    counted += 1
                    if counted > max_entries:
                        raise WireError(f"over {max_entries} wantlist entries in one message")
                    message.entries.append(_decode_entry(view, c, d))
                elif inner == 2:
                    _expect(inner_kind, 0, "the wantlist's full flag")
                    message.full = bool(c)
        elif number == 2:
            _expect(kind, 2, "a block")
            if b - a > max_block:
                raise WireError(f"a block of {b - a} bytes is over the limit of {max_block}")
            message.blocks.append((b"", bytes(view[a:b])))
        elif number == 3:
            _expect(kind, 2, "a block")
            prefix, data = b"", b""
            for inner, inner_kind, c, d in _fields(view, a, b):
                if inner == 1:
                    _expect(inner_kind, 2, "a block's prefix")
                    prefix = _cid(view, c, d, "a block's prefix")
                elif inner == 2:
                    _expect(inner_kind, 2, "a block's data")
                    if d - c > max_block:
                        raise WireError(f"a block of {d - c} bytes is over the limit of {max_block}")
                    data = bytes(view[c:d])
            if not prefix:
                raise WireError("a block without a CID prefix")
            message.blocks.append((prefix, data))
        elif number == 4:
            _expect(kind, 2, "a block presence")
            counted += 1
            if counted > max_entries:
                raise WireError(f"over {max_entries} wantlist entries and presences in one message")
            cid, have = b"", True
            for inner, inner_kind, c, d in _fields(view, a, b):
                if inner == 1:
                    _expect(inner_kind, 2, "a presence's CID")
                    cid = _cid(view, c, d, "a presence's CID")
                elif inner == 2:
                    _expect(inner_kind, 0, "a presence's type")
                    have = c == 0
            if not cid:
                raise WireError("a block presence without a CID")
            message.presences.append((cid, have))
        elif number == 5:
            _expect(kind, 0, "pendingBytes")
            message.pending_bytes = a
    return message
