"""The store's behaviour, the same on both backends (the go-msuite gkvstore cases and more)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from msuite.runtime.repo import Repo
from msuite.runtime.store import AlreadyExists, DecodeError, NotFound, Sort, Store
from tests.runtime.store.conftest import Blob, Frozen, Note


async def five_notes(store: Store) -> list[Note]:
    return [await store.create(Note(id=f"n{i}", title=f"note {i}", rank=i)) for i in range(5)]


# --------------------------------------------------------------------------- CRUD


async def test_create_assigns_id_and_times(store: Store) -> None:
    before = datetime.now(UTC)
    note = await store.create(Note(title="first"))
    assert note.id and len(note.id) == 26
    assert note.created is not None and note.updated == note.created
    assert before <= note.created <= datetime.now(UTC)
    assert await store.read(Note, note.id) == note


async def test_update_keeps_created_and_moves_updated(store: Store) -> None:
    note = await store.create(Note(title="a"))
    changed = await store.update(note.model_copy(update={"title": "b", "created": None}))
    assert changed.title == "b"
    assert changed.created == note.created
    assert changed.updated is not None and note.updated is not None and changed.updated > note.updated
    assert await store.read(Note, note.id or "") == changed


async def test_delete(store: Store) -> None:
    note = await store.create(Note(title="gone"))
    assert note.id is not None
    await store.delete(Note, note.id)
    with pytest.raises(NotFound, match="notes 'n"):
        await store.read(Note, "n-missing")
    with pytest.raises(NotFound):
        await store.read(Note, note.id)
    assert await store.list(Note) == []


async def test_create_existing_id_fails(store: Store) -> None:
    await store.create(Note(id="x", title="a"))
    with pytest.raises(AlreadyExists, match="notes 'x' already exists"):
        await store.create(Note(id="x", title="b"))
    assert (await store.read(Note, "x")).title == "a"


async def test_update_of_a_missing_item_does_not_create_it(store: Store) -> None:
    with pytest.raises(NotFound, match="notes 'nope' not found"):
        await store.update(Note(id="nope", title="a"))
    assert await store.list(Note) == []
    with pytest.raises(ValueError, match="without an id"):
        await store.update(Note(title="no id"))


async def test_delete_of_a_missing_item_fails(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.delete(Note, "nope")


async def test_not_found_is_a_key_error(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.read(Note, "nope")


async def test_frozen_models_are_copied(store: Store) -> None:
    item = Frozen(body="b")
    stored = await store.create(item)
    assert item.id is None and stored.id is not None
    assert await store.read(Frozen, stored.id) == stored
    assert [f.body for f in await store.list(Frozen, sort=Sort.CREATED_DESC)] == ["b"]


async def test_custom_items(store: Store) -> None:
    blob = await store.create(Blob("b1", b"\x00\x01raw"))
    assert blob.id == "b1"
    assert (await store.read(Blob, "b1")).data == b"\x00\x01raw"


async def test_undecodable_bytes_name_namespace_and_id(store: Store, repo: Repo) -> None:
    await store.create(Blob("b2", b"BAD data"))
    with pytest.raises(DecodeError, match=r"blobs 'b2': stored bytes do not decode as Blob: not a blob"):
        await store.read(Blob, "b2")


async def test_items_that_cannot_be_stored() -> None:
    store = Repo.open(":memory:").store
    with pytest.raises(TypeError, match="cannot be stored"):
        await store.create(object())
    with pytest.raises(ValueError, match="1-1024 bytes"):
        await store.create(Note(id="x" * 2000, title="a"))


# --------------------------------------------------------------------------- list


async def test_paging_2_2_1(store: Store) -> None:
    await five_notes(store)
    pages = [await store.list(Note, page=p, limit=2) for p in range(4)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert [n.id for page in pages for n in page] == ["n0", "n1", "n2", "n3", "n4"]


async def test_limit_zero_means_no_limit(store: Store) -> None:
    await five_notes(store)
    assert len(await store.list(Note, limit=0)) == 5
    assert await store.list(Note, page=1, limit=0) == []


async def test_created_order_both_ways(store: Store) -> None:
    # ids in the opposite order of creation, so natural order differs
    for i, id in enumerate(["e", "d", "c", "b", "a"]):
        await store.create(Note(id=id, title=str(i)))
    assert [n.id for n in await store.list(Note)] == ["a", "b", "c", "d", "e"]
    assert [n.id for n in await store.list(Note, sort=Sort.CREATED_ASC)] == ["e", "d", "c", "b", "a"]
    assert [n.id for n in await store.list(Note, sort="created_desc")] == ["a", "b", "c", "d", "e"]


async def test_updated_order_both_ways(store: Store) -> None:
    notes = await five_notes(store)
    for note in (notes[3], notes[1]):
        await store.update(note)
    assert [n.id for n in await store.list(Note, sort=Sort.UPDATED_ASC)] == ["n0", "n2", "n4", "n3", "n1"]
    assert [n.id for n in await store.list(Note, sort=Sort.UPDATED_DESC)] == ["n1", "n3", "n4", "n2", "n0"]
    assert [n.id for n in await store.list(Note, sort=Sort.CREATED_ASC)] == ["n0", "n1", "n2", "n3", "n4"]


@pytest.mark.parametrize("sort", list(Sort))
async def test_filter_applies_before_paging_for_every_sort(store: Store, sort: Sort) -> None:
    await five_notes(store)
    await store.create(Note(id="n5", title="x", rank=5))

    def even(n: Note) -> bool:
        return n.rank % 2 == 0

    pages = [await store.list(Note, page=p, limit=2, sort=sort, filter=even) for p in range(3)]
    assert [len(p) for p in pages] == [2, 1, 0]
    ranks = sorted(n.rank for page in pages for n in page)
    assert ranks == [0, 2, 4]  # the filter keeps matches (go-msuite inverted it on sorted lists)


async def test_unknown_sort_is_an_error(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.list(Note, sort="sideways")
    with pytest.raises(ValueError):
        await store.list(Note, page=-1)


async def test_paging_is_stable_across_identical_calls(store: Store) -> None:
    for i in range(20):
        await store.create(Note(title=str(i)))
    for sort in Sort:
        first = [n.id for p in range(5) for n in await store.list(Note, page=p, limit=4, sort=sort)]
        again = [n.id for p in range(5) for n in await store.list(Note, page=p, limit=4, sort=sort)]
        assert first == again and len(set(first)) == 20


async def test_list_runs_off_the_event_loop(store: Store) -> None:
    for i in range(50):
        await store.create(Note(title=str(i)))
    loop_thread = asyncio.get_running_loop()
    seen: list[bool] = []

    def check(_: Note) -> bool:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)
        return True

    assert len(await store.list(Note, filter=check)) == 50
    assert seen and not any(seen), f"filter ran on the loop {loop_thread}"


# --------------------------------------------------------------------------- keys


async def test_namespaces_and_ids_cannot_collide(store: Store) -> None:
    class AB(Note):
        store_namespace = "ab"

    class A(Note):
        store_namespace = "a"

    await store.create(AB(id="c", title="ab/c"))
    await store.create(A(id="bc", title="a/bc"))
    await store.create(A(id="b\x00c", title="a/b-nul-c"))
    await store.create(A(id="r\x02ab", title="looks like a key"))
    assert [n.title for n in await store.list(AB)] == ["ab/c"]
    assert sorted(n.title for n in await store.list(A)) == ["a/b-nul-c", "a/bc", "looks like a key"]
    assert (await store.read(A, "bc")).title == "a/bc"
    with pytest.raises(NotFound):
        await store.read(AB, "bc")
    for sort in Sort:
        assert len(await store.list(A, sort=sort)) == 3
    assert await store.verify() == []


async def test_unicode_ids(store: Store) -> None:
    await store.create(Note(id="ñoño/üé 💡", title="u"))
    assert (await store.read(Note, "ñoño/üé 💡")).title == "u"
    assert [n.id for n in await store.list(Note, sort=Sort.UPDATED_DESC)] == ["ñoño/üé 💡"]


# --------------------------------------------------------------------------- batches


async def test_batch_lands_together(store: Store) -> None:
    existing = await store.create(Note(id="old", title="old"))
    async with store.batch() as batch:
        new_id = batch.create(Note(title="new"))
        batch.update(existing.model_copy(update={"title": "changed"}))
        batch.create(Note(id="tmp", title="tmp"))
        batch.delete(Note, "tmp")
    assert [type(r).__name__ if r else None for r in batch.results] == ["Note", "Note", "Note", None]
    assert {n.id: n.title for n in await store.list(Note)} == {new_id: "new", "old": "changed"}
    assert await store.verify() == []


async def test_failed_batch_writes_nothing(store: Store) -> None:
    await store.create(Note(id="x", title="x"))
    with pytest.raises(AlreadyExists):
        async with store.batch() as batch:
            batch.create(Note(id="y", title="y"))
            batch.update(Note(id="x", title="changed"))
            batch.create(Note(id="x", title="again"))
    assert {n.id: n.title for n in await store.list(Note)} == {"x": "x"}
    with pytest.raises(RuntimeError):
        async with store.batch() as batch:
            batch.create(Note(id="z", title="z"))
            raise RuntimeError("user code failed")
    assert [n.id for n in await store.list(Note)] == ["x"]
    assert await store.verify() == []


async def test_batch_sees_its_own_writes(store: Store) -> None:
    with pytest.raises(NotFound):
        async with store.batch() as batch:
            batch.create(Note(id="a", title="a"))
            batch.delete(Note, "a")
            batch.update(Note(id="a", title="b"))
    assert await store.list(Note) == []


async def test_count_gives_the_total_of_a_paged_listing(store: Store) -> None:
    notes = await five_notes(store)
    assert await store.count(Note) == 5
    assert await store.count(Note, filter=lambda n: n.rank % 2 == 0) == 3
    assert len(await store.list(Note, page=0, limit=2)) == 2  # a page, and the total beside it
    await store.delete(Note, notes[0].id)
    assert await store.count(Note) == 4
    assert await store.count(Blob) == 0


async def test_count_without_a_filter_reads_no_record(store: Store) -> None:
    await store.create(Blob("b1", b"fine"))
    await store.create(Blob("b2", b"BAD data"))  # a record that does not decode
    assert await store.count(Blob) == 2  # the index answers: nothing was decoded
    with pytest.raises(DecodeError):
        await store.count(Blob, filter=lambda blob: True)


async def test_exists_and_prefix_listing(store: Store) -> None:
    for id in ("user:ann", "user:bob", "users", "group:x", "user"):
        await store.create(Note(id=id, title=id))
    assert await store.exists(Note, "user:ann") and not await store.exists(Note, "user:zed")
    assert [n.id for n in await store.list(Note, prefix="user:")] == ["user:ann", "user:bob"]
    newest_first = await store.list(Note, prefix="user", sort=Sort.CREATED_DESC)
    assert [n.id for n in newest_first] == ["user", "users", "user:bob", "user:ann"]
    assert await store.count(Note, prefix="user:") == 2
    assert await store.count(Note, prefix="user:", filter=lambda n: n.id.endswith("bob")) == 1
    second = await store.list(Note, prefix="user:", limit=1, page=1)
    assert second == [await store.read(Note, "user:bob")]
    with pytest.raises(TypeError):
        await store.list(Note, prefix=b"user")  # type: ignore[arg-type]
