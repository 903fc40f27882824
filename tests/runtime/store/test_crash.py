"""kill -9 in the middle of writing: acknowledged writes survive, records and indexes agree."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from msuite.runtime.repo import Repo
from tests.runtime.store.conftest import Note

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from msuite.runtime.repo import Repo
    from tests.runtime.store.conftest import Note

    async def main():
        repo = Repo.open(sys.argv[1], sync=True)
        store = repo.store
        i = 0
        while True:  # bounded by the parent, which kills this process
            note = await store.create(Note(id=f"n{i:06d}", title="v0", rank=i))
            print(f"created {note.id}", flush=True)
            if i % 3 == 0:
                await store.update(note.model_copy(update={"title": "v1"}))
                print(f"updated {note.id}", flush=True)
            if i % 7 == 6:
                await store.delete(Note, f"n{i - 1:06d}")
                print(f"deleted n{i - 1:06d}", flush=True)
            i += 1

    asyncio.run(main())
    """
)


def test_sigkill_mid_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    repo_dir = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(repo_dir)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True, env=env, cwd=repo_dir
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(acknowledged) < 400 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(line.strip())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 100, "the writer made too little progress to test anything"

    expected: dict[str, str | None] = {}
    for line in acknowledged:
        action, id = line.split()
        expected[id] = {"created": "v0", "updated": "v1", "deleted": None}[action]
    # the write in flight at the kill may or may not have landed: it touches at most
    # the newest item, the one before it, or the next one
    newest = max(int(id[1:]) for id in expected)
    in_flight = {f"n{i:06d}" for i in (newest - 1, newest, newest + 1)}

    async def check() -> None:
        with Repo.open(root) as repo:
            store = repo.store
            present = {n.id: n.title for n in await store.list(Note)}
            for id, title in expected.items():
                if id not in in_flight:
                    assert present.get(id) == title, id
            assert await store.verify() == []  # no index entry without its record, and back

    asyncio.run(check())
