"""The on-disk format stays readable: records written by earlier versions, and LevelDB's options."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import plyvel
import pytest

from msuite.runtime.repo import Repo
from msuite.runtime.store import Sort
from msuite.runtime.store.kv import LevelDB
from tests.runtime.store.conftest import Frozen, Note

CREATED = 1_700_000_000_123_456_789
UPDATED = 1_700_000_001_000_000_000
"""Nanoseconds since the epoch, as the store writes them."""


def _old_layout(created: int, updated: int) -> list[tuple[bytes, bytes]]:
    """A record and its index entries exactly as the store of format 1 wrote them (no msuite
    code involved): the bytes ``docs/storage.md`` documents."""
    space = b"store\x00"  # Repo.store's key space
    ns = b"\x05notes"  # the namespace, prefixed by its length
    c, u = created.to_bytes(8, "big"), updated.to_bytes(8, "big")
    payload = (
        b'{"id":"old-1","title":"written before","rank":7,'
        b'"created":"2023-11-14T22:13:20.123457Z","updated":"2023-11-14T22:13:21Z"}'
    )
    return [
        (space + b"r" + ns + b"old-1", b"\x01" + c + u + payload),
        (space + b"c" + ns + c + b"old-1", b""),
        (space + b"u" + ns + u + b"old-1", b""),
    ]


async def test_records_written_by_an_earlier_version_read_back(tmp_path: Path) -> None:
    Repo.open(tmp_path / "repo", sync=False).close()  # a repository, then its database by hand
    db = plyvel.DB(str(tmp_path / "repo" / "kv"))  # as earlier versions opened it: no bloom filter
    for key, value in _old_layout(CREATED, UPDATED):
        db.put(key, value)
    db.compact_range()  # into a table file written without a filter
    db.close()
    with Repo.open(tmp_path / "repo", sync=False) as repo:
        note = await repo.store.read(Note, "old-1")
        assert (note.title, note.rank) == ("written before", 7)
        assert note.updated == datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)
        assert [n.id for n in await repo.store.list(Note, sort=Sort.UPDATED_DESC)] == ["old-1"]
        assert await repo.store.verify() == []
        changed = await repo.store.update(note.model_copy(update={"title": "changed"}))
        assert changed.created == note.created
        assert await repo.store.verify() == []


async def test_a_database_with_filters_opens_without_them(tmp_path: Path) -> None:
    """Tables the store writes carry a bloom filter; LevelDB opened without the option (an
    earlier msuite, ``msuite repo repair``, other tools) still reads them."""
    with Repo.open(tmp_path / "repo", sync=False) as repo:
        stored = [await repo.store.create(Note(id=f"n{i}", title=f"note {i}")) for i in range(500)]
        assert isinstance(repo.kv, LevelDB)
        repo.kv._db.compact_range()  # every record into table files, with filters
    db = plyvel.DB(str(tmp_path / "repo" / "kv"))
    try:
        assert db.get(b"store\x00r\x05notesn42") is not None
        assert sum(1 for _ in db.iterator(prefix=b"store\x00r\x05notes")) == 500
    finally:
        db.close()
    with Repo.open(tmp_path / "repo", sync=False) as repo:
        assert await repo.store.read(Note, "n42") == stored[42]
        assert not await repo.store.exists(Note, "n42x")  # a miss the filter answers


async def test_create_keeps_its_rules_on_the_fast_path(tmp_path: Path) -> None:
    class Name(str):
        pass

    with Repo.open(tmp_path / "repo", sync=False) as repo:
        given = Frozen(id="f1", body="kept")
        assert await repo.store.create(given) is given  # nothing to set: stored as given
        assert (await repo.store.create(Frozen(id="", body="new id"))).id not in ("", None)
        assert (await repo.store.create(Frozen(id=Name("sub"), body="a str subclass"))).id == "sub"
        with pytest.raises(TypeError, match="must be a str"):
            await repo.store.create(Frozen.model_construct(id=5, body="bad"))
        with pytest.raises(ValueError, match="1-1024 bytes"):
            await repo.store.create(Frozen(id="x" * 1025, body="long"))
        note = Note(id="n", title="times")
        stored = await repo.store.create(note)
        assert note.created is None and stored.created is not None  # the caller's item unchanged
        assert stored.created == stored.updated
