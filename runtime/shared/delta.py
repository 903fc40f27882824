"""Deltas and head announcements of the shared store, as DAG-CBOR.

A **delta** is one batch of a node's writes, a DAG-CBOR map (CIDv1, codec
dag-cbor, sha2-256)::

    {"v": 1, "height": 7, "node": "12D3Koo...",
     "links": [cid bytes, ...],                  # the writer's heads when it wrote
     "ops": [[key, value_or_null, [cid bytes, ...]], ...]}

``height`` is one more than the highest delta linked (1 with no links).
Each op sets ``key`` (bytes) to ``value`` (bytes) or deletes it (null), and
names the deltas whose values of that key the writer had seen: they are
superseded, whatever the merge rule would say of them (see
:mod:`.replica`).

Every CID in a delta or an announcement is a **binary CIDv1 (DAG-CBOR,
sha2-256) in a byte string**, not an IPLD link (tag 42): decoding a link
costs ``multiformats.CID.decode``, measured at 137 us, which made a delta of
one write 188 us to decode against 25 us with bytes, and a delta of 1,000
writes superseding one value each 150 ms each way against 12 and 6 ms. The
cost is that generic IPLD tools see these references as bytes and do not
follow them; the shared store's own walk is the only reader.

A **heads** message, published on the channel's topic, names the sender's
current heads and their heights: ``{"v": 1, "heads": [[cid bytes, height], ...]}``;
with ``"ask": true`` it also asks every node that hears it to announce its
heads at once (``SharedStore.sync``).

Everything from a peer is checked here against the limits below before any
of it is used; :class:`DeltaError` says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from msuite import MsuiteError
from msuite.runtime.files.cids import DAG_CBOR, make_cid, verify

__all__ = [
    "MAX_BLOCK",
    "MAX_HEADS",
    "MAX_LINKS",
    "Delta",
    "DeltaError",
    "Op",
    "decode_announcement",
    "decode_delta",
    "decode_heads",
    "encode_delta",
    "encode_heads",
]

_DAG_CBOR_SHA256 = b"\x01\x71\x12\x20"

MAX_BLOCK = 2 * 1024 * 1024
"""Largest delta block (Bitswap's largest block)."""
MAX_LINKS = 8192
"""Most links (heads) one delta may have (328 KiB of them; the writes get the rest of a block)."""
MAX_OPS = 100_000
"""Most writes in one delta."""
MAX_KEY = 2048
"""Longest key, in bytes."""
MAX_REMOVED = 1024
"""Most superseded deltas one op may name."""
MAX_HEADS = 256
"""Most heads one announcement may name."""
MAX_HEIGHT = 2**62
"""Highest height taken seriously (a bigger one is a bogus claim)."""


class DeltaError(MsuiteError):
    """A delta or a heads message that does not decode or breaks a rule."""


@dataclass(frozen=True, slots=True)
class Op:
    """One write of a delta: ``key`` set to ``value`` (None: deleted), superseding ``removed``."""

    key: bytes
    value: bytes | None
    removed: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Delta:
    """A decoded delta (CIDs as bytes)."""

    height: int
    links: tuple[bytes, ...]
    ops: tuple[Op, ...]
    node: str


def _head(major: int, n: int) -> bytes:
    """A CBOR item head: major type and argument, in the shortest form (as DAG-CBOR requires)."""
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


_BYTES_HEADS = tuple(_head(2, n) for n in range(256))
"""Heads of byte strings up to 255 bytes (keys, CIDs, most values)."""


def _delta_cbor(delta: Delta) -> bytes:
    """``delta`` as DAG-CBOR: byte for byte what ``dag_cbor.encode`` makes of the map below
    (map keys sorted by length, then bytes; shortest heads), so CIDs are the same as before:
    a delta of 1,000 writes in 0.5-0.7 ms instead of 9.4-9.9 (dag_cbor's pure-Python encoder
    was a third of a shared ``create``). ``tests/runtime/shared/test_delta.py`` compares the
    two on generated deltas."""
    parts: list[bytes] = []
    add = parts.append
    heads = _BYTES_HEADS

    def string(value: bytes) -> None:
        size = len(value)
        add(heads[size] if size < 256 else _head(2, size))
        add(value)

    add(b"\xa5\x61v\x01\x63ops")  # {"v": 1, "ops": [...], "node": ..., "links": [...], "height": n}
    add(_head(4, len(delta.ops)))
    for op in delta.ops:
        add(b"\x83")
        string(op.key)
        if op.value is None:
            add(b"\xf6")
        else:
            string(op.value)
        add(_head(4, len(op.removed)))
        for cid in op.removed:
            string(cid)
    node = delta.node.encode()
    add(b"\x64node")
    add(_head(3, len(node)))
    add(node)
    add(b"\x65links")
    add(_head(4, len(delta.links)))
    for cid in delta.links:
        string(cid)
    add(b"\x66height")
    add(_head(0, delta.height))
    return b"".join(parts)


def encode_delta(delta: Delta) -> tuple[bytes, bytes]:
    """``(cid, block)`` of ``delta``."""
    block = _delta_cbor(delta)
    if len(block) > MAX_BLOCK:
        raise DeltaError(
            f"a delta of {len(block)} bytes is over the {MAX_BLOCK}-byte limit: write less at once"
        )
    return make_cid(DAG_CBOR, block), block


def _raw_cid(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 36 or not value.startswith(_DAG_CBOR_SHA256):
        raise DeltaError(f"{what} is not the binary CIDv1 of a DAG-CBOR block (sha2-256)")
    return value


def _int(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise DeltaError(f"{what} is not a whole number from {low} to {high}")
    return value


def _plain_cbor(data: bytes) -> Any:
    """The value of ``data`` if it is made only of unsigned integers, byte and text strings,
    arrays, maps with text keys, null, true and false, in definite lengths; an exception of any
    kind otherwise. It checks nothing else (shortest heads, key order, duplicate keys):
    :func:`decode_delta` only trusts it for a block that re-encodes to the same bytes."""
    at = 0
    widths = {24: 1, 25: 2, 26: 4, 27: 8}
    simple = {0xF6: None, 0xF5: True, 0xF4: False}

    def item() -> Any:
        nonlocal at
        first = data[at]
        if 0x58 <= first <= 0x59:  # a byte string of 24 to 65,535 bytes: keys, values
            width = first - 0x57
            start = at + 1 + width
            end = start + int.from_bytes(data[at + 1 : start], "big")
            if end > len(data):
                raise ValueError("truncated")
            at = end
            return data[start:end]
        at += 1
        major, info = first >> 5, first & 31
        if major == 7:
            return simple[first]
        if info < 24:
            n = info
        else:
            width = widths[info]
            n = int.from_bytes(data[at : at + width], "big")
            at += width
        if major == 0:
            return n
        if major in (2, 3):
            value = data[at : at + n]
            if len(value) != n:
                raise ValueError("truncated")
            at += n
            return value if major == 2 else value.decode()
        if major == 4:
            return [item() for _ in range(n)]
        if major == 5:
            out = {}
            for _ in range(n):
                key = item()
                if type(key) is not str:
                    raise ValueError("a map key that is not text")
                out[key] = item()
            return out
        raise ValueError("not a plain CBOR item")

    value = item()
    if at != len(data):
        raise ValueError("bytes after the value")
    return value


def decode_delta(cid: bytes, block: bytes) -> Delta:
    """The delta in ``block``; :class:`DeltaError` when it is not one (or not ``cid``'s bytes).

    A block exactly as :func:`encode_delta` writes it (every honest node's) is read by a small
    parser of msuite's own and accepted only if the delta it gives re-encodes to the very same
    bytes, which is then the canonical DAG-CBOR that ``dag_cbor`` would decode to the same
    value: a delta of 1,000 writes in 3.6-3.7 ms instead of 6.8-7.4. Any other block goes to
    ``dag_cbor``, which decides as before (the errors are its and the checks' below);
    ``tests/runtime/shared/test_delta.py`` compares the outcomes on valid, odd and damaged
    blocks."""
    if len(block) > MAX_BLOCK:
        raise DeltaError(f"a block of {len(block)} bytes is over the {MAX_BLOCK}-byte limit")
    if not verify(cid, block):
        raise DeltaError("the block does not match its CID")
    try:
        delta = _delta_of(_plain_cbor(block))
        if _delta_cbor(delta) == block:
            return delta
    except Exception:  # anything unusual: the general path below decides
        pass
    import dag_cbor

    try:
        data = dag_cbor.decode(block)
    except Exception as exc:  # the codec raises several kinds for malformed input
        raise DeltaError(
            f"not DAG-CBOR: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return _delta_of(data)


def _delta_of(data: Any) -> Delta:
    """The delta a decoded block holds; :class:`DeltaError` when it breaks a rule."""
    if not isinstance(data, dict) or type(data.get("v")) is not int or data["v"] != 1:
        raise DeltaError("not a version-1 delta")
    height = _int(data.get("height"), "height", 1, MAX_HEIGHT)
    node = data.get("node")
    if not isinstance(node, str) or len(node) > 256:
        raise DeltaError("node is not a peer id")
    links_in = data.get("links")
    if not isinstance(links_in, list) or len(links_in) > MAX_LINKS:
        raise DeltaError(f"links is not a list of at most {MAX_LINKS} CIDs")
    links = tuple(_raw_cid(link, "a link") for link in links_in)
    if (height == 1) != (not links):
        raise DeltaError("a delta has height 1 exactly when it has no links")
    ops_in = data.get("ops")
    if not isinstance(ops_in, list) or not 1 <= len(ops_in) <= MAX_OPS:
        raise DeltaError(f"ops is not a list of 1 to {MAX_OPS} writes")
    ops: list[Op] = []
    seen: set[bytes] = set()
    for entry in ops_in:
        if not isinstance(entry, list) or len(entry) != 3:
            raise DeltaError("a write is not [key, value, removed]")
        key, value, removed = entry
        if not isinstance(key, bytes) or not 1 <= len(key) <= MAX_KEY:
            raise DeltaError(f"a key is not 1 to {MAX_KEY} bytes")
        if key in seen:
            raise DeltaError("a key is written twice in one delta")
        seen.add(key)
        if value is not None and not isinstance(value, bytes):
            raise DeltaError("a value is neither bytes nor null")
        if not isinstance(removed, list) or len(removed) > MAX_REMOVED:
            raise DeltaError(f"a write's superseded list is not a list of at most {MAX_REMOVED} CIDs")
        ops.append(Op(key, value, tuple(_raw_cid(r, "a superseded delta") for r in removed)))
    return Delta(height, links, tuple(ops), node)


def encode_heads(heads: list[tuple[bytes, int]], *, ask: bool = False) -> bytes:
    """The announcement of ``heads`` (``(cid, height)`` pairs, at most :data:`MAX_HEADS`);
    ``ask``: the receivers should announce theirs now."""
    import dag_cbor

    message: dict[str, Any] = {"v": 1, "heads": [[cid, height] for cid, height in heads[:MAX_HEADS]]}
    if ask:
        message["ask"] = True
    return dag_cbor.encode(message)


def decode_heads(data: bytes) -> list[tuple[bytes, int]]:
    """The ``(cid, height)`` pairs of an announcement; :class:`DeltaError` when it is not one."""
    return decode_announcement(data)[0]


def decode_announcement(data: bytes) -> tuple[list[tuple[bytes, int]], bool]:
    """The ``(cid, height)`` pairs of an announcement and whether it asks for ours;
    :class:`DeltaError` when it is not one."""
    import dag_cbor

    if len(data) > 64 * 1024:
        raise DeltaError("a heads message over 64 KiB")
    try:
        message = dag_cbor.decode(data)
    except Exception as exc:
        raise DeltaError(
            f"not DAG-CBOR: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    if not isinstance(message, dict) or type(message.get("v")) is not int or message["v"] != 1:
        raise DeltaError("not a version-1 heads message")
    heads = message.get("heads")
    if not isinstance(heads, list) or len(heads) > MAX_HEADS:
        raise DeltaError(f"heads is not a list of at most {MAX_HEADS} entries")
    out: list[tuple[bytes, int]] = []
    for entry in heads:
        if not isinstance(entry, list) or len(entry) != 2:
            raise DeltaError("a head is not [CID, height]")
        out.append((_raw_cid(entry[0], "a head"), _int(entry[1], "a head's height", 1, MAX_HEIGHT)))
    ask = message.get("ask", False)
    if type(ask) is not bool:
        raise DeltaError("ask is not true or false")
    return out, ask
