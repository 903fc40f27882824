"""Interop with Helia (JS IPFS): an msuite node in this process and a Helia peer
(``js/helia_peer.mjs``, a Node.js subprocess driven with JSON lines) exchange files over
Bitswap on 127.0.0.1, each dialling the other.

Measured throughput (the tests print it; run with ``-s``), 2026-12-03, Node 20.20, Python 3.11,
a 2-CPU machine, loopback, random bytes so that every block crosses the wire:

- Helia fetching (``cat``, 256 KiB leaves) from msuite: 46 MiB at 47 to 85 MB/s over ten runs
  (median about 71 MB/s), either side dialling; 3 MiB at 33 to 49 MB/s (start-up dominates).
- msuite fetching from Helia, 46 MiB: 54 to 96 MB/s with 256 KiB leaves, 64 to 88 MB/s with
  1 MiB leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from msuite.runtime.files import bitswap as bitswap_module
from msuite.runtime.node import Node
from msuite.spec import Manifest
from tests.helpers import eventually

JS = Path(__file__).parent / "js"
INSTALL = f"cd {JS.relative_to(Path(__file__).parents[3])} && npm ci --engine-strict --no-audit --no-fund"
COMMAND_TIMEOUT = 60.0
"""Longest one command to the Helia peer may take (the 46 MiB add and cat take a few seconds)."""

MIB = 1024 * 1024


def _need_helia() -> str:
    """The ``node`` binary; skips (saying what is missing and how to install it) when the
    Helia peer cannot run here."""
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"`node` (Node.js 20 or later) is not on PATH: install it, then run `{INSTALL}`")
    if not (JS / "node_modules").is_dir():
        pytest.skip(f"{JS / 'node_modules'} is missing: run `{INSTALL}`")
    return node


class Helia:
    """The Helia peer subprocess: one JSON command per line, one JSON answer per line."""

    def __init__(self, process: asyncio.subprocess.Process, ready: dict[str, Any], stderr: Path) -> None:
        self.process = process
        self.peer: str = ready["peer"]
        self.addrs: list[str] = ready["addrs"]
        self.stderr = stderr

    async def call(self, cmd: str, timeout: float = COMMAND_TIMEOUT, **args: Any) -> dict[str, Any]:
        """Send one command and return its answer; AssertionError if it failed, TimeoutError after
        ``timeout`` seconds."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"helia_peer exited during {cmd!r}: {self.stderr.read_text()[-4000:]}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise AssertionError(f"helia_peer {cmd} {args} failed: {answer.get('error')}")
        return answer


@contextlib.asynccontextmanager
async def helia(folder: Path) -> AsyncIterator[Helia]:
    """A started Helia peer; killed on the way out whatever happened."""
    node = _need_helia()
    stderr = folder / "helia_peer.stderr"
    with stderr.open("wb") as errors:  # a file, not a pipe: nobody has to drain it
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS / "helia_peer.mjs"),
            cwd=JS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line:
            raise AssertionError(f"helia_peer did not start: {stderr.read_text()[-4000:]}")
        ready = json.loads(line)
        assert ready["ready"] and ready["addrs"], ready
        peer = Helia(process, ready, stderr)
        yield peer
        with contextlib.suppress(Exception):
            await peer.call("stop", timeout=10)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 10)


@contextlib.asynccontextmanager
async def msuite(folder: Path) -> AsyncIterator[Node]:
    """A started msuite node with files (its repository in ``folder``), on 127.0.0.1."""
    spec = Manifest.model_validate(
        {
            "name": "m",
            "repo": str(folder / "m"),
            "p2p": {"host": "127.0.0.1", "port": 0, "bootstrap": []},
            "files": {"timeout": "30s"},
            "http": {"port": 0},
        }
    )
    async with Node(spec) as node:
        yield node


async def connect(node: Node, peer: Helia, *, dialler: str) -> None:
    """Connect ``node`` and ``peer``: ``dialler`` is the side that dials."""
    if dialler == "msuite":
        await node.p2p.connect(peer.addrs[0])
    else:
        await peer.call("dial", addr=node.p2p.addrs[0])
    await eventually(lambda: peer.peer in [p["id"] for p in node.p2p.peers()], timeout=10)


