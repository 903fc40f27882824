"""Cases found by review of the repository and store: each failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from msuite.runtime.repo import Repo, RepoError
from msuite.runtime.store import AlreadyExists, NotFound
from tests.helpers import REPO
from tests.runtime.store.conftest import Note


def test_closing_the_repo_during_a_scan_does_not_crash(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from msuite.runtime.repo import Repo
        from tests.runtime.store.conftest import Note

        async def main():
            repo = Repo.open({str(tmp_path / "r")!r}, sync=False)
            async with repo.store.batch() as batch:
                for i in range(5000):
                    batch.create(Note(title=f"n{{i}}"))
            for cancel in (True, False):
                task = asyncio.create_task(repo.store.list(Note))
                await asyncio.sleep(0.005)
                if cancel:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    continue
                closer = asyncio.create_task(asyncio.to_thread(repo.close))
                outcome = await asyncio.gather(task, return_exceptions=True)
                await closer
                print(type(outcome[0]).__name__)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr  # a segfault gives -11
    assert result.stdout.strip() in {"list", "KVError"}


@pytest.mark.parametrize("leftover", ["repo.lock", "version.tmp"])
def test_a_repo_killed_while_being_created_opens(tmp_path: Path, leftover: str) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / leftover).write_text("")
    Repo.open(root).close()
    assert (root / "version").read_text() == "1\n"


def test_a_failed_open_leaves_nothing_open(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RepoError):
        Repo.open(tmp_path / "r", node_key=True, key_path=tmp_path / "afile" / "node.key")
    Repo.open(tmp_path / "r").close()  # neither the lock nor LevelDB's LOCK is held


@pytest.mark.parametrize("content", [b"\xff\xfe", b"0\n", b"-5\n", b""])
def test_damaged_versions(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "r"
    Repo.open(root).close()
    (root / "version").write_bytes(content)
    with pytest.raises(RepoError, match="damaged"):
        Repo.open(root)


def test_impossible_paths_are_repo_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepoError, match="cannot open"):
        Repo.open(tmp_path / "file" / "repo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "deeper")
    with pytest.raises(RepoError):
        Repo.open(tmp_path / "dangling")
    root = tmp_path / "r"
    Repo.open(root).close()
    (root / "blocks").rmdir()
    (root / "blocks").write_text("not a folder")
    with pytest.raises(RepoError, match="should be a folder"):
        Repo.open(root)


def test_repo_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leveldb' or 'memory"):
        Repo.open(tmp_path / "r", kv="bogus")  # type: ignore[arg-type]
    with pytest.raises(RepoError, match="cannot use leveldb"):
        Repo.open(":memory:", kv="leveldb")
    Repo.open(":memory:", key_path=tmp_path / "k.key").close()
    assert not (tmp_path / "k.key").exists()  # no key asked for, none made


def test_node_key_checks(tmp_path: Path) -> None:
    root = tmp_path / "r"
    Repo.open(root, node_key=True).close()
    key = root / "keys" / "node.key"
    key.chmod(0o644)
    with pytest.raises(RepoError, match="chmod 600"):
        Repo.open(root, node_key=True)
    key.chmod(0o600)
    key.write_bytes(b"garbage")
    with pytest.raises(RepoError, match=r"not a libp2p private key|truncated"):
        Repo.open(root, node_key=True)
    Repo.open(root).close()  # the failed opens released everything
    assert not list((root / "keys").glob(".*tmp"))


async def test_two_classes_cannot_share_a_namespace() -> None:
    class Other(Note):
        store_namespace = "notes"

    with Repo.open(":memory:") as repo:
        await repo.store.create(Note(title="a"))
        with pytest.raises(TypeError, match="both use namespace 'notes'"):
            await repo.store.create(Other(title="b"))


async def test_batch_results_survive_an_explicit_commit() -> None:
    with Repo.open(":memory:") as repo:
        async with repo.store.batch() as batch:
            batch.create(Note(id="a", title="a"))
            committed = await batch.commit()
        assert batch.results == committed and len(committed) == 1


class Plain:
    store_namespace = "plain"

    def __init__(self, id: str | None, text: str) -> None:
        self.id = id
        self.text = text
        self.created: datetime | None = None

    def to_bytes(self) -> bytes:
        return self.text.encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Plain:
        return cls(None, data.decode())


async def test_plain_items_are_copied_and_stamped() -> None:
    with Repo.open(":memory:") as repo:
        item = Plain(None, "x")
        stored = await repo.store.create(item)
        assert item.id is None and item.created is None  # the caller's object is untouched
        assert stored.id is not None and stored.created is not None
        taken = Plain("dup", "y")
        await repo.store.create(Plain("dup", "first"))
        with pytest.raises(AlreadyExists):
            async with repo.store.batch() as batch:
                batch.create(Plain(None, "new"))
                batch.create(taken)
        assert taken.created is None


async def test_bad_ids_are_clear_errors() -> None:
    with Repo.open(":memory:") as repo:
        with pytest.raises(TypeError, match="an id is a str"):
            await repo.store.read(Note, 5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="valid text"):
            await repo.store.read(Note, "\ud800")
        with pytest.raises(NotFound):
            await repo.store.delete(Note, "missing")


def test_fd_leak_free_reopen(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        Repo.open(tmp_path / "r").close()
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_a_prefixed_view_of_a_prefixed_view_is_one_prefix() -> None:
    """Nested views (the shared store's view inside the repository's key space) keep their
    meaning with one prefix and one call per operation."""
    from msuite.runtime.store.kv import Memory, Prefixed

    base = Memory()
    base.write([(b"outside", b"0"), (b"s/m-before", b"1")])
    inner = Prefixed(Prefixed(base, b"s/"), b"m-")
    assert inner._prefix == b"s/m-" and inner._kv is base
    inner.write([(b"k1", b"a"), (b"k2", b"b")], [b"before"])
    assert inner.get(b"k1") == b"a" and base.get(b"s/m-k2") == b"b" and base.get(b"s/m-before") is None
    snap = inner.snapshot()
    try:
        assert list(snap.scan(b"k")) == [(b"k1", b"a"), (b"k2", b"b")]
        assert list(snap.keys(b"", reverse=True)) == [b"k2", b"k1"]
    finally:
        snap.close()
    assert base.get(b"outside") == b"0"
