"""The byte-level key-value layer under the store: LevelDB (plyvel) or memory.

Both backends offer the same small interface: point ``get``, an atomic
``write`` of puts and deletes, and read-only ``snapshot`` views to scan key
ranges in order while writes go on. :class:`Prefixed` gives each subsystem
its own key space inside the one database of a repository.

Calls are synchronous. Point operations are fast enough to run on the event
loop (measured: a plyvel get is under 1 us, a thread hop about 140 us); range
scans belong in a worker thread, over a snapshot.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from msuite import MsuiteError

__all__ = ["KV", "KVError", "LevelDB", "Memory", "Prefixed", "Snapshot", "WriteSet", "prefix_end"]


class KVError(MsuiteError):
    """The database could not be opened or used; the message says how to fix it."""


class Snapshot(Protocol):
    """A consistent, read-only view of the database at one moment."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Keys starting with ``prefix`` (and their values), in byte order."""
        ...

    def keys(self, prefix: bytes, *, reverse: bool = False) -> Iterator[bytes]:
        """Keys starting with ``prefix``, in byte order (cheaper than ``scan``)."""
        ...

    def close(self) -> None: ...


class KV(Protocol):
    """A key-value database (or a prefixed part of one)."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        """Apply every put and delete together, or none of them."""
        ...

    def snapshot(self) -> Snapshot: ...

    def close(self) -> None: ...


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key starting with ``prefix`` (None: no such key)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class WriteSet:
    """Puts and deletes gathered for one atomic ``write``; the last change of a key wins."""

    __slots__ = ("deletes", "puts")

    def __init__(self) -> None:
        self.puts: dict[bytes, bytes] = {}
        self.deletes: set[bytes] = set()

    def put(self, key: bytes, value: bytes) -> None:
        self.puts[key] = value
        self.deletes.discard(key)

    def drop(self, key: bytes) -> None:
        self.puts.pop(key, None)
        self.deletes.add(key)

    def write(self, kv: KV) -> None:
        """Apply everything gathered to ``kv`` in one write."""
        kv.write(list(self.puts.items()), list(self.deletes))


# --------------------------------------------------------------------------- LevelDB

BLOOM_FILTER_BITS = 10
"""Bits per key of LevelDB's bloom filter (about 1% false positives). A point read of a key a
table file does not hold then skips that file's index and data blocks: measured on 180,000 keys,
a miss (the store's ``create`` checks the id is free) 0.96 us instead of 1.96 us, a hit 1.27 us
instead of 2.12 us. Filters live in the table files (1.25 bytes a key); tables written without
one, by older msuite versions, are read as before, and LevelDB opened without the option reads
tables that have one, so the on-disk format stays compatible both ways."""


class LevelDB:
    """LevelDB through plyvel. ``sync`` flushes each write to disk before returning.

    Snapshots scanned in worker threads are tracked: :meth:`close` stops new
    ones, makes running scans end with :class:`KVError` at their next step,
    and waits for them before closing the database (closing LevelDB under a
    live iterator crashes the process).
    """

    def __init__(self, path: Path, *, sync: bool = True, create: bool = True) -> None:
        import plyvel

        self.path = path
        self.sync = sync
        try:
            self._db = plyvel.DB(str(path), create_if_missing=create, bloom_filter_bits=BLOOM_FILTER_BITS)
        except plyvel.CorruptionError as exc:
            raise KVError(self.corrupted(exc)) from None
        except plyvel.IOError as exc:
            raise KVError(f"{path}: cannot open the LevelDB database: {exc}") from None
        self._plyvel = plyvel
        self._scans = 0
        self._closing = False
        self._condition = threading.Condition()
        self.get = self._db.get  # type: ignore[method-assign]  # the hottest call: no wrapper

    def corrupted(self, exc: BaseException) -> str:
        """The message for a corruption: where, and how to repair."""
        return (
            f"{self.path}: the LevelDB database is corrupted ({exc}). Back up the folder, then "
            f"repair it with `msuite repo repair {self.path.parent}` (plyvel.repair_db), which "
            "may drop damaged records"
        )

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        if len(puts) == 1 and not deletes:
            self._db.put(puts[0][0], puts[0][1], sync=self.sync)
            return
        # one WriteBatch, written once at the end: an exception before ``write()`` (a key that
        # is not bytes) drops it whole, as ``transaction=True`` would, without the ``with``
        batch = self._db.write_batch(sync=self.sync)
        for key in deletes:
            batch.delete(key)
        put = batch.put
        for key, value in puts:
            put(key, value)
        batch.write()

    def snapshot(self) -> Snapshot:
        with self._condition:
            if self._closing or self._db.closed:
                raise KVError(f"{self.path}: the database is closed")
            self._scans += 1
        try:
            return _LevelDBSnapshot(self, self._db.snapshot())
        except BaseException:
            self._scan_done()
            raise

    def _scan_done(self) -> None:
        with self._condition:
            self._scans -= 1
            self._condition.notify_all()

    def close(self) -> None:
        with self._condition:
            self._closing = True
            self._condition.wait_for(lambda: self._scans == 0)
            if not self._db.closed:
                self._db.close()

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)


class _LevelDBSnapshot:
    def __init__(self, owner: LevelDB, snapshot: object) -> None:
        self._owner = owner
        self._snapshot = snapshot
        self._open = True

    def _check(self) -> None:
        if self._owner._closing:
            raise KVError(f"{self._owner.path}: the database is closing")

    def get(self, key: bytes) -> bytes | None:
        self._check()
        try:
            value: bytes | None = self._snapshot.get(key)  # type: ignore[attr-defined]
        except self._owner._plyvel.CorruptionError as exc:
            raise KVError(self._owner.corrupted(exc)) from None
        return value

    def scan(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        iterator = self._snapshot.iterator(prefix=prefix, reverse=reverse)  # type: ignore[attr-defined]
        try:
            with iterator:
                for item in iterator:
                    self._check()
                    yield item
        except self._owner._plyvel.CorruptionError as exc:
            raise KVError(self._owner.corrupted(exc)) from None

    def keys(self, prefix: bytes, *, reverse: bool = False) -> Iterator[bytes]:
        iterator = self._snapshot.iterator(  # type: ignore[attr-defined]
            prefix=prefix, reverse=reverse, include_value=False
        )
        try:
            with iterator:
                for key in iterator:
                    self._check()
                    yield key
        except self._owner._plyvel.CorruptionError as exc:
            raise KVError(self._owner.corrupted(exc)) from None

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._snapshot.close()  # type: ignore[attr-defined]
            finally:
                self._owner._scan_done()


# --------------------------------------------------------------------------- memory


class Memory:
    """An in-memory database: a dict plus a sorted key list. For users' fast tests."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        with self._lock:
            for key in deletes:
                if self._data.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            for key, value in puts:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = value

    def snapshot(self) -> Snapshot:
        with self._lock:
            return _MemorySnapshot(dict(self._data), list(self._keys))

    def close(self) -> None:
        pass


class _MemorySnapshot:
    def __init__(self, data: dict[bytes, bytes], keys: list[bytes]) -> None:
        self._data = data
        self._keys = keys

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def scan(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        start = bisect.bisect_left(self._keys, prefix)
        end_key = prefix_end(prefix)
        end = len(self._keys) if end_key is None else bisect.bisect_left(self._keys, end_key)
        indexes = range(end - 1, start - 1, -1) if reverse else range(start, end)
        for i in indexes:
            key = self._keys[i]
            yield key, self._data[key]

    def keys(self, prefix: bytes, *, reverse: bool = False) -> Iterator[bytes]:
        for key, _ in self.scan(prefix, reverse=reverse):
            yield key

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- prefixed views


class Prefixed:
    """The keys of ``kv`` that start with ``prefix``, seen without it."""

    def __init__(self, kv: KV, prefix: bytes) -> None:
        if not prefix:
            raise ValueError("a prefixed view needs a non-empty prefix")
        if isinstance(kv, Prefixed):  # a view of a view: one prefix, one call per operation
            prefix = kv._prefix + prefix
            kv = kv._kv
        self._kv: KV = kv
        self._prefix: bytes = prefix

    def get(self, key: bytes) -> bytes | None:
        return self._kv.get(self._prefix + key)

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        p = self._prefix
        self._kv.write([(p + k, v) for k, v in puts], [p + k for k in deletes])

    def snapshot(self) -> Snapshot:
        return _PrefixedSnapshot(self._kv.snapshot(), self._prefix)

    def close(self) -> None:
        pass  # the underlying database belongs to the repository


class _PrefixedSnapshot:
    def __init__(self, snapshot: Snapshot, prefix: bytes) -> None:
        self._snapshot = snapshot
        self._prefix = prefix

    def get(self, key: bytes) -> bytes | None:
        return self._snapshot.get(self._prefix + key)

    def scan(self, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        cut = len(self._prefix)
        for key, value in self._snapshot.scan(self._prefix + prefix, reverse=reverse):
            yield key[cut:], value

    def keys(self, prefix: bytes, *, reverse: bool = False) -> Iterator[bytes]:
        cut = len(self._prefix)
        for key in self._snapshot.keys(self._prefix + prefix, reverse=reverse):
            yield key[cut:]

    def close(self) -> None:
        self._snapshot.close()
