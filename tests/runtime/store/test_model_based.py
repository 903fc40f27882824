"""Random operation sequences: the store against a plain dict model, on LevelDB and memory."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msuite.runtime.repo import Repo
from msuite.runtime.store import AlreadyExists, NotFound, Sort, Store
from tests.runtime.store.conftest import Note

IDS = ["a", "b", "c", "d", "e/f", "é", "a\x00"]


@dataclass
class Model:
    """What the store should hold: id -> (title, rank, created order, updated order)."""

    rows: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)
    clock: itertools.count[int] = field(default_factory=itertools.count)

    def listing(self, sort: Sort, page: int, limit: int, even_only: bool) -> list[str]:
        rows = [(id, r) for id, r in self.rows.items() if not even_only or r[1] % 2 == 0]
        key: Any = {
            Sort.NATURAL: lambda x: x[0].encode(),
            Sort.CREATED_ASC: lambda x: x[1][2],
            Sort.CREATED_DESC: lambda x: -x[1][2],
            Sort.UPDATED_ASC: lambda x: x[1][3],
            Sort.UPDATED_DESC: lambda x: -x[1][3],
        }[sort]
        ordered = [id for id, _ in sorted(rows, key=key)]
        if limit == 0:
            return ordered if page == 0 else []
        return ordered[page * limit : (page + 1) * limit]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(IDS), st.integers(0, 9)),
        st.tuples(st.just("update"), st.sampled_from(IDS), st.integers(0, 9)),
        st.tuples(st.just("delete"), st.sampled_from(IDS), st.just(0)),
        st.tuples(
            st.just("list"),
            st.sampled_from(list(Sort)),
            st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans()),
        ),
    ),
    max_size=40,
)


async def run(store: Store, ops: list[tuple[Any, ...]]) -> None:
    model = Model()
    for op in ops:
        if op[0] == "create":
            _, id, rank = op
            if id in model.rows:
                with pytest.raises(AlreadyExists):
                    await store.create(Note(id=id, title=id, rank=rank))
            else:
                await store.create(Note(id=id, title=id, rank=rank))
                tick = next(model.clock)
                model.rows[id] = (id, rank, tick, tick)
        elif op[0] == "update":
            _, id, rank = op
            if id not in model.rows:
                with pytest.raises(NotFound):
                    await store.update(Note(id=id, title="x", rank=rank))
            else:
                await store.update(Note(id=id, title=f"{id}!", rank=rank))
                title, _, created, _ = model.rows[id]
                model.rows[id] = (f"{id}!", rank, created, next(model.clock))
        elif op[0] == "delete":
            _, id, _ = op
            if id not in model.rows:
                with pytest.raises(NotFound):
                    await store.delete(Note, id)
            else:
                await store.delete(Note, id)
                del model.rows[id]
        else:
            _, sort, (page, limit, even_only) = op

            def even(note: Note) -> bool:
                return note.rank % 2 == 0

            got = await store.list(
                Note, page=page, limit=limit, sort=sort, filter=even if even_only else None
            )
            assert [n.id for n in got] == model.listing(sort, page, limit, even_only), op
    for id, (title, rank, _, _) in model.rows.items():
        note = await store.read(Note, id)
        assert (note.title, note.rank) == (title, rank)
    assert await store.verify() == []


@pytest.mark.parametrize("backend", ["leveldb", "memory"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_store_matches_a_dict_model(backend: str, ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        location = Path(tmp) / "repo" if backend == "leveldb" else ":memory:"
        with Repo.open(location, kv="leveldb" if backend == "leveldb" else "memory", sync=False) as repo:
            asyncio.run(run(repo.store, ops))
