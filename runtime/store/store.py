"""The node's item store: create, read, update, delete and list, over a KV backend.

Key layout inside the store's key space (``ns`` is the namespace in UTF-8,
prefixed by its length in one byte, so no namespace or id can collide with
another, whatever characters they hold)::

    b"r" ns id              -> b"\\x01" created(8) updated(8) payload   the record
    b"c" ns created(8) id   -> b""                                     created index
    b"u" ns updated(8) id   -> b""                                     updated index

Times are nanoseconds since the epoch, big-endian, from a clock that never
repeats a value, so index order is creation (or update) order and ties are
impossible. A record and its index entries are always written in one atomic
batch, so after a crash they agree.

Semantics (and where they differ from go-msuite's gkvstore):

- ``update`` of a missing item raises :class:`NotFound`; it never creates one
  (use ``create``). ``delete`` of a missing item raises :class:`NotFound` too.
- ``list`` applies ``filter`` before paging, for every sort; pages count from
  0; ``limit=0`` means no limit (and then only page 0 has items); an unknown
  sort is an error at once.
- Point operations run on the event loop (faster than a thread hop, see
  ``bench/``); ``list`` and ``verify`` scan a snapshot in a worker thread, so
  a ``filter`` must be a plain function that doesn't touch the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, TypeVar

from .items import Codec, codec_for, new_id
from .kv import KV, Snapshot

__all__ = [
    "AlreadyExists",
    "Batch",
    "DecodeError",
    "NotFound",
    "Sort",
    "Store",
    "StoreError",
]

T = TypeVar("T")

_RECORD, _CREATED, _UPDATED = b"r", b"c", b"u"
_FORMAT = b"\x01"
_HEADER = 17  # format byte + two 8-byte times
MAX_ID_BYTES = 1024


class StoreError(Exception):
    """Base of the store's errors."""


