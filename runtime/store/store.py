"""The node's item store: create, read, update, delete and list, over a KV backend.

Key layout after the store's prefix (``ns`` is the namespace in UTF-8,
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
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, TypeVar

from msuite import MsuiteError

from .items import Codec, codec_for, new_id
from .kv import KV, Snapshot, WriteSet

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


class StoreError(MsuiteError):
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
    if not isinstance(id, str):
        raise TypeError(f"an id is a str, not {type(id).__name__}")
    try:
        raw = id.encode()
    except UnicodeEncodeError:
        raise ValueError("an id must be valid text (no lone surrogates)") from None
    if not 1 <= len(raw) <= MAX_ID_BYTES:
        raise ValueError(f"an id is 1-{MAX_ID_BYTES} bytes of UTF-8")
    return raw


def _prefix_bytes(prefix: str) -> bytes:
    if not isinstance(prefix, str):
        raise TypeError(f"a prefix is a str, not {type(prefix).__name__}")
    return prefix.encode()


def _time(ns: int) -> bytes:
    return ns.to_bytes(8, "big")


def _header(value: bytes) -> tuple[int, int]:
    return int.from_bytes(value[1:9], "big"), int.from_bytes(value[9:17], "big")


@dataclass(frozen=True, slots=True)
class _Space:
    """Key prefixes of one item class's namespace."""

    codec: Codec[Any]
    record: bytes
    created: bytes
    updated: bytes
    decode: Callable[[bytes], Any]


@dataclass(frozen=True)
class _Op:
    action: Literal["create", "update", "delete"]
    space: _Space
    id: str
    item: Any = None


