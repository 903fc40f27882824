"""The repository on disk: layout, lock, format version, node key, bad paths."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import plyvel
import pytest

from msuite.runtime.repo import (
    FORMAT_VERSION,
    KeyFileError,
    Repo,
    RepoError,
    RepoLocked,
    decode_private_key,
    encode_private_key,
    read_seed,
)
from msuite.runtime.store import Memory
from msuite.spec import loads_manifest
from tests.helpers import rerun_without_privileges


def snapshot_tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_new_repo_layout(tmp_path: Path) -> None:
    with Repo.open(tmp_path / "r") as repo:
        root = tmp_path / "r"
        assert (root / "version").read_text() == f"{FORMAT_VERSION}\n"
        assert (root / "kv" / "CURRENT").is_file()  # a real LevelDB
        assert (root / "blocks").is_dir()
        assert stat.S_IMODE((root / "keys").stat().st_mode) == 0o700
        assert (root / "repo.lock").read_text() == f"{os.getpid()}\n"
        assert repo.key_path is None  # no p2p, no key
        status = repo.status()
        assert status["path"] == str(root) and status["format"] == FORMAT_VERSION
        assert status["kv"]["backend"] == "leveldb" and status["kv"]["bytes"] > 0
        assert status["blocks"] == {"path": str(root / "blocks"), "count": 0, "bytes": 0}
        assert status["disk"]["free"] > 0
    assert (root / "repo.lock").read_text() == ""  # released


def test_data_survives_reopen(tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "r")
    repo.kv.write([(b"k", b"v")])
    repo.close()
    with Repo.open(tmp_path / "r") as again:
        assert again.kv.get(b"k") == b"v"


def test_key_spaces_are_separate(tmp_path: Path) -> None:
    with Repo.open(tmp_path / "r") as repo:
        a, b = repo.space("acl"), repo.space("ac")
        a.write([(b"x", b"1")])
        assert b.get(b"lx") is None and b.get(b"x") is None
        snap = repo.space("ac").snapshot()
        assert list(snap.scan(b"")) == []
        snap.close()


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with (
        Repo.open(tmp_path / "r"),
        pytest.raises(RepoLocked, match=rf"in use by another msuite node \(pid {os.getpid()}\)"),
    ):
        Repo.open(tmp_path / "r")


def test_lock_across_two_processes(tmp_path: Path) -> None:
    root = tmp_path / "r"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from msuite.runtime.repo import Repo
                repo = Repo.open({str(root)!r})
                print("open", flush=True)
                sys.stdin.readline()
                repo.close()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(RepoLocked, match=rf"pid {holder.pid}\)"):
            Repo.open(root)
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    Repo.open(root).close()


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    root = tmp_path / "r"
    code = (
        f"from msuite.runtime.repo import Repo\nRepo.open({str(root)!r})\n"
        "print('open', flush=True)\nimport time; time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    holder.kill()
    holder.wait(timeout=30)
    holder.stdout.close()
    Repo.open(root).close()  # no stale lock: flock dies with its process


def test_a_file_is_not_a_repo(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("data")
    with pytest.raises(RepoError, match="is a file, not a repository folder"):
        Repo.open(path)
    assert path.read_text() == "data"


def test_a_newer_repo_is_refused_and_left_untouched(tmp_path: Path) -> None:
    root = tmp_path / "r"
    Repo.open(root).close()
    (root / "version").write_text(f"{FORMAT_VERSION + 1}\n")
    before = snapshot_tree(root)
    with pytest.raises(RepoError, match=rf"newer msuite \(repository format {FORMAT_VERSION + 1}\).*upgrade"):
        Repo.open(root)
    assert snapshot_tree(root) == before


def test_a_damaged_version_file(tmp_path: Path) -> None:
    root = tmp_path / "r"
    Repo.open(root).close()
    (root / "version").write_text("banana")
    with pytest.raises(RepoError, match="damaged"):
        Repo.open(root)


def test_a_folder_with_other_things_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot_tree(tmp_path)
    with pytest.raises(RepoError, match="not an msuite repository"):
        Repo.open(tmp_path)
    assert snapshot_tree(tmp_path) == before


def test_an_unreadable_folder(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if rerun_without_privileges(request):  # root may read and write anything
        return
    root = tmp_path / "r"
    root.mkdir()
    root.chmod(0o500)
    with pytest.raises(RepoError, match="permission denied"):
        Repo.open(root)


def test_a_corrupted_leveldb_names_the_path_and_the_repair(tmp_path: Path) -> None:
    root = tmp_path / "r"
    with Repo.open(root) as repo:
        repo.kv.write([(b"k%d" % i, b"v" * 100) for i in range(100)])
    for manifest in (root / "kv").glob("MANIFEST-*"):
        manifest.write_bytes(manifest.read_bytes()[:10] + b"\xab" * 200)
    with pytest.raises(RepoError) as info:
        Repo.open(root)
    message = str(info.value)
    assert str(root / "kv") in message and "corrupted" in message
    assert f"msuite repo repair {root}" in message
    # the failed open released the lock, and the suggested repair works
    repaired = subprocess.run(
        [sys.executable, "-m", "msuite", "repo", "repair", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert repaired.returncode == 0, repaired.stderr
    with Repo.open(root) as repo:
        assert all(repo.kv.get(b"k%d" % i) == b"v" * 100 for i in range(100))


def test_repo_status_command(tmp_path: Path) -> None:
    Repo.open(tmp_path / "r").close()
    result = subprocess.run(
        [sys.executable, "-m", "msuite", "repo", "status", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"format": 1' in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "msuite", "repo", "status", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1 and "not an msuite repository" in missing.stderr


def test_the_node_key_is_created_once_and_kept(tmp_path: Path) -> None:
    root = tmp_path / "r"
    with Repo.open(root, node_key=True) as repo:
        key = root / "keys" / "node.key"
        assert repo.key_path == key
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        seed = repo.node_seed()
        blob = key.read_bytes()
    with Repo.open(root, node_key=True) as again:
        assert again.node_seed() == seed and key.read_bytes() == blob


def test_the_node_key_is_libp2p_protobuf_that_py_libp2p_reads(tmp_path: Path) -> None:
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.pb import crypto_pb2

    with Repo.open(tmp_path / "r", node_key=True) as repo:
        assert repo.key_path is not None
        blob = repo.key_path.read_bytes()
        message = crypto_pb2.PrivateKey.FromString(blob)
        assert message.key_type == crypto_pb2.KeyType.Ed25519 and len(message.data) == 64
        assert decode_private_key(blob) == (1, message.data)
        key = Ed25519PrivateKey.from_bytes(repo.node_seed())
        assert key.get_public_key().to_bytes() == message.data[32:]


def test_a_key_written_by_py_libp2p_is_read(tmp_path: Path) -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair

    pair = create_new_key_pair()
    path = tmp_path / "node.key"
    path.write_bytes(pair.private_key.serialize())
    assert read_seed(path) == pair.private_key.to_bytes()


def test_a_manifest_opens_its_repo(tmp_path: Path) -> None:
    manifest = loads_manifest("name: n\nrepo: data\np2p: {port: 0}\n", base_dir=tmp_path)
    with Repo.for_manifest(manifest) as repo:
        assert repo.path == tmp_path / "data"
        assert repo.key_path == tmp_path / "data" / "keys" / "node.key"
    memory = loads_manifest('name: n\nrepo: ":memory:"\n', base_dir=tmp_path)
    with Repo.for_manifest(memory) as repo:
        assert repo.path is None and isinstance(repo.kv, Memory)
        assert repo.status() == {"path": ":memory:", "format": FORMAT_VERSION, "kv": {"backend": "memory"}}


def test_unsynced_writes_still_land(tmp_path: Path) -> None:
    with Repo.open(tmp_path / "r", sync=False) as repo:
        repo.kv.write([(b"a", b"1"), (b"b", b"2")], [b"c"])
        assert repo.kv.get(b"a") == b"1"
    started = time.monotonic()
    with Repo.open(tmp_path / "r") as repo:
        assert repo.kv.get(b"b") == b"2"
    assert time.monotonic() - started < 5


def test_plyvel_is_the_real_thing(tmp_path: Path) -> None:
    with Repo.open(tmp_path / "r") as repo:
        repo.kv.write([(b"x", b"y")])
    db = plyvel.DB(str(tmp_path / "r" / "kv"))
    assert db.get(b"x") == b"y"
    db.close()


def test_a_secp256k1_key_is_accepted_and_a_bad_one_named(tmp_path: Path) -> None:
    from msuite.runtime.repo import read_key

    secret = bytes(range(1, 33))
    good = tmp_path / "secp.key"
    good.write_bytes(encode_private_key(2, secret))
    assert read_key(good) == (2, secret)
    zero = tmp_path / "zero.key"
    zero.write_bytes(encode_private_key(2, bytes(32)))
    with pytest.raises(KeyFileError, match=r"zero\.key: not a valid secp256k1 private key"):
        read_key(zero)
    rsa = tmp_path / "rsa.key"
    rsa.write_bytes(encode_private_key(0, b"x" * 64))
    with pytest.raises(KeyFileError, match=r"rsa\.key: key type 0 is not supported"):
        read_key(rsa)
