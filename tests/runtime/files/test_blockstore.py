"""The blockstores: write-once puts, verified gets, crash safety and a full disk."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from msuite.runtime.files.blockstore import (
    Blockstore,
    BlockstoreError,
    BlockstoreStats,
    FlatBlockstore,
    MemoryBlockstore,
)
from msuite.runtime.files.cids import DAG_PB, RAW, make_cid, multihash_of

BLOCK = b"hello blocks"
CID = make_cid(RAW, BLOCK)


@pytest.fixture(params=["flat", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Blockstore:
    return FlatBlockstore(tmp_path / "blocks") if request.param == "flat" else MemoryBlockstore()


def test_put_get_has_delete(store: Blockstore) -> None:
    assert not store.has(CID) and store.get(CID) is None and store.size(CID) is None
    assert store.put(CID, BLOCK)
    assert store.has(CID) and store.get(CID) == BLOCK and store.size(CID) == len(BLOCK)
    assert not store.put(CID, BLOCK)
    assert list(store.keys()) == [multihash_of(CID)]
    assert store.stats() == BlockstoreStats(1, len(BLOCK), 0)
    assert store.delete(CID)
    assert not store.delete(CID)
    assert not store.has(CID) and store.get(CID) is None
    assert store.stats() == BlockstoreStats(0, 0, 0)


def test_blocks_are_keyed_by_multihash(store: Blockstore) -> None:
    assert store.put(CID, BLOCK)
    as_dag_pb = make_cid(DAG_PB, BLOCK)
    assert not store.put(as_dag_pb, BLOCK)
    assert store.get(as_dag_pb) == BLOCK
    assert store.stats().blocks == 1


def test_the_layout_is_kubos_flatfs(tmp_path: Path) -> None:
    store = FlatBlockstore(tmp_path)
    store.put(CID, BLOCK)
    (path,) = (p for p in tmp_path.rglob("*.data"))
    name = path.name.removesuffix(".data")
    assert name.startswith("CIQ") and name == name.upper()  # base32 of 0x12 0x20 ...
    assert path.parent.name == name[-3:-1]


def test_counts_survive_reopening(tmp_path: Path) -> None:
    store = FlatBlockstore(tmp_path)
    for i in range(20):
        store.put(make_cid(RAW, bytes([i]) * i), bytes([i]) * i)
    assert FlatBlockstore(tmp_path).stats() == BlockstoreStats(20, sum(range(20)), 0)
    assert len(set(FlatBlockstore(tmp_path).keys())) == 20


def test_a_tampered_block_is_removed_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FlatBlockstore(tmp_path)
    store.put(CID, BLOCK)
    (path,) = tmp_path.rglob("*.data")
    path.write_bytes(b"hello blockz")
    assert store.get(CID) is None
    assert not path.exists() and not store.has(CID)
    assert store.stats() == BlockstoreStats(0, 0, 1)
    assert [r.getMessage() for r in caplog.records if "failed verification" in r.getMessage()] != []
    assert store.get(CID) is None and store.stats().corrupt == 1


def test_leftover_temporary_files_are_removed_at_open(tmp_path: Path) -> None:
    FlatBlockstore(tmp_path).put(CID, BLOCK)
    shard = next(p for p in tmp_path.iterdir() if p.is_dir())
    (shard / ".tmp-deadbeef").write_bytes(b"half a blo")
    store = FlatBlockstore(tmp_path)
    assert not list(tmp_path.rglob(".tmp-*"))
    assert store.stats() == BlockstoreStats(1, len(BLOCK), 0)


def test_a_full_disk_is_an_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FlatBlockstore(tmp_path)

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(BlockstoreError, match=r"cannot store block bafkrei\w+: the disk is full"):
        store.put(CID, BLOCK)
    monkeypatch.undo()
    assert not store.has(CID)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert store.stats() == BlockstoreStats(0, 0, 0)


def test_two_threads_putting_the_same_blocks_count_each_once(tmp_path: Path) -> None:
    store = FlatBlockstore(tmp_path)
    blocks = [bytes([i]) * 1000 for i in range(100)]

    def put_all() -> None:
        for block in blocks:
            store.put(make_cid(RAW, block), block)

    threads = [threading.Thread(target=put_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.stats() == BlockstoreStats(100, 100_000, 0)
    assert FlatBlockstore(tmp_path).stats() == store.stats()


WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from msuite.runtime.files.blockstore import FlatBlockstore
    from msuite.runtime.files.cids import RAW, make_cid

    store = FlatBlockstore(Path(sys.argv[1]))
    i = 0
    while True:
        block = os.urandom(1 + i % 300_000)
        store.put(make_cid(RAW, block), block)
        if i == 0:
            print("writing", flush=True)
        i += 1
    """
)


def test_sigkill_leaves_every_block_whole_or_absent(tmp_path: Path) -> None:
    rng = random.Random(7)
    for _ in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == "writing\n"
        time.sleep(rng.uniform(0.01, 0.2))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        store = FlatBlockstore(tmp_path)
        assert not list(tmp_path.rglob(".tmp-*"))
        keys = list(store.keys())
        assert len(keys) == store.stats().blocks > 0
        for key in keys:
            assert store.get(b"\x01\x55" + key) is not None
        assert store.stats().corrupt == 0


def test_a_put_makes_its_shard_folder_only_when_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FlatBlockstore(tmp_path)
    made: list[str] = []
    real = os.makedirs

    def makedirs(path: str, *args: object, **kwargs: object) -> None:
        made.append(path)
        real(path, exist_ok=True)

    monkeypatch.setattr(os, "makedirs", makedirs)
    assert store.put(CID, BLOCK)
    shard = str(next(p for p in tmp_path.iterdir() if p.is_dir()))
    # another block whose file goes in the same shard folder
    other = next(b for b in (b"%d" % i for i in range(100_000)) if _shard(store, b) == shard)
    other_cid = make_cid(RAW, other)
    assert store.put(other_cid, other)
    assert made == [shard]  # one mkdir for the shard, none for its second block
    for path in Path(shard).iterdir():
        path.unlink()
    os.rmdir(shard)  # removed from under the store: the next put makes it again
    assert store.put(other_cid, other)
    assert made == [shard, shard]
    assert store.get(other_cid) == other


def _shard(store: FlatBlockstore, block: bytes) -> str:
    return store._path(multihash_of(make_cid(RAW, block)))[0]
