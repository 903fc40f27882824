"""The shared store's replica: the merge of deltas, driven the way the item store drives it.

Each test peer is a :class:`Replica` on its own KV with a :class:`Store` on top of its view (the
adapter below is the one ``shared.py`` uses: reads from the view, writes through
``local_write``). Deltas travel as blocks (encoded by the writer, decoded by the receiver) and are
applied bottom-up, their links first, in many random orders.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from msuite.runtime.files.cids import DAG_CBOR, make_cid
from msuite.runtime.shared.delta import (
    MAX_BLOCK,
    MAX_LINKS,
    MAX_OPS,
    MAX_REMOVED,
    Delta,
    DeltaError,
    Op,
    decode_delta,
    encode_delta,
)
from msuite.runtime.shared.replica import MAX_VALUE, Change, Replica, parse_record_key
from msuite.runtime.store import NotFound, Store
from msuite.runtime.store.kv import KV, LevelDB, Memory, Snapshot
from msuite.runtime.store.store import _namespace_key

NS = _namespace_key("app")
NOTES = _namespace_key("notes")
RECORDS = NS + b"r" + NOTES


class Note(BaseModel):
    store_namespace: ClassVar[str] = "notes"
    id: str | None = None
    text: str


def key_of(id: str) -> bytes:
    return RECORDS + id.encode()


def raw_record(text: str, created: int = 0, updated: int = 0) -> bytes:
    payload = Note(id=None, text=text).model_dump_json().encode()
    return b"\x01" + created.to_bytes(8, "big") + updated.to_bytes(8, "big") + payload


def index_keys(key: bytes, record: bytes) -> list[bytes]:
    """The created and updated index keys the item store writes for ``record`` at ``key``."""
    id = key[len(RECORDS) :]
    return [NS + b"c" + NOTES + record[1:9] + id, NS + b"u" + NOTES + record[9:17] + id]


class ReplicaView:
    """The item store's KV over a replica (what ``shared._View`` does), checking the changes."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.changes: list[Change] = []

    def get(self, key: bytes) -> bytes | None:
        return self.replica.view.get(key)

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        keys = [k for k, _ in puts] + list(deletes)
        before = {k: self.replica.view.get(k) for k in keys}
        changes = self.replica.local_write(puts, deletes)
        # a Change for each record key whose value changed, nothing for index keys
        changed = {
            k for k in keys if parse_record_key(k) is not None and self.replica.view.get(k) != before[k]
        }
        assert {c.key for c in changes} == changed and len(changes) == len(changed)
        for change in changes:
            assert self.replica.view.get(change.key) == change.value
        self.changes.extend(changes)

    def snapshot(self) -> Snapshot:
        return self.replica.view.snapshot()

    def close(self) -> None:
        pass


class Peer:
    """A node: a replica in ``kv`` and an item store on its view."""

    def __init__(self, name: str, kv: KV | None = None, path: Path | None = None) -> None:
        self.name = name
        self.path = path
        self.kv: KV = kv if kv is not None else Memory()
        self.open()

    def open(self) -> None:
        self.replica = Replica(self.kv, self.name)
        self.store = Store(ReplicaView(self.replica), prefix=NS)

    def reopen(self) -> None:
        """A crash: the replica (and its store) is dropped and opened again on the same data."""
        if self.path is not None:
            self.kv.close()
            self.kv = LevelDB(self.path, sync=False)
        self.open()

    def flush(self, limit: int = MAX_OPS) -> list[tuple[bytes, bytes]]:
        """Every pending write made into deltas and committed; their ``(cid, block)``."""
        made: list[tuple[bytes, bytes]] = []
        while (result := self.replica.make_delta(limit)) is not None:
            cid, block, delta = result
            assert len(block) <= MAX_BLOCK
            assert decode_delta(cid, block) == delta  # what the others will read
            self.replica.check(delta)  # made on top of what is applied here
            heads_before = dict(self.replica.heads)
            self.replica.commit_local(cid, delta)
            assert all(op.key not in self.replica.pending for op in delta.ops)
            assert self.replica.heads == {
                **{c: h for c, h in heads_before.items() if c not in delta.links},
                cid: delta.height,
            }
            made.append((cid, block))
        assert not self.replica.pending
        return made

    def view(self) -> list[tuple[bytes, bytes]]:
        return dump(self.replica.view)

    def records(self) -> dict[bytes, bytes]:
        return {k: v for k, v in self.view() if parse_record_key(k) is not None}

    async def text(self, id: str) -> str | None:
        try:
            return (await self.store.read(Note, id)).text
        except NotFound:
            return None


