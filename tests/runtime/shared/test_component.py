"""The shared store as a node component: status, metrics, names, and its blocks next to files."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from msuite.runtime.node import Node
from msuite.spec import Manifest

from .nodes import Note, drained, manifest, nodes, state, until


async def test_status_and_metrics_show_heads_height_and_sync(tmp_path: Path) -> None:
    async with nodes(2, tmp_path) as (a, b):
        for i in range(3):
            await a.shared("app").create(Note(id=str(i), text="x"))
            await a.shared("app").flush()
        await until(lambda: state(b), {"0": "x", "1": "x", "2": "x"}, timeout=3)
        address = b.http.address
        assert address is not None

        def fetch() -> bytes:
            with urllib.request.urlopen(f"{address}/status", timeout=10) as response:
                body: bytes = response.read()
            return body

        entry = json.loads(await asyncio.to_thread(fetch))["shared"]
        assert entry["channel"] == "test" and entry["state"] == "running"
        assert (entry["heads"], entry["height"], entry["deltas"]) == (1, 3, 3)
        assert entry["pending_writes"] == 0 and entry["bad_deltas"] == 0
        assert entry["peers"][a.p2p.peer_id]["last_sync"] is not None
        families = {
            f.name: f
            for f in text_string_to_metric_families(b.metrics.render().decode())
            if "shared" in f.name
        }
        assert families["msuite_shared_height"].samples[0].value == 3
        assert families["msuite_shared_deltas_applied"].samples[0].value == 3
        synced = families["msuite_shared_last_sync_timestamp_seconds"].samples
        assert [s.labels["peer"] for s in synced] == [a.p2p.peer_id]


async def test_files_gc_keeps_the_deltas_blocks(tmp_path: Path) -> None:
    data = manifest("solo", tmp_path).model_dump(mode="json", exclude_unset=True)
    data["files"] = True
    async with Node(Manifest.model_validate(data)) as node:
        await node.shared("app").create(Note(id="k", text="kept"))
        await node.shared("app").flush()
        loose = await node.files.add(b"not pinned", pin=False)
        result = await node.files.gc()
        assert result.blocks == 1 and not node.files.has(loose)
        head = next(iter(node.component("shared").replica.heads))
        assert node.repo.blockstore().has(head)
        assert node.component("shared").bitswap is node.files.bitswap


async def test_namespace_names_are_checked(tmp_path: Path) -> None:
    async with Node(manifest("solo", tmp_path)) as node:
        with pytest.raises(ValueError, match="msuite's own"):
            node.shared("msuite.acl")
        with pytest.raises(ValueError, match="1-255 bytes"):
            node.shared("")
        with pytest.raises(TypeError):
            node.shared(b"app")  # type: ignore[arg-type]
        assert node.shared("app") is node.shared("app")
        assert "app" in node.component("shared").status()["namespaces"]


async def test_reads_go_to_the_running_replica_and_fail_clearly_once_stopped(tmp_path: Path) -> None:
    """A namespace's point reads are bound to the replica while the node runs (no detour through
    the view adapter); once the node stops they raise SharedError, not a closed-database error."""
    from msuite.runtime.shared.shared import SharedError

    node = Node(manifest("solo", tmp_path))
    async with node:
        early = node.shared("app")
        await early.create(Note(id="k", text="kept"))
        assert (await early.read(Note, "k")).text == "kept"
        assert await early.exists(Note, "k")
        late = node.shared("other")  # made after the start: bound too
        await late.create(Note(id="k", text="other"))
        assert (await late.read(Note, "k")).text == "other"
    for store in (early, late):
        with pytest.raises(SharedError, match="while the node runs"):
            await store.read(Note, "k")
        with pytest.raises(SharedError, match="while the node runs"):
            await store.exists(Note, "k")


async def test_on_change_added_later_sees_the_changes_after_it(tmp_path: Path) -> None:
    """Until a namespace has a callback, local writes skip working out what changed; the first
    callback (here on another namespace first) turns it on for every namespace."""
    from msuite.runtime.shared.shared import ItemKey

    seen: list[tuple[str, str | None, str]] = []

    def on_change(key: ItemKey, value: bytes | None, origin: str) -> None:
        seen.append((key.id, None if value is None else value.decode(), origin))

    async with Node(manifest("solo", tmp_path)) as node:
        app = node.shared("app")
        await app.create(Note(id="before", text="unseen"))
        node.shared("other", on_change=lambda *_: None)
        app.on_change(on_change)
        await app.create(Note(id="after", text="seen"))
        await app.update(Note(id="before", text="changed"))
        await app.update(Note(id="before", text="changed"))  # the same bytes but a new time
        await app.delete(Note, "after")
        await drained(app)
        assert [(id, origin) for id, _, origin in seen] == [
            ("after", "local"),
            ("before", "local"),
            ("before", "local"),
            ("after", "local"),
        ]
        assert '"text":"seen"' in (seen[0][1] or "") and seen[-1][1] is None