def write(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; return their sha256. Random rather than
    ``content()``, whose 256 KiB leaves repeat: no block of one file is already on the other side
    because of an earlier file, so every block crosses the wire."""
    rng = random.Random(f"{path.name} {size} {seed}")
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for start in range(0, size, MIB):
            piece = rng.randbytes(min(MIB, size - start))
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(MIB):
            digest.update(piece)
    return digest.hexdigest()


DIALLERS = ["msuite", "helia"]


SIZES = (1, 262145, 3 * MIB + 17, 46 * MIB + 5)


def _rate(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:.1f} MB/s"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dialler", DIALLERS, ids=lambda d: f"{d} dials")
async def test_helia_fetches_what_msuite_added(tmp_path: Path, dialler: str) -> None:
    async with helia(tmp_path) as peer, msuite(tmp_path) as node:
        await connect(node, peer, dialler=dialler)
        for size in SIZES:
            source = tmp_path / f"in-{size}.bin"
            expected = write(source, size)
            cid = str(await node.files.add(source))
            stats = node.files.bitswap.stats
            sent = stats[peer.peer].blocks_sent if peer.peer in stats else 0
            out = tmp_path / f"out-{size}.bin"
            got = await peer.call("cat", cid=cid, out=str(out), timeout_ms=int(COMMAND_TIMEOUT * 1000) - 5000)
            assert got["bytes"] == size
            assert sha256_of(out) == expected
            assert node.files.bitswap.stats[peer.peer].blocks_sent > sent  # it came over Bitswap
            # the same file added on Helia (its own importer, Kubo's options) has the same CID
            assert (await peer.call("add", path=str(source)))["cid"] == cid
            if size > MIB:
                print(f"\nhelia cat of {size} B from msuite ({dialler} dials): {_rate(size, got['seconds'])}")
        assert (stats[peer.peer].rejected, stats[peer.peer].bad_messages) == (0, 0)
        assert node.p2p.status()["stream_errors"]["count"] == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dialler", DIALLERS, ids=lambda d: f"{d} dials")
@pytest.mark.parametrize("command", ["add", "add_bytes_1mib_chunks"])
async def test_msuite_fetches_what_helia_added(tmp_path: Path, dialler: str, command: str) -> None:
    async with helia(tmp_path) as peer, msuite(tmp_path) as node:
        await connect(node, peer, dialler=dialler)
        for size in SIZES:
            source = tmp_path / f"in-{size}.bin"
            expected = write(source, size)
            cid = (await peer.call(command, path=str(source)))["cid"]
            assert not node.files.has(cid)
            started = time.monotonic()
            data = await node.files.cat(cid, timeout=COMMAND_TIMEOUT)
            seconds = time.monotonic() - started
            assert hashlib.sha256(data).hexdigest() == expected
            if command == "add":  # 256 KiB chunks: msuite's importer gives the same CID
                assert str(await node.files.add(source, pin=False)) == cid
            if size > MIB:
                print(
                    f"\nmsuite cat of {size} B from helia ({command}, {dialler} dials): {_rate(size, seconds)}"
                )
        stats = node.files.bitswap.stats[peer.peer]
        # every block came from Helia: 185 + 3 leaves and 5 dag-pb nodes of 256 KiB chunks, or
        # 47 + 4 + 1 leaves and 2 nodes of 1 MiB (the 1-byte file is one raw leaf either way)
        assert stats.blocks_received == (
            1 + 2 + 1 + 13 + 1 + 185 + 3 if command == "add" else 1 + 1 + 4 + 1 + 47 + 1
        )
        assert (stats.rejected, stats.bad_messages, stats.duplicates) == (0, 0, 0)
        assert node.files.bitswap.wanted() == []
        assert node.p2p.status()["stream_errors"]["count"] == 0


@pytest.mark.timeout(120)
async def test_wants_sent_before_the_other_side_has_the_file_are_served_once_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """msuite keeps a peer's unserved wants and sends the blocks when they arrive, so Helia's
    ``cat`` ends as soon as msuite adds the file. Helia sends DONT_HAVE once per want and does
    not send blocks it adds later to peers that asked for them (helia 6: adding a block does not
    notify the bitswap ledgers; it looks at a peer's wants again when a message from that peer
    arrives), so msuite sends the wants Helia refused again, a quarter second after the
    DONT_HAVE and then at gaps doubling up to ``NUDGE_MAX``: it gets the file within about a
    second of Helia's add. The periodic re-ask of every peer is out of the way (TICK is a
    minute), so the re-sent wants alone do it."""
    monkeypatch.setattr(bitswap_module, "TICK", 60.0)
    async with helia(tmp_path) as peer, msuite(tmp_path) as node:
        await connect(node, peer, dialler="msuite")
        source = tmp_path / "helia-waits.bin"
        expected = write(source, 3 * MIB)
        cid = str(await node.files.add(source, pin=False))
        await node.files.gc()  # msuite knows the CID but no longer has the blocks
        assert not node.files.has(cid)
        out = tmp_path / "out.bin"
        started = time.monotonic()
        cat = asyncio.ensure_future(peer.call("cat", cid=cid, out=str(out), timeout_ms=20_000, timeout=30))
        await asyncio.sleep(1.0)
        await node.files.add(source)
        await cat
        assert time.monotonic() - started < 3.0
        assert sha256_of(out) == expected

        source = tmp_path / "msuite-waits.bin"
        expected = write(source, 3 * MIB)
        cid = str(await node.files.add(source, pin=False))
        await node.files.gc()
        fetch = asyncio.ensure_future(node.files.cat(cid, timeout=30))
        await asyncio.sleep(2.0)  # asked, refused, and sent again a few times meanwhile
        assert not fetch.done()
        assert (await peer.call("add", path=str(source)))["cid"] == cid
        added = time.monotonic()
        data = await fetch
        waited = time.monotonic() - added
        assert hashlib.sha256(data).hexdigest() == expected
        print(f"\nmsuite got the file {waited:.2f} s after Helia added it")
        assert waited < 2.0, waited  # the longest gap between re-sends (NUDGE_MAX, 1 s) and a second
        stats = node.files.bitswap.stats[peer.peer]
        assert (stats.rejected, stats.bad_messages, stats.duplicates) == (0, 0, 0)