def dump(kv: KV, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
    snap = kv.snapshot()
    try:
        return list(snap.scan(prefix))
    finally:
        snap.close()


def elements(replica: Replica) -> dict[bytes, list[tuple[int, bytes, bytes]]]:
    """Each key's live elements (as a sorted list: their packed order is not part of the state)."""
    from msuite.runtime.shared.replica import _unpack

    return {k[1:]: sorted(_unpack(v)) for k, v in dump(replica.kv, b"e")}


class Pool:
    """Every delta made so far, as blocks (what Bitswap would serve)."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}

    def add(self, made: Sequence[tuple[bytes, bytes]]) -> None:
        for cid, block in made:
            self.blocks[cid] = block

    def delta(self, cid: bytes) -> Delta:
        return decode_delta(cid, self.blocks[cid])

    def deliver(self, peer: Peer, cid: bytes, rng: random.Random) -> None:
        """Apply ``cid`` at ``peer``, its missing ancestors first (in a random order)."""
        if peer.replica.height_of(cid) is not None:
            return
        delta = self.delta(cid)
        links = list(delta.links)
        rng.shuffle(links)
        for link in links:
            self.deliver(peer, link, rng)
        apply_checked(peer.replica, cid, delta)

    def deliver_all(self, peer: Peer, rng: random.Random) -> None:
        cids = list(self.blocks)
        rng.shuffle(cids)
        for cid in cids:
            self.deliver(peer, cid, rng)

    def expected_records(self) -> dict[bytes, bytes]:
        """The documented merge rule computed from the set of deltas alone (an oracle)."""
        written: dict[bytes, dict[bytes, tuple[int, bytes]]] = {}
        removed: set[tuple[bytes, bytes]] = set()
        for cid in self.blocks:
            delta = self.delta(cid)
            for op in delta.ops:
                if op.value is not None:
                    written.setdefault(op.key, {})[cid] = (delta.height, op.value)
                removed.update((op.key, r) for r in op.removed)
        out: dict[bytes, bytes] = {}
        for key, by_cid in written.items():
            live = [(h, v, c) for c, (h, v) in by_cid.items() if (key, c) not in removed]
            if live:
                out[key] = max(live)[1]
        return out

    def expected_heads(self) -> dict[bytes, int]:
        deltas = {cid: self.delta(cid) for cid in self.blocks}
        linked = {link for d in deltas.values() for link in d.links}
        return {cid: d.height for cid, d in deltas.items() if cid not in linked}


def apply_checked(replica: Replica, cid: bytes, delta: Delta) -> list[Change]:
    """``replica.apply`` plus the checks every apply must pass (its Changes are exactly the
    records whose visible value changed; nothing else in the view moves but their indexes)."""
    before = dict(dump(replica.view))
    changes = replica.apply(cid, delta)
    after = dict(dump(replica.view))
    changed_records = {
        k for k in before.keys() | after.keys() if parse_record_key(k) and before.get(k) != after.get(k)
    }
    assert {c.key for c in changes} == changed_records
    assert len(changes) == len(changed_records)
    for change in changes:
        assert after.get(change.key) == change.value
    changed_other = {
        k for k in before.keys() | after.keys() if not parse_record_key(k) and before.get(k) != after.get(k)
    }
    allowed = {
        i for k in changed_records for r in (before.get(k), after.get(k)) if r for i in index_keys(k, r)
    }
    assert changed_other <= allowed
    assert replica.height_of(cid) == delta.height
    assert replica.heads.get(cid) == delta.height
    assert not set(delta.links) & set(replica.heads)
    return changes


def assert_converged(peers: Sequence[Peer], pool: Pool) -> None:
    first = peers[0]
    expected = pool.expected_records()
    for peer in peers:
        assert peer.view() == first.view(), f"{peer.name} and {first.name} differ"
        assert peer.records() == expected
        assert elements(peer.replica) == elements(first.replica)
        assert peer.replica.heads == pool.expected_heads()
        assert {k[1:]: int.from_bytes(v, "big") for k, v in dump(peer.kv, b"h")} == peer.replica.heads
        assert {k[1:] for k, _ in dump(peer.kv, b"a")} == set(pool.blocks)
        assert peer.replica.count_applied() == len(pool.blocks)
        assert not peer.replica.pending and not dump(peer.kv, b"q")
        assert peer.store._verify() == []


# --------------------------------------------------------------------------- local writes


async def test_a_local_write_is_visible_at_once_and_pending_until_its_delta() -> None:
    peer = Peer("a")
    note = await peer.store.create(Note(id="x", text="hello"))
    assert note.id == "x" and await peer.text("x") == "hello"
    key = key_of("x")
    value = peer.replica.view.get(key)
    assert value is not None and value[0] == 1
    assert set(peer.replica.pending) == {key}  # only the record is pending, not its indexes
    assert [k for k, _ in dump(peer.kv, b"q")] == [b"q" + key]
    assert peer.replica.heads == {} and peer.replica.height == 0
    assert await peer.store.verify() == []

    made = peer.replica.make_delta()
    assert made is not None
    cid, block, delta = made
    assert delta == Delta(1, (), (Op(key, value, ()),), "a")
    assert (cid, block) == encode_delta(delta)
    assert peer.replica.pending  # making a delta commits nothing
    peer.replica.commit_local(cid, delta)
    assert peer.replica.pending == {} and dump(peer.kv, b"q") == []
    assert peer.replica.heads == {cid: 1} and peer.replica.height == 1
    assert peer.replica.height_of(cid) == 1 and peer.replica.count_applied() == 1
    assert peer.replica.applied == 1
    assert await peer.text("x") == "hello"
    assert elements(peer.replica) == {key: [(1, cid, value)]}
    assert peer.replica.make_delta() is None


async def test_local_write_reports_changes_of_records_only() -> None:
    peer = Peer("a")
    view = peer.store._kv
    assert isinstance(view, ReplicaView)
    await peer.store.create(Note(id="x", text="1"))
    await peer.store.update(Note(id="x", text="2"))
    await peer.store.delete(Note, "x")
    assert [(c.key, c.value is None) for c in view.changes] == [
        (key_of("x"), False),
        (key_of("x"), False),
        (key_of("x"), True),
    ]
    assert peer.replica.pending == {key_of("x"): None}
    # writing the same bytes again is no change
    value = raw_record("same")
    assert peer.replica.local_write([(key_of("y"), value)], []) == [Change(key_of("y"), value)]
    assert peer.replica.local_write([(key_of("y"), value)], []) == []
    # deleting what is not there is no change, but still a pending delete
    assert peer.replica.local_write([], [key_of("nothing")]) == []
    assert peer.replica.pending[key_of("nothing")] is None


async def test_a_pending_delete_of_a_key_never_shared_is_harmless() -> None:
    a, b = Peer("a"), Peer("b")
    pool = Pool()
    await a.store.create(Note(id="x", text="short-lived"))
    await a.store.delete(Note, "x")
    pool.add(a.flush())
    pool.deliver_all(b, random.Random(0))
    assert_converged([a, b], pool)
    assert a.records() == {}


async def test_make_delta_takes_at_most_limit_writes_in_write_order() -> None:
    a, b = Peer("a"), Peer("b")
    for i in range(5):
        await a.store.create(Note(id=f"n{i}", text=str(i)))
    made = a.replica.make_delta(2)
    assert made is not None
    assert [op.key for op in made[2].ops] == [key_of("n0"), key_of("n1")]
    pool = Pool()
    pool.add(a.flush(limit=2))
    deltas = [pool.delta(cid) for cid in pool.blocks]
    assert [len(d.ops) for d in deltas] == [2, 2, 1]
    assert [d.height for d in deltas] == [1, 2, 3]
    assert a.replica.height == 3 and len(a.replica.heads) == 1
    pool.deliver_all(b, random.Random(1))
    assert_converged([a, b], pool)


async def test_large_writes_are_split_into_blocks_under_the_limit() -> None:
    a, b = Peer("a"), Peer("b")
    big = "x" * 700_000
    for i in range(3):
        await a.store.create(Note(id=f"big{i}", text=big + str(i)))
    pool = Pool()
    made = a.flush()
    assert len(made) == 2
    assert all(len(block) <= MAX_BLOCK for _, block in made)
    pool.add(made)
    pool.deliver_all(b, random.Random(2))
    assert_converged([a, b], pool)
    assert await b.text("big2") == big + "2"


async def test_a_record_over_max_value_is_refused_before_anything_is_written() -> None:
    a = Peer("a")
    await a.store.create(Note(id="keep", text="k"))
    before, pending = dump(a.kv), dict(a.replica.pending)
    with pytest.raises(ValueError, match="limit"):
        await a.store.create(Note(id="huge", text="x" * MAX_VALUE))
    with pytest.raises(ValueError):
        a.replica.local_write(
            [(key_of("ok"), raw_record("ok")), (key_of("huge"), b"\x01" * (MAX_VALUE + 1))], []
        )
    assert dump(a.kv) == before and a.replica.pending == pending
    # exactly MAX_VALUE bytes are taken, and still make a block the others accept
    largest = b"\x01" + bytes(16) + b"y" * (MAX_VALUE - 17)
    assert len(largest) == MAX_VALUE
    a.replica.local_write([(key_of("max"), largest)], [])
    made = a.flush()
    assert all(len(block) <= MAX_BLOCK for _, block in made)


# --------------------------------------------------------------------------- convergence


async def random_write(peer: Peer, rng: random.Random, ids: Sequence[str]) -> None:
    id = rng.choice(ids)
    text = "".join(rng.choice("abcxyz") for _ in range(rng.choice([0, 1, 3, 20])))
    if peer.replica.view.get(key_of(id)) is None:
        await peer.store.create(Note(id=id, text=text))
    elif rng.random() < 0.3:
        await peer.store.delete(Note, id)
    else:
        await peer.store.update(Note(id=id, text=text))


async def random_batch(peer: Peer, rng: random.Random, ids: Sequence[str]) -> None:
    exists = {id: peer.replica.view.get(key_of(id)) is not None for id in ids}
    async with peer.store.batch() as batch:
        for _ in range(rng.randint(2, 5)):
            id = rng.choice(ids)
            text = rng.choice(["b1", "b2", "batch"])
            if not exists[id]:
                batch.create(Note(id=id, text=text))
                exists[id] = True
            elif rng.random() < 0.3:
                batch.delete(Note, id)
                exists[id] = False
            else:
                batch.update(Note(id=id, text=text))


async def run_random_history(peers: list[Peer], rng: random.Random, steps: int, ids: Sequence[str]) -> Pool:
    pool = Pool()
    for _ in range(steps):
        peer = rng.choice(peers)
        action = rng.random()
        if action < 0.35:
            await random_write(peer, rng, ids)
        elif action < 0.5:
            await random_batch(peer, rng, ids)
        elif action < 0.7:
            pool.add(peer.flush(limit=rng.choice([1, 2, MAX_OPS])))
        elif action < 0.95 and pool.blocks:
            for cid in rng.sample(list(pool.blocks), k=min(len(pool.blocks), rng.randint(1, 4))):
                pool.deliver(peer, cid, rng)
        else:
            pending = dict(peer.replica.pending)
            view, heads = peer.view(), dict(peer.replica.heads)
            peer.reopen()
            assert peer.replica.pending == pending
            assert peer.view() == view and peer.replica.heads == heads
        assert peer.store._verify() == []
    for peer in peers:
        pool.add(peer.flush())
    for peer in peers:
        pool.deliver_all(peer, rng)
    return pool


@pytest.mark.parametrize("seed", range(40))
async def test_replicas_converge_whatever_the_order(seed: int) -> None:
    rng = random.Random(seed)
    peers = [Peer(f"n{i}") for i in range(rng.choice([2, 3, 4]))]
    ids = [f"id{i}" for i in range(rng.choice([2, 4, 8]))]
    pool = await run_random_history(peers, rng, 40, ids)
    # a node that wrote nothing and gets every delta, in yet another order
    observer = Peer("observer")
    pool.deliver_all(observer, rng)
    everyone = [*peers, observer]
    assert_converged(everyone, pool)
    for peer in everyone:
        assert await peer.store.verify() == []
        assert [n.id for n in await peer.store.list(Note)] == [n.id for n in await observer.store.list(Note)]
    # applying everything again changes nothing
    snapshot = observer.view()
    for cid in pool.blocks:
        assert observer.replica.apply(cid, pool.delta(cid)) == []
    assert observer.view() == snapshot


@pytest.mark.parametrize("seed", range(3))
async def test_replicas_on_leveldb_converge_through_crashes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(1000 + seed)
    peers = [Peer(f"n{i}", LevelDB(tmp_path / f"n{i}", sync=False), tmp_path / f"n{i}") for i in range(3)]
    try:
        pool = await run_random_history(peers, rng, 40, [f"id{i}" for i in range(4)])
        assert_converged(peers, pool)
        for peer in peers:
            assert await peer.store.verify() == []
    finally:
        for peer in peers:
            peer.kv.close()


# --------------------------------------------------------------------------- concurrent writes


async def exchange(peers: Sequence[Peer], pool: Pool, seed: int = 0) -> None:
    rng = random.Random(seed)
    for peer in peers:
        pool.add(peer.flush())
    for peer in peers:
        pool.deliver_all(peer, rng)


@pytest.mark.parametrize("b_later", [False, True])
async def test_concurrent_creates_of_one_key_pick_the_larger_value_everywhere(b_later: bool) -> None:
    a, b = Peer("a"), Peer("b")
    (b if b_later else a).store._last_ns = 2**62  # its stamps, so its record bytes, are larger
    await a.store.create(Note(id="x", text="from a"))
    await b.store.create(Note(id="x", text="from b"))
    pool = Pool()
    pool.add(a.flush())
    pool.add(b.flush())
    values = {p.name: p.replica.view.get(key_of("x")) for p in (a, b)}
    for seed in range(2):
        for peer in (a, b):
            pool.deliver_all(peer, random.Random(seed))
    assert_converged([a, b], pool)
    assert a.records()[key_of("x")] == max(v for v in values.values() if v)
    assert await a.text("x") == await b.text("x") == ("from b" if b_later else "from a")
    assert len(elements(a.replica)[key_of("x")]) == 2  # both stay, the rule picks one
    assert a.replica.conflicts >= 1 and b.replica.conflicts >= 1


async def test_the_higher_height_wins_over_the_larger_value() -> None:
    a, b = Peer("a"), Peer("b")
    b.store._last_ns = 2**62  # b's record is the larger, but made on less history
    pool = Pool()
    for i in range(3):
        await a.store.create(Note(id=f"other{i}", text="history"))
        pool.add(a.flush())
    await a.store.create(Note(id="x", text="from a"))
    await b.store.create(Note(id="x", text="from b"))
    pool.add(a.flush())
    assert a.replica.height == 4
    await exchange([a, b], pool)
    assert await a.text("x") == await b.text("x") == "from a"
    assert_converged([a, b], pool)


async def test_raw_records_order_by_height_then_value_bytes() -> None:
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    x = key_of("x")

    def put(peer: Peer, record: bytes) -> None:
        old = peer.replica.view.get(x)
        peer.replica.local_write(
            [(x, record)] + [(k, b"") for k in index_keys(x, record)],
            index_keys(x, old) if old else [],
        )

    put(a, raw_record("a" * 50))
    put(b, raw_record("z"))  # same header, larger payload bytes
    put(c, raw_record("m"))
    pool = Pool()
    await exchange([a, b, c], pool, seed=3)
    assert a.records()[x] == raw_record("z")
    assert_converged([a, b, c], pool)


async def test_a_delete_concurrent_with_a_put_loses_to_the_put() -> None:
    a, b = Peer("a"), Peer("b")
    await a.store.create(Note(id="x", text="v1"))
    pool = Pool()
    await exchange([a, b], pool)
    # a deletes on top of much more history than b's update (height 5 against 2)
    for i in range(3):
        await a.store.create(Note(id=f"h{i}", text="h"))
        pool.add(a.flush())
    await a.store.delete(Note, "x")
    await b.store.update(Note(id="x", text="v2 from b"))
    for seed in range(3):
        await exchange([a, b], pool, seed)
    assert await a.text("x") == await b.text("x") == "v2 from b"
    assert_converged([a, b], pool)


async def test_a_put_concurrent_with_a_delete_wins_in_either_delivery_order() -> None:
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    await a.store.create(Note(id="x", text="v1"))
    pool = Pool()
    await exchange([a, b, c], pool)
    await a.store.update(Note(id="x", text="v2"))
    await b.store.delete(Note, "x")
    put_cid, put_block = a.flush()[0]
    del_cid, del_block = b.flush()[0]
    pool.add([(put_cid, put_block), (del_cid, del_block)])
    apply_checked(c.replica, put_cid, pool.delta(put_cid))
    changes = apply_checked(c.replica, del_cid, pool.delta(del_cid))
    assert changes == []  # the delete removes only v1, which c no longer shows
    assert await c.text("x") == "v2"
    changes = apply_checked(b.replica, put_cid, pool.delta(put_cid))
    assert [ch.key for ch in changes] == [key_of("x")]
    await exchange([a, b, c], pool)
    assert await a.text("x") == await b.text("x") == "v2"
    assert_converged([a, b, c], pool)


async def test_a_write_after_seeing_another_supersedes_it_whatever_the_values() -> None:
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    a.store._last_ns = 2**62  # a's record is the largest anyone will write
    await a.store.create(Note(id="x", text="zzzz from a"))
    await a.store.create(Note(id="y", text="zzzz from a"))
    pool = Pool()
    pool.add(a.flush())
    pool.deliver_all(b, random.Random(0))
    # b saw a's records: its smaller update and its delete both supersede them
    await b.store.update(Note(id="x", text="aaaa from b"))
    await b.store.delete(Note, "y")
    assert b.replica.view.get(key_of("x")) < a.replica.view.get(key_of("x"))  # type: ignore[operator]
    pool.add(b.flush())
    for seed in range(3):
        pool.deliver_all(c, random.Random(seed))
        pool.deliver_all(a, random.Random(seed))
    assert await a.text("x") == await c.text("x") == "aaaa from b"
    assert await a.text("y") is None and await c.text("y") is None
    assert len(elements(a.replica)[key_of("x")]) == 1 and key_of("y") not in elements(a.replica)
    assert_converged([a, b, c], pool)


async def test_three_writers_converge_on_the_rule() -> None:
    """a writes x; b sees it and overwrites it; c, unaware, writes x with the largest value."""
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    c.store._last_ns = 2**62
    await a.store.create(Note(id="x", text="a"))
    pool = Pool()
    pool.add(a.flush())
    pool.deliver_all(b, random.Random(0))
    await b.store.update(Note(id="x", text="b"))
    await c.store.create(Note(id="x", text="c"))
    pool.add(b.flush())
    pool.add(c.flush())
    for seed in range(4):
        for peer in (a, b, c):
            pool.deliver_all(peer, random.Random(seed))
    assert await a.text("x") == "b"  # height 2 beats c's larger value at height 1
    assert_converged([a, b, c], pool)
    assert sorted(h for h, _c, _v in elements(a.replica)[key_of("x")]) == [1, 2]


# --------------------------------------------------------------------------- pending writes


async def test_a_pending_write_stays_visible_while_remote_deltas_for_its_key_arrive() -> None:
    a, b = Peer("a"), Peer("b")
    await a.store.create(Note(id="x", text="v1"))
    pool = Pool()
    await exchange([a, b], pool)
    await a.store.update(Note(id="x", text="pending at a"))
    mine = a.replica.view.get(key_of("x"))
    # b writes x twice, and another key, while a's write waits
    b.store._last_ns = 2**62
    await b.store.update(Note(id="x", text="b1"))
    pool.add(b.flush())
    await b.store.update(Note(id="x", text="b2"))
    await b.store.create(Note(id="other", text="o"))
    pool.add(b.flush())
    for cid in list(pool.blocks):
        if a.replica.height_of(cid) is None:
            changes = apply_checked(a.replica, cid, pool.delta(cid))
            assert key_of("x") not in {ch.key for ch in changes}
    assert a.replica.view.get(key_of("x")) == mine
    assert await a.text("x") == "pending at a" and await a.text("other") == "o"
    assert await a.store.verify() == []
    # once made into a delta (on top of b's), a's write wins everywhere
    made = a.flush()
    delta = decode_delta(*made[0])
    assert delta.height == 4 and set(delta.links) == set(b.replica.heads)
    assert len(delta.ops[0].removed) == 1  # b2's element: b1's was superseded by b2
    assert await a.text("x") == "pending at a"
    pool.add(made)
    changes = apply_checked(b.replica, made[0][0], delta)
    assert changes == [Change(key_of("x"), mine)]
    assert_converged([a, b], pool)


async def test_a_pending_delete_stays_deleted_while_remote_updates_arrive() -> None:
    a, b = Peer("a"), Peer("b")
    await a.store.create(Note(id="x", text="v1"))
    pool = Pool()
    await exchange([a, b], pool)
    await a.store.delete(Note, "x")
    await b.store.update(Note(id="x", text="b1"))
    pool.add(b.flush())
    pool.deliver_all(a, random.Random(0))
    assert await a.text("x") is None
    assert a.replica.pending == {key_of("x"): None}
    await exchange([a, b], pool)
    assert await a.text("x") is None and await b.text("x") is None
    assert_converged([a, b], pool)


async def test_a_pending_create_concurrent_with_a_remote_create() -> None:
    a, b = Peer("a"), Peer("b")
    b.store._last_ns = 2**62
    await b.store.create(Note(id="x", text="b's, larger"))
    pool = Pool()
    pool.add(b.flush())
    await a.store.create(Note(id="x", text="a's, pending"))
    pool.deliver_all(a, random.Random(0))
    assert await a.text("x") == "a's, pending"  # b's larger value waits behind a's pending write
    await exchange([a, b], pool)
    assert await b.text("x") == "a's, pending"  # a's delta saw b's and superseded it
    assert_converged([a, b], pool)


# --------------------------------------------------------------------------- idempotence, changes


async def test_applying_a_delta_twice_changes_nothing() -> None:
    a, b = Peer("a"), Peer("b")
    await a.store.create(Note(id="x", text="1"))
    await a.store.create(Note(id="y", text="2"))
    pool = Pool()
    pool.add(a.flush())
    (cid, block) = next(iter(pool.blocks.items()))
    delta = decode_delta(cid, block)
    first = b.replica.apply(cid, delta)
    assert sorted(c.key for c in first) == [key_of("x"), key_of("y")]
    state, heads, applied = dump(b.kv), dict(b.replica.heads), b.replica.applied
    assert b.replica.apply(cid, delta) == []
    assert b.replica.apply(cid, delta, local=True) == []
    assert dump(b.kv) == state and b.replica.heads == heads and b.replica.applied == applied
    # the writer gets its own delta back: nothing either
    state_a = dump(a.kv)
    assert a.replica.apply(cid, delta) == []
    assert dump(a.kv) == state_a
    # and after a crash
    b.reopen()
    assert b.replica.apply(cid, delta) == []
    assert dump(b.kv) == state


async def test_apply_reports_each_changed_key_and_nothing_for_a_no_op() -> None:
    a, b = Peer("a"), Peer("b")
    for id in ("keep", "upd", "del"):
        await a.store.create(Note(id=id, text="0"))
    pool = Pool()
    await exchange([a, b], pool)
    async with a.store.batch() as batch:
        batch.create(Note(id="new", text="n"))
        batch.update(Note(id="upd", text="u"))
        batch.delete(Note, "del")
    ((cid, block),) = a.flush()
    changes = apply_checked(b.replica, cid, decode_delta(cid, block))
    assert {c.key: c.value for c in changes} == {
        key_of("new"): a.replica.view.get(key_of("new")),
        key_of("upd"): a.replica.view.get(key_of("upd")),
        key_of("del"): None,
    }
    # a concurrent write that loses changes nothing visible
    a.store._last_ns = 2**62
    await a.store.update(Note(id="keep", text="winner"))
    await b.store.update(Note(id="keep", text="loser"))
    ((win_cid, win_block),) = a.flush()
    ((lose_cid, lose_block),) = b.flush()
    before = a.view()
    assert apply_checked(a.replica, lose_cid, decode_delta(lose_cid, lose_block)) == []
    assert a.view() == before
    assert apply_checked(b.replica, win_cid, decode_delta(win_cid, win_block)) == [
        Change(key_of("keep"), a.replica.view.get(key_of("keep")))
    ]
    # a remote delete of what is not there is no change
    ghost = Delta(1, (), (Op(key_of("ghost"), None, ()),), "z")
    ghost_cid, _ = encode_delta(ghost)
    assert apply_checked(b.replica, ghost_cid, ghost) == []


# --------------------------------------------------------------------------- check


def _bad_deltas(applied: bytes, height: int) -> dict[str, Delta]:
    good_op = Op(key_of("good"), raw_record("fine"), ())
    unknown = make_cid(DAG_CBOR, b"never applied")

    def with_op(op: Op) -> Delta:
        return Delta(height + 1, (applied,), (good_op, op), "evil")

    return {
        "link-not-applied": Delta(2, (unknown,), (good_op,), "evil"),
        "one-link-not-applied": Delta(height + 1, (applied, unknown), (good_op,), "evil"),
        "height-too-high": Delta(height + 2, (applied,), (good_op,), "evil"),
        "height-far-too-high": Delta(1000, (applied,), (good_op,), "evil"),
        "height-too-low": Delta(height, (applied,), (good_op,), "evil"),
        "height-1-with-a-link": Delta(1, (applied,), (good_op,), "evil"),
        "height-2-without-links": Delta(2, (), (good_op,), "evil"),
        "key-is-an-index-key": with_op(Op(index_keys(key_of("x"), raw_record("x"))[0], b"", ())),
        "key-is-an-updated-index-key": with_op(Op(index_keys(key_of("x"), raw_record("x"))[1], b"", ())),
        "key-empty": with_op(Op(b"", raw_record("x"), ())),
        "key-garbage": with_op(Op(b"\xff\xff\xff", raw_record("x"), ())),
        "key-without-id": with_op(Op(RECORDS, raw_record("x"), ())),
        "key-zero-namespace": with_op(Op(b"\x00r\x05notesx", raw_record("x"), ())),
        "key-zero-item-namespace": with_op(Op(NS + b"r\x00x", raw_record("x"), ())),
        "delete-of-an-index-key": with_op(Op(index_keys(key_of("x"), raw_record("x"))[0], None, ())),
        "value-empty": with_op(Op(key_of("x"), b"", ())),
        "value-short": with_op(Op(key_of("x"), b"\x01" + bytes(15), ())),
        "value-wrong-format": with_op(Op(key_of("x"), b"\x02" + bytes(16) + b"{}", ())),
    }


@pytest.mark.parametrize("case", sorted(_bad_deltas(b"", 1)))
async def test_check_refuses_a_bad_delta_and_nothing_is_written(case: str) -> None:
    a, b = Peer("a"), Peer("b")
    await a.store.create(Note(id="x", text="1"))
    await a.store.create(Note(id="good", text="before"))
    pool = Pool()
    await exchange([a, b], pool)
    await b.store.update(Note(id="x", text="pending at b"))
    (applied,) = b.replica.heads
    delta = _bad_deltas(applied, b.replica.height)[case]
    cid, _block = encode_delta(delta)
    state, heads, pending = dump(b.kv), dict(b.replica.heads), dict(b.replica.pending)
    with pytest.raises(DeltaError):
        b.replica.check(delta)
    with pytest.raises(DeltaError):
        b.replica.apply(cid, delta)
    assert dump(b.kv) == state
    assert b.replica.heads == heads and b.replica.pending == pending
    assert b.replica.height_of(cid) is None
    assert b.replica.applied == 1
    # the store is still usable and consistent
    assert await b.store.verify() == []
    pool.add(b.flush())
    pool.deliver_all(a, random.Random(0))
    assert_converged([a, b], pool)


async def test_a_remote_record_key_with_a_non_utf8_id_does_not_break_list() -> None:
    """A peer's record key whose id is not UTF-8 (no item store can write one): if it were
    applied, every node's ``list`` of that namespace would raise UnicodeDecodeError."""
    a = Peer("a")
    await a.store.create(Note(id="ok", text="fine"))
    pool = Pool()
    pool.add(a.flush())
    (head,) = a.replica.heads
    delta = Delta(2, (head,), (Op(RECORDS + b"\xff\xfe", raw_record("evil"), ()),), "evil")
    cid, _ = encode_delta(delta)
    with contextlib.suppress(DeltaError):
        a.replica.apply(cid, delta)
    assert [n.text for n in await a.store.list(Note)] == ["fine"]
    assert [n.text for n in await a.store.list(Note, sort="created_asc")] == ["fine"]


async def test_check_accepts_well_formed_deltas() -> None:
    replica = Replica(Memory(), "r")
    first = Delta(1, (), (Op(key_of("x"), raw_record("x"), ()),), "w")
    cid, _ = encode_delta(first)
    replica.check(first)
    replica.apply(cid, first)
    second = Delta(2, (cid,), (Op(key_of("x"), None, (cid,)),), "w")
    replica.check(second)
    # any namespace of the view's item stores is a record key
    other = Delta(
        2,
        (cid,),
        (Op(_namespace_key("other") + b"r" + _namespace_key("n") + b"1", raw_record("o"), ()),),
        "w",
    )
    replica.check(other)


# --------------------------------------------------------------------------- heads


async def test_heads_are_the_applied_deltas_nothing_applied_links_to() -> None:
    a, b, c, d = Peer("a"), Peer("b"), Peer("c"), Peer("d")
    await a.store.create(Note(id="a", text="a"))
    ((d1, b1),) = a.flush()
    apply_checked(b.replica, d1, decode_delta(d1, b1))
    await b.store.create(Note(id="b", text="b"))
    ((d2, b2),) = b.flush()
    await c.store.create(Note(id="c", text="c"))
    ((d3, b3),) = c.flush()
    assert decode_delta(d2, b2).links == (d1,) and decode_delta(d2, b2).height == 2

    assert d.replica.heads == {} and d.replica.height == 0
    apply_checked(d.replica, d1, decode_delta(d1, b1))
    apply_checked(d.replica, d3, decode_delta(d3, b3))
    assert d.replica.heads == {d1: 1, d3: 1} and d.replica.height == 1
    apply_checked(d.replica, d2, decode_delta(d2, b2))
    assert d.replica.heads == {d2: 2, d3: 1} and d.replica.height == 2
    assert {d.replica.height_of(x) for x in (d1, d2, d3)} == {1, 2}
    assert d.replica.height_of(make_cid(DAG_CBOR, b"unknown")) is None
    # d's next delta links both heads
    await d.store.create(Note(id="d", text="d"))
    ((d4, b4),) = d.flush()
    delta4 = decode_delta(d4, b4)
    assert set(delta4.links) == {d2, d3} and delta4.height == 3
    assert delta4.links == (d2, d3)  # highest first
    assert d.replica.heads == {d4: 3} and d.replica.height == 3
    # heads survive a reopen
    d.reopen()
    assert d.replica.heads == {d4: 3} and d.replica.height == 3


# --------------------------------------------------------------------------- reopen


async def test_leveldb_reopen_keeps_heads_pending_writes_and_view(tmp_path: Path) -> None:
    a = Peer("a", LevelDB(tmp_path / "a", sync=False), tmp_path / "a")
    b = Peer("b")
    try:
        await a.store.create(Note(id="x", text="1"))
        await a.store.create(Note(id="y", text="1"))
        pool = Pool()
        pool.add(a.flush())
        pool.deliver_all(b, random.Random(0))
        await b.store.create(Note(id="z", text="from b"))
        pool.add(b.flush())
        pool.deliver_all(a, random.Random(0))
        # writes not yet in a delta when a crashes
        await a.store.update(Note(id="x", text="2"))
        await a.store.delete(Note, "y")
        await a.store.create(Note(id="w", text="new"))
        view, heads, pending = a.view(), dict(a.replica.heads), dict(a.replica.pending)
        assert len(pending) == 3
        a.reopen()  # a new Replica on the reopened database
        assert a.view() == view
        assert a.replica.heads == heads and a.replica.height == 2
        assert a.replica.pending == pending
        assert await a.text("x") == "2" and await a.text("y") is None and await a.text("z") == "from b"
        assert await a.store.verify() == []
        # the pending writes still become a delta, which b accepts
        pool.add(a.flush())
        pool.deliver_all(b, random.Random(1))
        assert_converged([a, b], pool)
        assert await b.text("x") == "2" and await b.text("y") is None and await b.text("w") == "new"
        a.reopen()
        assert a.replica.pending == {} and a.view() == view
        assert_converged([a, b], pool)
    finally:
        a.kv.close()


def test_local_write_without_changes_writes_the_same() -> None:
    """With nobody listening (no on_change callback) local_write skips reading each record to
    tell what changed; what it writes must not depend on that."""
    told, untold = Peer("a"), Peer("a")
    writes = [
        ([(key_of("x"), raw_record("one", 1, 1))], []),
        ([(key_of("x"), raw_record("two", 1, 2)), (key_of("y"), raw_record("y", 3, 3))], []),
        ([], [key_of("x")]),
        ([(key_of("x"), raw_record("back", 4, 4))], [key_of("y")]),
    ]
    for puts, deletes in writes:
        assert told.replica.local_write(puts, deletes) != []
        assert untold.replica.local_write(puts, deletes, changes=False) == []
        assert dump(told.kv) == dump(untold.kv)
        assert told.replica.pending == untold.replica.pending


async def test_a_local_write_the_database_refuses_leaves_nothing_pending() -> None:
    """A full disk: the write raises and nothing of it may go out in a delta (the view never
    held it); before, the key stayed pending and the next delta sent a write nobody had made."""

    class Full(Memory):
        refuse = False

        def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
            if self.refuse:
                raise OSError(28, "No space left on device")
            super().write(puts, deletes)

    kv = Full()
    peer = Peer("a", kv)
    await peer.store.create(Note(id="kept", text="written"))
    kv.refuse = True
    with pytest.raises(OSError, match="No space"):
        await peer.store.create(Note(id="lost", text="never written"))
    assert set(peer.replica.pending) == {key_of("kept")}
    kv.refuse = False
    made = peer.replica.make_delta()
    assert made is not None and [op.key for op in made[2].ops] == [key_of("kept")]
    await peer.store.create(Note(id="lost", text="written now"))
    assert list(peer.replica.pending) == [key_of("kept"), key_of("lost")]


@pytest.mark.parametrize("seed", range(6))
async def test_commit_local_writes_what_the_general_merge_writes(seed: int) -> None:
    """``commit_local`` takes each key's live elements from ``make_delta`` instead of reading them
    again, and skips the view when the write is the only value left: the database must end up
    byte for byte as the general merge (``apply(local=True)``, reading everything) leaves it."""
    rng = random.Random(seed)
    fast, general, other = Peer("a"), Peer("a"), Peer("c")

    def both_write(key: bytes, value: bytes | None) -> None:
        for peer in (fast, general):
            if value is None:
                peer.replica.local_write([], [key])
            else:
                peer.replica.local_write([(key, value), *((k, b"") for k in index_keys(key, value))], [])

    for step in range(60):
        key, roll = key_of(f"k{rng.randrange(4)}"), rng.random()
        if roll < 0.45:
            both_write(key, raw_record(f"a{step}", step, step))
        elif roll < 0.55:
            both_write(key, None)
        elif roll < 0.8:  # a concurrent write elsewhere, applied here at once
            other.replica.local_write([(key, raw_record(f"c{step}", step, step))], [])
            for cid, block in other.flush():
                for peer in (fast, general):
                    peer.replica.apply(cid, decode_delta(cid, block))
        else:
            made_fast, made_general = fast.replica.make_delta(), general.replica.make_delta()
            if made_fast is None or made_general is None:
                assert made_fast is made_general is None
                continue
            cid, _block, delta = made_fast
            assert made_general[0] == cid
            fast.replica.commit_local(cid, delta)
            for op in made_general[2].ops:
                general.replica.pending.pop(op.key, None)
            general.replica.apply(cid, made_general[2], local=True)
            other.replica.apply(cid, delta)
        assert dump(fast.kv) == dump(general.kv)
        assert fast.replica.pending == general.replica.pending


async def test_a_crash_between_make_delta_and_commit_loses_nothing(tmp_path: Path) -> None:
    a = Peer("a", LevelDB(tmp_path / "a", sync=False), tmp_path / "a")
    b = Peer("b")
    try:
        await a.store.create(Note(id="x", text="1"))
        made = a.replica.make_delta()
        assert made is not None
        a.reopen()  # the block may be stored, the delta was never recorded
        assert set(a.replica.pending) == {key_of("x")} and a.replica.heads == {}
        again = a.replica.make_delta()
        assert again is not None and again[:2] == made[:2]  # the same delta, the same CID
        pool = Pool()
        pool.add(a.flush())
        pool.deliver_all(b, random.Random(0))
        assert_converged([a, b], pool)
    finally:
        a.kv.close()


# --------------------------------------------------------------------------- parse_record_key


def test_parse_record_key() -> None:
    assert parse_record_key(key_of("x")) == (NS, NOTES, b"x")
    assert parse_record_key(key_of("a/b\x00c")) == (NS, NOTES, b"a/b\x00c")
    for key in [
        b"",
        NS,
        NS + b"r",
        RECORDS,  # no id
        NS + b"c" + NOTES + bytes(8) + b"x",
        NS + b"u" + NOTES + bytes(8) + b"x",
        b"\x00r\x05notesx",
        NS + b"r\x00x",
        b"\x05ab",
        b"\xff" * 4,
    ]:
        assert parse_record_key(key) is None, key


# --------------------------------------------------------------------------- many concurrent writers


def _wide(count: int, key: bytes | None = None) -> list[tuple[bytes, Delta]]:
    """``count`` deltas of height 1 (concurrent writers): each writes ``key`` or a key of its own."""
    out = []
    for i in range(count):
        k = key if key is not None else key_of(f"w{i:04}")
        delta = Delta(1, (), (Op(k, raw_record(f"writer {i}"), ()),), f"w{i}")
        cid, _ = encode_delta(delta)
        out.append((cid, delta))
    return out


async def test_a_delta_made_on_more_than_max_links_heads_converges() -> None:
    """More heads than a delta may link: what a local write supersedes must still be an ancestor
    of its delta, or a node that applies the delta before the superseded one diverges."""
    a, b = Peer("a"), Peer("b")
    wide = _wide(MAX_LINKS + 1)
    for cid, delta in wide:
        a.replica.apply(cid, delta)
    assert len(a.replica.heads) == MAX_LINKS + 1
    # a deletes the key written by the head its next delta cannot link (the largest CID)
    left_out_cid, left_out = max(wide)
    (key,) = (op.key for op in left_out.ops)
    await a.store.delete(Note, key[len(RECORDS) :].decode())
    made = a.replica.make_delta()
    assert made is not None
    cid, block, delta = made
    decode_delta(cid, block)
    a.replica.commit_local(cid, delta)
    # b applies the linked heads, a's delta (every link applied: a valid order), then the last head
    for head_cid, head in wide:
        if head_cid in delta.links:
            b.replica.apply(head_cid, head)
    b.replica.apply(cid, delta)
    b.replica.apply(left_out_cid, left_out)
    assert b.replica.height_of(left_out_cid) == 1
    assert b.replica.view.get(key) == a.replica.view.get(key), "a and b disagree on the deleted key"


async def test_a_write_over_more_than_max_removed_live_values_makes_a_delta_others_accept() -> None:
    """MAX_REMOVED + 1 concurrent writes of one key, merged under one head: a's next write of that
    key must still make a delta that decodes (decode_delta refuses more than MAX_REMOVED)."""
    a = Peer("a")
    x = key_of("x")
    wide = _wide(MAX_REMOVED + 1, key=x)
    for cid, delta in wide:
        a.replica.apply(cid, delta)
    merge1 = Delta(2, tuple(c for c, _ in wide[:MAX_LINKS]), (Op(key_of("m1"), raw_record("m"), ()),), "m")
    m1, _ = encode_delta(merge1)
    a.replica.apply(m1, merge1)
    merge2 = Delta(3, (m1, wide[-1][0]), (Op(key_of("m2"), raw_record("m"), ()),), "m")
    m2, _ = encode_delta(merge2)
    a.replica.apply(m2, merge2)
    assert a.replica.heads == {m2: 3}
    assert len(elements(a.replica)[x]) == MAX_REMOVED + 1
    await a.store.update(Note(id="x", text="settled"))
    made = a.replica.make_delta()
    assert made is not None
    cid, block, delta = made
    assert max(len(op.removed) for op in delta.ops) <= MAX_REMOVED, (
        f"an op names {max(len(op.removed) for op in delta.ops)} superseded deltas: "
        f"every other node's decode_delta refuses more than {MAX_REMOVED}"
    )
    decode_delta(cid, block)  # what every other node does with it