class Store:
    """Typed items in namespaces, with created/updated indexes. See the module docs.

    ``prefix`` places the store's keys inside a shared database (the
    repository gives it ``b"store\\x00"``).
    """

    def __init__(self, kv: KV, prefix: bytes = b"") -> None:
        self._kv = kv
        self._get = kv.get
        self._prefix = prefix
        self._spaces: dict[type[Any], _Space] = {}
        self._last_ns = 0

    def _now(self) -> int:
        now = time.time_ns()
        if now <= self._last_ns:
            now = self._last_ns + 1
        self._last_ns = now
        return now

    def _space(self, kind: type[Any]) -> _Space:
        space = self._spaces.get(kind)
        if space is None:
            codec = codec_for(kind)
            for other in self._spaces.values():
                if other.codec.namespace == codec.namespace:
                    raise TypeError(
                        f"{kind.__module__}.{kind.__qualname__} and {other.codec.kind.__module__}."
                        f"{other.codec.kind.__qualname__} both use namespace {codec.namespace!r}: "
                        "give one of them another `store_namespace`"
                    )
            ns = _namespace_key(codec.namespace)
            p = self._prefix
            space = _Space(codec, p + _RECORD + ns, p + _CREATED + ns, p + _UPDATED + ns, codec.decode)
            self._spaces[kind] = space
        return space

    # ------------------------------------------------------------------ single operations

    async def create(self, item: T) -> T:
        """Store a new item; assigns an id when it has none. Raises AlreadyExists."""
        # the hottest write: the helpers' work written out inline (see bench/bench_store.py)
        kind = type(item)
        space = self._spaces.get(kind) or self._space(kind)
        codec: Codec[T] = space.codec
        id = getattr(item, "id", None)
        given = True
        if type(id) is not str or not id:  # no id, or one of another type: id_of decides
            id = codec.id_of(item)  # (raises for an id that is not a str)
            if id is None:
                given, id = False, new_id()
        raw = _id_bytes(id)
        record = space.record + raw
        if self._get(record) is not None:
            raise AlreadyExists(f"{codec.namespace} {id!r} already exists")
        now = time.time_ns()
        if now <= self._last_ns:
            now = self._last_ns + 1
        self._last_ns = now
        stored = (
            codec.stamped(item, id=None if given else id, created_ns=now, updated_ns=now)
            if codec.stamps or not given
            else item
        )
        t = now.to_bytes(8, "big")
        self._kv.write(
            (
                (record, _FORMAT + t + t + codec.encode(stored)),
                (space.created + t + raw, b""),
                (space.updated + t + raw, b""),
            )
        )
        return stored

    async def read(self, kind: type[T], id: str) -> T:
        """The item of class ``kind`` with this id. Raises NotFound."""
        space = self._spaces.get(kind) or self._space(kind)
        try:
            value = self._get(space.record + id.encode())
        except (AttributeError, UnicodeEncodeError):
            _id_bytes(id)  # raises the clear error
            raise
        if value is None:
            raise NotFound(f"{space.codec.namespace} {id!r} not found")
        if value[0] == 1:  # format 1, the common case inline; _decode explains failures
            try:
                return space.decode(value[_HEADER:])  # type: ignore[no-any-return]
            except Exception:
                pass
        codec: Codec[T] = space.codec
        return self._decode(codec, id, value)

    async def exists(self, kind: type[Any], id: str) -> bool:
        """Whether an item of class ``kind`` with this id is stored (nothing is decoded)."""
        space = self._spaces.get(kind) or self._space(kind)
        return self._get(space.record + _id_bytes(id)) is not None

    async def update(self, item: T) -> T:
        """Replace a stored item (its created time is kept). Raises NotFound."""
        space = self._space(type(item))
        codec: Codec[T] = space.codec
        id = codec.id_of(item)
        if id is None:
            raise ValueError(f"cannot update a {codec.kind.__name__} without an id")
        raw = _id_bytes(id)
        record = space.record + raw
        old = self._kv.get(record)
        if old is None:
            raise NotFound(f"{codec.namespace} {id!r} not found")
        created, updated = _header(old)
        now = self._now()
        stored = codec.stamped(item, id=None, created_ns=created, updated_ns=now)
        c, t = _time(created), _time(now)
        self._kv.write(
            [(record, _FORMAT + c + t + codec.encode(stored)), (space.updated + t + raw, b"")],
            [space.updated + _time(updated) + raw],
        )
        return stored

    async def delete(self, kind: type[Any], id: str) -> None:
        """Remove the item of class ``kind`` with this id. Raises NotFound."""
        self._apply([_Op("delete", self._space(kind), id)])

    async def list(
        self,
        kind: type[T],
        *,
        page: int = 0,
        limit: int = 0,
        sort: Sort | str = Sort.NATURAL,
        filter: Callable[[T], bool] | None = None,
        prefix: str = "",
    ) -> builtins.list[T]:
        """One page of the items of class ``kind``, in ``sort`` order, ``filter`` applied first;
        with ``prefix``, only the items whose id starts with it (natural order scans just them)."""
        order = Sort(sort)
        if page < 0 or limit < 0:
            raise ValueError("page and limit must be 0 or more")
        space = self._space(kind)
        start = _prefix_bytes(prefix)
        return await asyncio.to_thread(self._list, space, page, limit, order, filter, start=start)

    async def count(
        self, kind: type[T], *, filter: Callable[[T], bool] | None = None, prefix: str = ""
    ) -> int:
        """How many items of class ``kind`` there are (with ``filter``: how many it keeps; with
        ``prefix``: only those whose id starts with it).

        The total of a paged :meth:`list`. Without a filter the keys answer (the created index,
        or the records' keys under a prefix): no record is read or decoded; a filter reads
        every item."""
        space = self._space(kind)
        return await asyncio.to_thread(self._count, space, filter, _prefix_bytes(prefix))

    def batch(self) -> Batch:
        """Several writes that land together or not at all: ``async with store.batch() as b``."""
        return Batch(self)

    async def verify(self) -> builtins.list[str]:
        """Problems where records and indexes disagree (empty when consistent)."""
        return await asyncio.to_thread(self._verify)

    # ------------------------------------------------------------------ internals

    def _op(self, action: Literal["create", "update"], item: Any) -> _Op:
        space = self._space(type(item))
        id = space.codec.id_of(item)
        if id is None:
            if action == "update":
                raise ValueError(f"cannot update a {space.codec.kind.__name__} without an id")
            id = new_id()
        _id_bytes(id)
        return _Op(action, space, id, item)

    def _apply(self, ops: Sequence[_Op]) -> builtins.list[Any]:
        """Check every operation against the store and the earlier ones, then write once."""
        pending: dict[bytes, bytes | None] = {}
        changes = WriteSet()
        put, drop = changes.put, changes.drop
        results: builtins.list[Any] = []

        for op in ops:
            space, codec = op.space, op.space.codec
            raw_id = _id_bytes(op.id)
            record = space.record + raw_id
            old = pending[record] if record in pending else self._kv.get(record)
            if op.action == "create":
                if old is not None:
                    raise AlreadyExists(f"{codec.namespace} {op.id!r} already exists")
                now = self._now()
                created = now
            elif old is None:
                raise NotFound(f"{codec.namespace} {op.id!r} not found")
            else:
                created, updated = _header(old)
                drop(space.updated + _time(updated) + raw_id)
                if op.action == "delete":
                    drop(record)
                    drop(space.created + _time(created) + raw_id)
                    pending[record] = None
                    results.append(None)
                    continue
                now = self._now()
            stored = codec.stamped(op.item, id=op.id, created_ns=created, updated_ns=now)
            value = _FORMAT + _time(created) + _time(now) + codec.encode(stored)
            put(record, value)
            put(space.created + _time(created) + raw_id, b"")
            put(space.updated + _time(now) + raw_id, b"")
            pending[record] = value
            results.append(stored)
        changes.write(self._kv)
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

    def _rows(
        self, snap: Snapshot, space: _Space, order: Sort, start: bytes = b""
    ) -> Generator[tuple[str, bytes]]:
        if order is Sort.NATURAL:
            cut = len(space.record)
            for key, value in snap.scan(space.record + start):
                yield key[cut:].decode(), value
            return
        index = space.created if order in (Sort.CREATED_ASC, Sort.CREATED_DESC) else space.updated
        reverse = order in (Sort.CREATED_DESC, Sort.UPDATED_DESC)
        cut = len(index) + 8
        record, get = space.record, snap.get
        for key in snap.keys(index, reverse=reverse):
            raw_id = key[cut:]
            if start and not raw_id.startswith(start):
                continue
            found = get(record + raw_id)
            if found is None:  # impossible while writes stay atomic; say so loudly
                raise StoreError(f"index entry without its record: {raw_id.decode(errors='replace')!r}")
            yield raw_id.decode(), found

    def _count(self, space: _Space, keep: Callable[[T], bool] | None, start: bytes = b"") -> int:
        snap = self._kv.snapshot()
        try:
            if keep is None:
                return sum(1 for _ in snap.keys(space.record + start if start else space.created))
            codec: Codec[T] = space.codec
            rows = self._rows(snap, space, Sort.NATURAL, start)
            try:
                return sum(1 for id, value in rows if keep(self._decode(codec, id, value)))
            finally:
                rows.close()  # close the iterator before its snapshot
        finally:
            snap.close()

    def _list(
        self,
        space: _Space,
        page: int,
        limit: int,
        order: Sort,
        keep: Callable[[T], bool] | None,
        *,
        start: bytes = b"",
    ) -> builtins.list[T]:
        skip = page * limit if limit else (0 if page == 0 else -1)
        if skip < 0:
            return []
        out: builtins.list[T] = []
        codec: Codec[T] = space.codec
        snap = self._kv.snapshot()
        rows = self._rows(snap, space, order, start)
        try:
            for id, value in rows:
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
            rows.close()  # close the iterator before its snapshot
            snap.close()
        return out

    def _verify(self) -> builtins.list[str]:
        problems: builtins.list[str] = []
        p = len(self._prefix) + 1
        snap = self._kv.snapshot()
        try:
            records: dict[bytes, tuple[int, int]] = {}
            for key, value in snap.scan(self._prefix + _RECORD):
                records[key[p:]] = _header(value)
            indexed: dict[bytes, set[bytes]] = {_CREATED: set(), _UPDATED: set()}
            for tag, slot in ((_CREATED, 0), (_UPDATED, 1)):
                for key in snap.keys(self._prefix + tag):
                    rest = key[p:]
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
        self._ops.append(_Op("delete", self._store._space(kind), id))

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
            if self._ops:
                await self.commit()
        else:
            self._ops = []
