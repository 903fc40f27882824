"""The shared store between real nodes on 127.0.0.1 (one process; each node its own host and repo)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from msuite.runtime.shared.shared import ItemKey, SharedStore

from .nodes import Note, agree, drained, nodes, rebroadcast_heard, state, until


async def test_three_nodes_converge_after_create_update_and_delete(tmp_path: Path) -> None:
    async with nodes(3, tmp_path) as (a, b, c):
        started = time.monotonic()
        await a.shared("app").create(Note(id="x", text="one"))
        await b.shared("app").create(Note(id="y", text="two"))
        for node in (a, b, c):
            await until(lambda n=node: state(n), {"x": "one", "y": "two"}, timeout=3)
        await c.shared("app").update(Note(id="x", text="uno"))
        await a.shared("app").delete(Note, "y")
        for node in (a, b, c):
            await until(lambda n=node: state(n), {"x": "uno"}, timeout=3)
        assert time.monotonic() - started < 6


async def test_a_thousand_writes_over_three_nodes_converge_within_two_seconds(tmp_path: Path) -> None:
    async with nodes(3, tmp_path) as trio:
        stores = [n.shared("app") for n in trio]

        async def writer(index: int) -> None:
            for i in range(334 if index < 2 else 332):
                await stores[index].create(Note(id=f"{index}-{i}", text=f"v{i}"))
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let announcements out while writing

        await asyncio.gather(*(writer(i) for i in range(3)))
        last = time.monotonic()
        for node in trio:
            await until(lambda n=node: count(n), 1000, timeout=max(0.1, 2 - (time.monotonic() - last)))
        expected = await state(trio[0])
        for node in trio[1:]:
            assert await state(node) == expected
        # concurrent writes of one key from every node: one winner everywhere
        await asyncio.gather(*(s.update(Note(id="0-0", text=f"from {i}")) for i, s in enumerate(stores)))
        final = await agree(trio, timeout=2)
        for node in trio:
            assert await node.shared("app").verify() == []
        assert final["0-0"] in {"from 0", "from 1", "from 2"}
        assert trio[0].component("shared").status()["conflicts"] >= 1


async def count(node: Any) -> int:
    return await node.shared("app").count(Note)


async def test_another_channel_receives_nothing_and_namespaces_stay_apart(tmp_path: Path) -> None:
    async with nodes(3, tmp_path, channels=("one", "one", "two")) as (a, b, c):
        from .nodes import mesh

        await mesh([a, b], "msuite/one/shared")
        await a.shared("app").create(Note(id="x", text="in app"))
        await a.shared("other").create(Note(id="x", text="in other"))
        await c.shared("app").create(Note(id="z", text="channel two"))
        await until(lambda: state(b), {"x": "in app"}, timeout=3)
        await until(lambda: state(b, "other"), {"x": "in other"}, timeout=3)
        await a.shared("app").flush()
        await rebroadcast_heard(b, a)  # a announced again: had c been on its topic, it had heard
        assert await state(c) == {"z": "channel two"} and await state(c, "other") == {}
        assert await state(a) == {"x": "in app"} and await state(b) == {"x": "in app"}
        # c stored none of channel one's deltas, and never heard of its topic's heads
        shared_c = c.component("shared")
        assert shared_c.status()["deltas"] == 1 and shared_c.counters.deltas_fetched == 0
        blocks = c.repo.blockstore()
        assert all(not blocks.has(head) for head in a.component("shared").replica.heads)
        await a.shared("app").delete(Note, "x")
        await until(lambda: state(b), {}, timeout=3)
        assert await state(b, "other") == {"x": "in other"}


async def test_on_change_fires_once_per_effective_change_local_and_remote(tmp_path: Path) -> None:
    seen: dict[str, list[tuple[str, str, str | None, str]]] = {"a": [], "b": []}

    def recorder(name: str) -> Any:
        def on_change(key: ItemKey, value: bytes | None, origin: str) -> None:
            text = None if value is None else SharedStore.decode(Note, value).text
            seen[name].append((key.namespace, key.id, text, origin))

        return on_change

    async with nodes(2, tmp_path) as (a, b):
        store_a = a.shared("app", recorder("a"))
        b.shared("app", recorder("b"))
        assert b.shared("app") is b.shared("app")
        await store_a.create(Note(id="x", text="one"))
        await store_a.update(Note(id="x", text="two"))
        await until(lambda: state(b), {"x": "two"}, timeout=3)
        await store_a.delete(Note, "x")
        await until(lambda: state(b), {}, timeout=3)
        await rebroadcast_heard(b, a)  # the same heads again: they change nothing
        await drained(b.shared("app"))
        await drained(store_a)
        me = a.p2p.peer_id
        assert seen["a"] == [
            ("notes", "x", "one", "local"),
            ("notes", "x", "two", "local"),
            ("notes", "x", None, "local"),
        ]
        # b may get "one" and "two" in one catch-up round: then only the effective change fires
        assert seen["b"][-1] == ("notes", "x", None, me)
        assert [entry[2] for entry in seen["b"]] in (["one", "two", None], ["two", None])
        assert all(origin == me for *_, origin in seen["b"])


async def test_a_restarted_node_catches_up_and_a_late_node_gets_everything(tmp_path: Path) -> None:
    from msuite.runtime.node import Node

    from .nodes import manifest

    async with nodes(2, tmp_path) as (a, b):
        for i in range(50):
            await a.shared("app").create(Note(id=f"before-{i}", text="x"))
        await until(lambda: count(b), 50, timeout=3)
        await b.stop()
        for i in range(50):
            await a.shared("app").create(Note(id=f"while-{i}", text="y"))
        await a.shared("app").update(Note(id="before-0", text="changed"))
        b2 = Node(manifest("n1", tmp_path, (a.p2p.addrs[0],)))
        late = Node(manifest("late", tmp_path, (a.p2p.addrs[0],)))
        await b2.start()
        await late.start()
        try:
            expected = await state(a)
            assert len(expected) == 100
            await until(lambda: state(b2), expected, timeout=8)
            await until(lambda: state(late), expected, timeout=8)
            assert await late.shared("app").verify() == []
        finally:
            await late.stop()
            await b2.stop()


async def test_a_stopping_node_turns_pending_writes_into_a_delta_that_survives_the_restart(
    tmp_path: Path,
) -> None:
    from msuite.runtime.node import Node

    from .nodes import manifest

    async with nodes(2, tmp_path, batch_delay="5s") as (a, b):
        await a.shared("app").create(Note(id="slow", text="pending"))
        assert a.component("shared").status()["pending_writes"] == 1
        await a.stop()  # makes the delta (the batch delay has not passed)
        a2 = Node(manifest("n0", tmp_path, (b.p2p.addrs[0],)))
        await a2.start()
        try:
            assert await state(a2) == {"slow": "pending"}
            assert a2.component("shared").status()["pending_writes"] == 0
            assert a2.component("shared").status()["deltas"] == 1
            await until(lambda: state(b), {"slow": "pending"}, timeout=5)
        finally:
            await a2.stop()


async def test_big_items_are_refused_and_a_big_batch_is_split_into_deltas_that_fit(tmp_path: Path) -> None:
    async with nodes(2, tmp_path) as (a, b):
        store = a.shared("app")
        with pytest.raises(ValueError, match="over the shared store's"):
            await store.create(Note(id="huge", text="x" * (1024 * 1024)))
        assert await store.count(Note) == 0
        async with store.batch() as batch:
            for i in range(8):
                batch.create(Note(id=f"big-{i}", text=str(i) * 500_000))
        await store.flush()
        assert a.component("shared").status()["deltas"] >= 3  # 4 MB in deltas of at most 2 MiB
        await until(lambda: count(b), 8, timeout=10)
        assert await state(b) == await state(a)


async def test_sync_returns_once_every_write_acknowledged_elsewhere_is_applied_here(tmp_path: Path) -> None:
    from msuite.runtime.shared.shared import SyncTimeout

    async with nodes(3, tmp_path, batch_delay="5s") as (a, b, c):
        for i in range(20):
            await a.shared("app").create(Note(id=f"a{i}", text="x"))  # pending on a: 5 s batch delay
        await b.shared("other").create(Note(id="b", text="y"))
        began = time.monotonic()
        await c.shared("app").sync(timeout=5)
        assert time.monotonic() - began < 2
        assert await count(c) == 20 and await state(c, "other") == {"b": "y"}
        assert a.component("shared").status()["pending_writes"] == 0  # the request made a send
        # a node on the topic that never answers (it does not run the shared store): sync says so
        from msuite.runtime.node import Node
        from msuite.spec import Manifest

        mute = Node(
            Manifest.model_validate(
                {"name": "mute", "repo": ":memory:", "p2p": {"port": 0, "bootstrap": [c.p2p.addrs[0]]}}
            )
        )
        async with mute:

            async def ignore(message: Any) -> None:
                pass

            await mute.p2p.pubsub.subscribe("msuite/test/shared", ignore)
            await until(lambda: _peers_of(c), 3, timeout=10)
            with pytest.raises(SyncTimeout, match="not in step with 1 of 3 nodes"):
                await c.shared("app").sync(timeout=0.5)


async def _peers_of(node: Any) -> int:
    return len(node.p2p.pubsub.peers("msuite/test/shared"))


async def test_sync_hears_from_a_node_that_never_wrote(tmp_path: Path) -> None:
    async with nodes(2, tmp_path) as (a, b):
        began = time.monotonic()
        await a.shared("app").sync(timeout=3)  # b has no heads: it must still answer
        assert time.monotonic() - began < 2
        await b.shared("app").sync(timeout=3)