class NotFound(StoreError, KeyError):
    """No item with that namespace and id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(StoreError):
    """``create`` found an item with the same namespace and id."""


class DecodeError(StoreError):
    """Stored bytes could not be turned back into an item; the message names it."""


class Sort(StrEnum):
    """Orders ``list`` can return."""

    NATURAL = "natural"
    """By id (byte order)."""
    CREATED_ASC = "created_asc"
    CREATED_DESC = "created_desc"
    UPDATED_ASC = "updated_asc"
    UPDATED_DESC = "updated_desc"


def _namespace_key(namespace: str) -> bytes:
    raw = namespace.encode()
    if not 1 <= len(raw) <= 255:
        raise ValueError("a namespace is 1-255 bytes of UTF-8")
    return bytes((len(raw),)) + raw


def _id_bytes(id: str) -> bytes:
    raw = id.encode()
    if not 1 <= len(raw) <= MAX_ID_BYTES:
        raise ValueError(f"an id is 1-{MAX_ID_BYTES} bytes of UTF-8")
    return raw


def _time(ns: int) -> bytes:
    return ns.to_bytes(8, "big")


def _header(value: bytes) -> tuple[int, int]:
    return int.from_bytes(value[1:9], "big"), int.from_bytes(value[9:17], "big")


@dataclass(frozen=True)
class _Op:
    action: Literal["create", "update", "delete"]
    codec: Codec[Any]
    id: str
    item: Any = None


class Store:
    """Typed items in namespaces, with created/updated indexes. See the module docs."""

    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self._last_ns = 0

    def _now(self) -> int:
        now = time.time_ns()
        if now <= self._last_ns:
            now = self._last_ns + 1
        self._last_ns = now
        return now

    # ------------------------------------------------------------------ single operations

    async def create(self, item: T) -> T:
        """Store a new item; assigns an id when it has none. Raises AlreadyExists."""
        (stored,) = self._apply([self._op("create", item)])
        return stored  # type: ignore[no-any-return]

    async def read(self, kind: type[T], id: str) -> T:
        """The item of class ``kind`` with this id. Raises NotFound."""
        codec = codec_for(kind)
        value = self._kv.get(_RECORD + _namespace_key(codec.namespace) + _id_bytes(id))
        if value is None:
            raise NotFound(f"{codec.namespace} {id!r} not found")
        return self._decode(codec, id, value)

    async def update(self, item: T) -> T:
        """Replace a stored item (its created time is kept). Raises NotFound."""
        (stored,) = self._apply([self._op("update", item)])
        return stored  # type: ignore[no-any-return]

    async def delete(self, kind: type[Any], id: str) -> None:
        """Remove the item of class ``kind`` with this id. Raises NotFound."""
        self._apply([_Op("delete", codec_for(kind), id)])

    async def list(
        self,
        kind: type[T],
        *,
        page: int = 0,
        limit: int = 0,
        sort: Sort | str = Sort.NATURAL,
        filter: Callable[[T], bool] | None = None,
    ) -> builtins.list[T]:
        """One page of the items of class ``kind``, in ``sort`` order, ``filter`` applied first."""
        order = Sort(sort)
        if page < 0 or limit < 0:
            raise ValueError("page and limit must be 0 or more")
        codec = codec_for(kind)
        return await asyncio.to_thread(self._list, codec, page, limit, order, filter)

    def batch(self) -> Batch:
        """Several writes that land together or not at all: ``async with store.batch() as b``."""
        return Batch(self)

    async def verify(self) -> builtins.list[str]:
        """Problems where records and indexes disagree (empty when consistent)."""
        return await asyncio.to_thread(self._verify)

    # ------------------------------------------------------------------ internals

    def _op(self, action: Literal["create", "update"], item: Any) -> _Op:
        codec = codec_for(type(item))
        id = codec.id_of(item)
        if id is None:
            if action == "update":
                raise ValueError(f"cannot update a {codec.kind.__name__} without an id")
            id = new_id()
        _id_bytes(id)
        return _Op(action, codec, id, item)

    def _apply(self, ops: Sequence[_Op]) -> builtins.list[Any]:
        """Check every operation against the store and the earlier ones, then write once."""
        pending: dict[bytes, bytes | None] = {}
        puts: dict[bytes, bytes] = {}
        deletes: set[bytes] = set()
        results: builtins.list[Any] = []

        def put(key: bytes, value: bytes) -> None:
            puts[key] = value
            deletes.discard(key)

        def drop(key: bytes) -> None:
            puts.pop(key, None)
            deletes.add(key)

        for op in ops:
            ns = _namespace_key(op.codec.namespace)
            raw_id = _id_bytes(op.id)
            record = _RECORD + ns + raw_id
            old = pending[record] if record in pending else self._kv.get(record)
            if op.action == "create":
                if old is not None:
                    raise AlreadyExists(f"{op.codec.namespace} {op.id!r} already exists")
                now = self._now()
                created = now
            elif old is None:
                raise NotFound(f"{op.codec.namespace} {op.id!r} not found")
            else:
                created, updated = _header(old)
                drop(_UPDATED + ns + _time(updated) + raw_id)
                if op.action == "delete":
                    drop(record)
                    drop(_CREATED + ns + _time(created) + raw_id)
                    pending[record] = None
                    results.append(None)
                    continue
                now = self._now()
            stored = op.codec.stamped(op.item, id=op.id, created_ns=created, updated_ns=now)
            value = _FORMAT + _time(created) + _time(now) + op.codec.encode(stored)
            put(record, value)
            put(_CREATED + ns + _time(created) + raw_id, b"")
            put(_UPDATED + ns + _time(now) + raw_id, b"")
            pending[record] = value
            results.append(stored)
        self._kv.write(list(puts.items()), list(deletes))
        return results

    def _decode(self, codec: Codec[T], id: str, value: bytes) -> T:
        if value[:1] != _FORMAT or len(value) < _HEADER:
            raise DecodeError(f"{codec.namespace} {id!r}: stored record has an unknown format")
        try:
            return codec.decode(value[_HEADER:])
        except Exception as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DecodeError(
                f"{codec.namespace} {id!r}: stored bytes do not decode as {codec.kind.__name__}: {first_line}"
            ) from exc

    def _rows(self, snap: Snapshot, ns: bytes, order: Sort) -> Iterator[tuple[str, bytes]]:
        if order is Sort.NATURAL:
            prefix = _RECORD + ns
            for key, value in snap.scan(prefix):
                yield key[len(prefix) :].decode(), value
            return
        index = _CREATED if order in (Sort.CREATED_ASC, Sort.CREATED_DESC) else _UPDATED
        prefix = index + ns
        reverse = order in (Sort.CREATED_DESC, Sort.UPDATED_DESC)
        for key, _ in snap.scan(prefix, reverse=reverse):
            raw_id = key[len(prefix) + 8 :]
            record = snap.get(_RECORD + ns + raw_id)
            if record is None:  # impossible while writes stay atomic; say so loudly
                raise StoreError(f"index entry without its record: {raw_id.decode(errors='replace')!r}")
            yield raw_id.decode(), record

    def _list(
        self, codec: Codec[T], page: int, limit: int, order: Sort, keep: Callable[[T], bool] | None
    ) -> builtins.list[T]:
        skip = page * limit if limit else (0 if page == 0 else -1)
        if skip < 0:
            return []
        out: builtins.list[T] = []
        snap = self._kv.snapshot()
        try:
            for id, value in self._rows(snap, _namespace_key(codec.namespace), order):
                item = self._decode(codec, id, value)
                if keep is not None and not keep(item):
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append(item)
                if limit and len(out) == limit:
                    break
        finally:
            snap.close()
        return out

    def _verify(self) -> builtins.list[str]:
        problems: builtins.list[str] = []
        snap = self._kv.snapshot()
        try:
            records: dict[bytes, tuple[int, int]] = {}
            for key, value in snap.scan(_RECORD):
                records[key[1:]] = _header(value)
            indexed: dict[bytes, set[bytes]] = {_CREATED: set(), _UPDATED: set()}
            for tag, slot in ((_CREATED, 0), (_UPDATED, 1)):
                for key, _ in snap.scan(tag):
                    rest = key[1:]
                    ns_len = rest[0] + 1
                    ns, stamp, raw_id = rest[:ns_len], rest[ns_len : ns_len + 8], rest[ns_len + 8 :]
                    header = records.get(ns + raw_id)
                    if header is None:
                        problems.append(f"{tag.decode()}-index entry without a record: {key!r}")
                    elif int.from_bytes(stamp, "big") != header[slot]:
                        problems.append(f"{tag.decode()}-index entry with a stale time: {key!r}")
                    indexed[tag].add(ns + raw_id)
            for record in records:
                for tag, entries in indexed.items():
                    if record not in entries:
                        problems.append(f"record missing from the {tag.decode()}-index: {record!r}")
        finally:
            snap.close()
        return problems


class Batch:
    """Writes collected in memory and applied in one atomic write on exit.

    Checks (exists, not found) run when the batch commits, against the store
    and the batch's earlier writes; if any fails, nothing is written. An
    exception inside the ``async with`` block discards the batch.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ops: list[_Op] = []
        self.results: list[Any] = []
        """After commit: each operation's stored item (None for deletes), in order."""

    def create(self, item: T) -> str:
        """Queue a create; returns the item's id (assigned now when it has none)."""
        op = self._store._op("create", item)
        self._ops.append(op)
        return op.id

    def update(self, item: Any) -> None:
        """Queue an update."""
        self._ops.append(self._store._op("update", item))

    def delete(self, kind: type[Any], id: str) -> None:
        """Queue a delete."""
        self._ops.append(_Op("delete", codec_for(kind), id))

    async def commit(self) -> list[Any]:
        """Apply the queued writes together (also done on leaving ``async with``)."""
        ops, self._ops = self._ops, []
        self.results = self._store._apply(ops) if ops else []
        return self.results

    async def __aenter__(self) -> Batch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.commit()
        else:
            self._ops = []
