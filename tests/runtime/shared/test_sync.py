"""The shared store between real nodes on 127.0.0.1 (one process; each node its own host and repo)."""

from __future__ import annotations

import time
from pathlib import Path

from .nodes import Note, nodes, state, until


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
