"""One channel's replicated state: the merge of every delta applied here.

The state is a function of the set of deltas applied, whatever the order
they came in (that is what makes every node converge):

- each op ``(key, value, removed)`` of delta ``D`` adds the **element**
  ``(key, D)`` holding ``value`` (none for a delete) and removes the
  elements ``(key, R)`` for each ``R`` in ``removed``: the values of that key
  its writer had seen. So a write, or a delete, supersedes what its writer
  saw, and nothing else;
- a key's value is the value of its live element with the highest
  ``(height, value bytes, delta CID)``: among writes that did not see each
  other (concurrent ones), the one made on top of more history wins, then the
  larger value, then the larger CID. A key with no live element is absent.

Deltas are applied **bottom-up**: a delta only once everything it links to is
applied here, and its height must be one more than its highest link's. So
the applied set is always closed under ancestry, every element a delta
names in ``removed`` (honest writers only name what they had applied) is
already here, and the heads (applied deltas no applied delta links to) are a
function of the applied set too.

**Local writes** go into the materialized view at once (readers see them)
and into a pending list, in one LevelDB batch; :meth:`Replica.make_delta`
turns the pending writes into a delta later (batching). A pending write
supersedes every element of its key live when its delta is made, so while it
waits, remote deltas for that key only add elements and leave the view
alone: the view already shows what the key will hold once the delta is made.

Keys of the channel's key space (all in one LevelDB batch per change)::

    m <key>  -> the materialized view: the item store's records and indexes
    e <key>  -> the key's live elements: (height, delta CID, value) ...
    q <key>  -> a pending local write: seq(8) then 01 value | 00 (delete)
    a <cid>  -> height                  every delta applied here
    h <cid>  -> height                  the heads

The view holds :class:`~msuite.runtime.store.Store` records (``<ns> r <item
ns> <id>`` -> format, created, updated, payload) and their created/updated
index entries, which each node derives from the records it holds.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from msuite.runtime.store.kv import KV, Prefixed, WriteSet

from .delta import MAX_LINKS, MAX_OPS, MAX_REMOVED, Delta, DeltaError, Op, encode_delta

__all__ = ["DELTA_BUDGET", "MAX_VALUE", "Change", "Replica", "parse_record_key"]

_M, _E, _Q, _A, _H = b"m", b"e", b"q", b"a", b"h"

MAX_VALUE = 1024 * 1024
"""Largest record (an item's stored bytes and header) the shared store takes."""
DELTA_BUDGET = 1536 * 1024
"""A delta stops taking pending writes at about this many bytes (blocks are at most 2 MiB)."""
_HEADER = 17
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Change:
    """A key whose value changed here: its new record (None: deleted)."""

    key: bytes
    value: bytes | None


def parse_record_key(key: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(namespace prefix, item namespace prefix, id)`` of a record key, None for any other key."""
    if not key:
        return None
    n = key[0]
    if n == 0 or len(key) < n + 4 or key[n + 1] != 0x72:  # b"r"
        return None
    m = key[n + 2]
    if m == 0 or len(key) < n + 3 + m + 1:
        return None
    return key[: n + 1], key[n + 2 : n + 3 + m], key[n + 3 + m :]


def _valid_key(key: bytes) -> bool:
    """Whether ``key`` is a record key the item store could have written: UTF-8 namespaces and id,
    the id at most ``MAX_ID_BYTES``."""
    from msuite.runtime.store.store import MAX_ID_BYTES

    parsed = parse_record_key(key)
    if parsed is None or len(parsed[2]) > MAX_ID_BYTES:
        return False
    try:
        for part in (parsed[0][1:], parsed[1][1:], parsed[2]):
            part.decode()
    except UnicodeDecodeError:
        return False
    return True


def _index_keys(key: bytes, record: bytes) -> tuple[bytes, bytes]:
    parsed = parse_record_key(key)
    assert parsed is not None
    ns, item_ns, id = parsed
    return ns + b"c" + item_ns + record[1:9] + id, ns + b"u" + item_ns + record[9:17] + id


def _valid_record(value: bytes) -> bool:
    return len(value) >= _HEADER and value[0] == _FORMAT


_ELEMENT = struct.Struct(">QBI")  # height, CID length, value length


def _pack(elements: Sequence[tuple[int, bytes, bytes]]) -> bytes:
    return b"".join(_ELEMENT.pack(h, len(c), len(v)) + c + v for h, c, v in elements)


def _unpack(data: bytes | None) -> list[tuple[int, bytes, bytes]]:
    out: list[tuple[int, bytes, bytes]] = []
    if not data:
        return out
    at, size = 0, _ELEMENT.size
    while at < len(data):
        height, cid_len, value_len = _ELEMENT.unpack_from(data, at)
        at += size
        cid = data[at : at + cid_len]
        at += cid_len
        out.append((height, cid, data[at : at + value_len]))
        at += value_len
    return out


def _winner(elements: Sequence[tuple[int, bytes, bytes]]) -> bytes | None:
    if not elements:
        return None
    return max(elements, key=lambda e: (e[0], e[2], e[1]))[2]


class Replica:
    """The merged state of one channel in ``kv`` (see the module). Not thread-safe: one event loop."""

    def __init__(self, kv: KV, node: str) -> None:
        self.kv = kv
        self.node = node
        self.view: KV = Prefixed(kv, _M)
        self.heads: dict[bytes, int] = {}
        self.pending: dict[bytes, bytes | None] = {}
        """Local writes not yet in a delta, oldest first."""
        self._seq = 0
        self._made: tuple[Delta, dict[bytes, list[tuple[int, bytes, bytes]]]] | None = None
        """The delta :meth:`make_delta` made last and the live elements it read for each key
        (:meth:`commit_local` uses them instead of reading them again)."""
        self.applied = 0
        self._total: int | None = None
        """Deltas applied since the replica opened (local and remote)."""
        self.conflicts = 0
        """Writes that met a concurrent write of the same key (the merge rule picked the winner)."""
        snap = kv.snapshot()
        try:
            for key, value in snap.scan(_H):
                self.heads[key[1:]] = int.from_bytes(value, "big")
            queued = sorted((value[:8], key[1:], value[8:]) for key, value in snap.scan(_Q))
            for seq, key, value in queued:
                self.pending[key] = value[1:] if value[:1] == b"\x01" else None
                self._seq = int.from_bytes(seq, "big")
        finally:
            snap.close()

    @property
    def height(self) -> int:
        """The highest head's height (0: nothing written yet)."""
        return max(self.heads.values(), default=0)

    def height_of(self, cid: bytes) -> int | None:
        """The height of an applied delta; None when it is not applied here."""
        value = self.kv.get(_A + cid)
        return None if value is None else int.from_bytes(value, "big")

    def count_applied(self) -> int:
        """Every delta applied here, ever (counted once at open, then kept up)."""
        if self._total is None:
            snap = self.kv.snapshot()
            try:
                self._total = sum(1 for _ in snap.keys(_A))
            finally:
                snap.close()
        return self._total

    # ------------------------------------------------------------------ local writes

    def local_write(
        self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes], *, changes: bool = True
    ) -> list[Change]:
        """Apply a write of the item store to the view now, and keep its records as pending.
        The records whose value this changed (``changes=False``: not worked out, an empty list:
        nobody listens, and it saves a read of each record)."""
        for _key, value in puts:
            if len(value) > MAX_VALUE:
                raise ValueError(
                    f"an item of {len(value) - _HEADER} bytes is over the shared store's "
                    f"{MAX_VALUE - _HEADER}-byte limit (keep large data in node.files and store its CID)"
                )
        changed: list[Change] = []
        queued: list[tuple[bytes, bytes | None]] = []
        get = self.kv.get
        for key, value in puts:
            if parse_record_key(key) is not None:
                queued.append((key, value))
                if changes and get(_M + key) != value:
                    changed.append(Change(key, value))
        for key in deletes:
            if parse_record_key(key) is not None:
                queued.append((key, None))
                if changes and get(_M + key) is not None:
                    changed.append(Change(key, None))
        writes = [(_M + k, v) for k, v in puts]
        seq = self._seq
        for key, queued_value in queued:
            seq += 1
            flagged = b"\x00" if queued_value is None else b"\x01" + queued_value
            writes.append((_Q + key, seq.to_bytes(8, "big") + flagged))
        self.kv.write(writes, [_M + k for k in deletes])
        # only once written: a write that failed (a full disk) leaves nothing pending
        self._seq = seq
        pending = self.pending
        for key, queued_value in queued:
            pending.pop(key, None)  # a rewritten key moves to the end: oldest first
            pending[key] = queued_value
        return changed

    def make_delta(self, limit: int = MAX_OPS) -> tuple[bytes, bytes, Delta] | None:
        """``(cid, block, delta)`` of the oldest ``limit`` pending writes, or None when there are
        none. Store the block, then :meth:`commit_local` it (nothing may run in between)."""
        if not self.pending:
            return None
        ops: list[Op] = []
        size = 0
        by_height = sorted(self.heads, key=lambda c: (-self.heads[c], c))
        links = tuple(by_height[:MAX_LINKS])
        budget = DELTA_BUDGET - 40 * len(links)
        every_head = len(links) == len(by_height)
        linked = set(links)
        get = self.kv.get
        read: dict[bytes, list[tuple[int, bytes, bytes]]] = {}
        for key, value in list(self.pending.items())[: min(limit, MAX_OPS)]:
            # what the write supersedes must be under its links: with every head linked that is
            # everything applied here; with more heads than a delta may link, only the linked
            # heads themselves are sure to be (older values stay live, and lose on height)
            elements = read[key] = _unpack(get(_E + key))
            live = [cid for _h, cid, _v in elements]
            removed = tuple((live if every_head else [c for c in live if c in linked])[:MAX_REMOVED])
            weight = len(key) + len(value or b"") + 40 * len(removed) + 16
            if ops and size + weight > budget:
                break  # the rest goes in the next delta
            ops.append(Op(key, value, removed))
            size += weight
        height = 1 + max((self.heads[link] for link in links), default=0)
        delta = Delta(height, links, tuple(ops), self.node)
        cid, block = encode_delta(delta)
        self._made = (delta, read)
        return cid, block, delta

    def commit_local(self, cid: bytes, delta: Delta) -> list[Change]:
        """Record a delta :meth:`make_delta` made (its block stored): its writes stop pending.
        The keys whose value this changed here: none, unless the node had more heads than a
        delta may link (then a value the write could not supersede may outrank it)."""
        made, self._made = self._made, None
        for op in delta.ops:
            self.pending.pop(op.key, None)
        # nothing ran since make_delta read each key's live elements: they still hold
        return self.apply(cid, delta, local=True, _read=made[1] if made and made[0] is delta else None)

    # ------------------------------------------------------------------ applying

    def check(self, delta: Delta) -> None:
        """:class:`DeltaError` unless ``delta`` may be applied now (its links applied here, its
        height right, its writes well-formed)."""
        heights = []
        for link in delta.links:
            height = self.height_of(link)
            if height is None:
                raise DeltaError("a link is not applied here yet")
            heights.append(height)
        if delta.height != 1 + max(heights, default=0):
            raise DeltaError(
                f"height {delta.height} is not one more than its highest link's ({max(heights, default=0)})"
            )
        for op in delta.ops:
            if not _valid_key(op.key):
                raise DeltaError("a key is not an item store record key (UTF-8 names and id)")
            if op.value is not None and not _valid_record(op.value):
                raise DeltaError("a value is not an item store record")

    def apply(
        self,
        cid: bytes,
        delta: Delta,
        *,
        local: bool = False,
        _read: dict[bytes, list[tuple[int, bytes, bytes]]] | None = None,
    ) -> list[Change]:
        """Merge ``delta`` (see the module); the keys whose value changed here. Applying a delta
        twice changes nothing. :class:`DeltaError` when :meth:`check` refuses it.

        ``_read`` (from :meth:`commit_local` only): each key's live elements as
        :meth:`make_delta` read them, so they are not read again."""
        get = self.kv.get
        if get(_A + cid) is not None:
            return []
        if not local:
            self.check(delta)
        writes = WriteSet()
        put, drop = writes.put, writes.drop

        changes: list[Change] = []
        for op in delta.ops:
            removed = set(op.removed)
            known = _unpack(get(_E + op.key)) if _read is None else _read[op.key]
            elements = [e for e in known if e[1] not in removed]
            if op.value is not None:
                elements.append((delta.height, cid, op.value))
            if len(elements) > 1:
                self.conflicts += 1
            if elements:
                put(_E + op.key, _pack(elements))
            else:
                drop(_E + op.key)
            if local:
                drop(_Q + op.key)  # and the view shows the write, unless (more heads than a
                # delta links) a value it could not supersede outranks it: the merge decides
                if _read is not None and len(elements) == (op.value is not None):
                    continue  # the write alone is left: the view shows it already (it was pending)
            elif op.key in self.pending:
                continue  # the view shows the pending write, which will supersede this value
            old = get(_M + op.key)
            new = _winner(elements)
            if new == old:
                continue
            if old is not None:
                for index in _index_keys(op.key, old):
                    drop(_M + index)
            if new is None:
                drop(_M + op.key)
            else:
                put(_M + op.key, new)
                for index in _index_keys(op.key, new):
                    put(_M + index, b"")
            changes.append(Change(op.key, new))
        height = delta.height.to_bytes(8, "big")
        put(_A + cid, height)
        for link in delta.links:
            drop(_H + link)
        put(_H + cid, height)
        writes.write(self.kv)
        for link in delta.links:
            self.heads.pop(link, None)
        self.heads[cid] = delta.height
        self.applied += 1
        if self._total is not None:
            self._total += 1
        return changes
