"""Unsigned LEB128 varints, as multiformats and libp2p frame them (the repo's key file, p2p framing).

Here, below both: the repository and the store never import the p2p package.
"""

from __future__ import annotations

__all__ = ["encode_uvarint"]


def encode_uvarint(value: int) -> bytes:
    """``value`` as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError("a varint is unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
