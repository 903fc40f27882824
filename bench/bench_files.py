"""File sharing: node.files get/add throughput vs a raw libp2p stream and sha256, and peak memory.

    python3 bench/bench_files.py [--quick] [--size MIB] [--memory MIB] [--rounds R] [--profile DIR]

Two nodes on 127.0.0.1, each in its own process, repositories on disk in a
temporary folder (removed at the end):

- **get**: node A (a child process) adds ``--size`` MiB (distinct 256 KiB
  chunks: every leaf is its own block); node B (this process, a fresh node and
  repository each round, so every block really crosses) reads it with
  ``node.files.get``, discarding the pieces. Baseline: on the same two hosts,
  a raw libp2p stream on a custom protocol, opened from B's host to A's in B's
  trio thread (``node.p2p.bridge.run``), A writing the same number of bytes
  with the lean yamux ``write``, B reading them with the lean ``read``.
  Goal: at least 80 MB/s and at least 0.5x the raw stream.
- **add**: ``node.files.add`` of ``--size`` MiB as bytes and from a file path
  (unpinned and collected between rounds, so blocks are really written; one
  add first as a warm-up),
  against sha256 alone over the same bytes in 256 KiB chunks.
- **memory**: peak RSS growth (VmHWM after, less VmRSS before, the peak reset
  through ``/proc/self/clear_refs`` when allowed) of a ``--memory`` MiB add
  from an async iterator and of a ``--memory`` MiB get (consumed and
  discarded), each in a fresh process. Goal: under 200 MB each.

Throughput is the median of ``--rounds`` alternating rounds (MB = 10^6 bytes).
Exits non-zero only on errors, never because a goal is missed.
The CPU seconds each process used during each transfer are printed too.
``--profile DIR`` (needs yappi) also profiles one get of ``--size`` MiB in both
processes, every thread (asyncio and trio), and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
PIECE = MIB
"""Bytes per piece of generated data (four 256 KiB chunks, each made distinct)."""
CHUNK = 256 * 1024
RAW = "/bench/raw/1.0.0"
"""The baseline's protocol: the request is 8 bytes (a big-endian size), the answer that many bytes."""
GOAL_GET = 80.0
GOAL_RATIO = 0.5
GOAL_MEMORY = 200.0
STEP_TIMEOUT = 600.0
"""Longest wait, in seconds, for any one step (a transfer, an add, a child's answer)."""


# ---------------------------------------------------------------------- data


def pieces(size: int, seed: int) -> Iterator[bytes]:
    """``size`` bytes in pieces of at most 1 MiB; every 256 KiB chunk differs from every other."""
    base = bytearray(random.Random(seed).randbytes(PIECE))
    index = 0
    done = 0
    while done < size:
        piece = bytearray(base)
        for at in range(0, PIECE, CHUNK):
            piece[at : at + 16] = struct.pack(">QQ", seed, index)
            index += 1
        take = min(PIECE, size - done)
        done += take
        yield bytes(piece[:take])


async def apieces(size: int, seed: int) -> AsyncIterator[bytes]:
    for piece in pieces(size, seed):
        yield piece
        await asyncio.sleep(0)


def manifest(name: str, repo: Path, bootstrap: list[str]) -> Any:
    from msuite.spec import Manifest

    p2p = {"port": 0, "bootstrap": bootstrap}
    return Manifest.model_validate({"name": name, "repo": str(repo), "p2p": p2p, "files": True})


async def wait_peer(node: Any, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not node.p2p.peers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.p2p.peer_id}: no peer within {timeout:.0f} s")
        await asyncio.sleep(0.01)
    peer: str = node.p2p.peers()[0]["id"]
    return peer


def say(kind: str, **values: Any) -> None:
    print(json.dumps({"kind": kind, **values}), flush=True)


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    found: dict[str, int] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where it is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------- children


def child_serve(folder: Path) -> None:
    """Node A: adds what it is told to (JSON lines on stdin), serves the raw protocol."""
    import trio
    from libp2p.custom_types import TProtocol
    from libp2p.stream_muxer.exceptions import MuxedStreamEOF

    from msuite.runtime.node import Node
    from msuite.runtime.p2p.compat.streams import FRAME_PAYLOAD, read, write

    payload = bytes(random.Random(7).randbytes(PIECE))

    async def handle(stream: Any) -> None:
        muxed = stream.muxed_stream
        request = b""
        with trio.fail_after(STEP_TIMEOUT):
            while len(request) < 8:
                try:
                    request += await read(muxed, 8 - len(request))
                except MuxedStreamEOF:
                    return
            left = struct.unpack(">Q", request)[0]
            view = memoryview(payload)
            at = 0
            while left:
                take = min(FRAME_PAYLOAD, left, PIECE - at)
                await write(muxed, bytes(view[at : at + take]))
                left -= take
                at = (at + take) % PIECE
            await stream.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        node = Node(manifest("a", folder / "a", []))
        async with node:

            async def register() -> None:
                node.p2p.libp2p.set_stream_handler(TProtocol(RAW), handle)

            await node.p2p.bridge.run(register)
            say("addr", addr=node.p2p.addrs[0], peer=node.p2p.peer_id)
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                command = json.loads(line)
                began = time.perf_counter()
                if command["op"] == "profile":
                    yappi: Any = importlib.import_module("yappi")
                    if command["action"] == "start":
                        yappi.set_clock_type("cpu")
                        yappi.start(builtins=True, profile_threads=True)
                        say("profiling")
                    else:
                        yappi.stop()
                        yappi.get_func_stats().save(command["output"], type="pstat")
                        say("profiled")
                    continue
                if command["op"] == "add":
                    cid = await node.files.add(b"".join(pieces(command["size"], command["seed"])))
                else:  # "add-stream": never the whole file in memory
                    cid = await node.files.add(apieces(command["size"], command["seed"]))
                say("added", cid=str(cid), seconds=time.perf_counter() - began)

    asyncio.run(main())


def child_memory(op: str, folder: Path, size: int, address: str, cid: str) -> None:
    """A fresh process: one add (op ``add``) or get (op ``get``) of ``size`` bytes; its peak RSS growth."""
    from msuite.runtime.node import Node

    async def main() -> None:
        node = Node(manifest(f"mem-{op}", folder / f"mem-{op}", [address] if address else []))
        async with node:
            if op == "get":
                await wait_peer(node)
            await asyncio.sleep(0.2)
            reset = reset_peak()
            before = memory()
            began = time.perf_counter()
            got = 0
            if op == "add":
                await asyncio.wait_for(node.files.add(apieces(size, 3)), STEP_TIMEOUT)
                got = size
            else:

                async def consume() -> int:
                    count = 0
                    async for piece in node.files.get(cid):
                        count += len(piece)
                    return count

                got = await asyncio.wait_for(consume(), STEP_TIMEOUT)
            seconds = time.perf_counter() - began
            after = memory()
            say(
                "memory",
                growth=(after["VmHWM"] - before["VmRSS"]) / 1024,
                before=before["VmRSS"] / 1024,
                peak=after["VmHWM"] / 1024,
                reset=reset,
                bytes=got,
                seconds=seconds,
            )

    asyncio.run(main())


# ---------------------------------------------------------------------- the driver


class Child:
    """A child process of this script: JSON lines in and out, stderr kept for the error message."""

    def __init__(self, process: asyncio.subprocess.Process, name: str, stderr: Any) -> None:
        self.process, self.name, self.stderr = process, name, stderr

    @classmethod
    async def start(cls, name: str, arguments: list[str]) -> Child:
        stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed with the child)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.abspath(__file__),
            *arguments,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        return cls(process, name, stderr)

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    async def expect(self, kind: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no {kind!r} within {timeout:.0f} s{self._tail()}") from None
        if not line:
            await asyncio.wait_for(self.process.wait(), 30)
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}){self._tail()}")
        message: dict[str, Any] = json.loads(line)
        if message["kind"] != kind:
            raise RuntimeError(f"{self.name}: expected {kind!r}, got {message['kind']!r}")
        return message

    def _tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().strip()
        return ":\n" + "\n".join(text.splitlines()[-15:]) if text else ""

    async def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.stderr.close()


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def raw_fetch(node: Any, peer: str, size: int) -> int:
    """Bytes read from a raw stream asking A's host for ``size`` bytes (in B's trio thread)."""

    async def run() -> int:
        import trio
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID
        from libp2p.stream_muxer.exceptions import MuxedStreamEOF

        from msuite.runtime.p2p.compat.streams import read, write

        got = 0
        with trio.fail_after(STEP_TIMEOUT):
            stream = await node.p2p.libp2p.new_stream(ID.from_base58(peer), [TProtocol(RAW)])
            muxed = stream.muxed_stream
            await write(muxed, struct.pack(">Q", size))
            while True:
                try:
                    got += len(await read(muxed, MIB))
                except MuxedStreamEOF:
                    break
            await stream.close()
        return got

    result: int = await node.p2p.bridge.run(run)
    return result


async def files_fetch(node: Any, cid: str) -> int:
    async def consume() -> int:
        count = 0
        async for piece in node.files.get(cid):
            count += len(piece)
        return count

    return await asyncio.wait_for(consume(), STEP_TIMEOUT)


async def round_get(
    folder: Path, address: str, peer: str, cid: str, size: int, *, order: list[str], serve_pid: int
) -> dict[str, tuple[float, float, float]]:
    """A fresh node B: the raw stream and node.files.get, in ``order``; MB/s of each, and the CPU
    seconds B (this process) and A used meanwhile."""
    from msuite.runtime.node import Node

    repo = folder / "b"
    shutil.rmtree(repo, ignore_errors=True)
    node = Node(manifest("b", repo, [address]))
    found: dict[str, tuple[float, float, float]] = {}
    async with node:
        await wait_peer(node)
        await raw_fetch(node, peer, MIB)  # warm: the connection, the protocol, the code paths
        for kind in order:
            cpu_b, cpu_a = time.process_time(), cpu_of(serve_pid)
            began = time.perf_counter()
            got = await (raw_fetch(node, peer, size) if kind == "raw" else files_fetch(node, cid))
            seconds = time.perf_counter() - began
            cpu_b, cpu_a = time.process_time() - cpu_b, cpu_of(serve_pid) - cpu_a
            if got != size:
                raise RuntimeError(f"{kind}: {got} bytes read, {size} expected")
            found[kind] = (rate(size, seconds), cpu_b, cpu_a)
    shutil.rmtree(repo, ignore_errors=True)
    return found


async def measure_add(folder: Path, size: int, rounds: int) -> dict[str, list[float]]:
    from msuite.runtime.node import Node

    data = b"".join(pieces(size, 11))
    path = folder / "add.bin"
    with path.open("wb") as file:
        for piece in pieces(size, 11):
            file.write(piece)
    results: dict[str, list[float]] = {"sha256": [], "bytes": [], "path": []}
    kinds = list(results)
    node = Node(manifest("adder", folder / "adder", []))
    async with node:

        async def once(kind: str) -> float:
            began = time.perf_counter()
            if kind == "sha256":
                hashlib.sha256(b"")  # the same import state either way
                view = memoryview(data)
                for at in range(0, size, CHUNK):
                    hashlib.sha256(view[at : at + CHUNK]).digest()
                return rate(size, time.perf_counter() - began)
            source: bytes | Path = data if kind == "bytes" else path
            cid = await asyncio.wait_for(node.files.add(source), STEP_TIMEOUT)
            seconds = time.perf_counter() - began
            await node.files.unpin(cid)
            await asyncio.wait_for(node.files.gc(), STEP_TIMEOUT)
            return rate(size, seconds)

        await once("bytes")  # warm: the blockstore's shard folders exist from here on
        for round_ in range(1, rounds + 1):
            for kind in kinds if round_ % 2 else reversed(kinds):
                results[kind].append(await once(kind))
            print(
                f"  add round {round_}  " + "   ".join(f"{k} {results[k][-1]:7.1f} MB/s" for k in kinds),
                flush=True,
            )
    path.unlink()
    return results


async def measure_memory(folder: Path, serve: Child, address: str, size: int) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    adder = await Child.start("memory add", ["--child", "mem-add", "--dir", str(folder), "--size", str(size)])
    try:
        found["add"] = await adder.expect("memory")
    finally:
        await adder.close()
    shutil.rmtree(folder / "mem-add", ignore_errors=True)
    serve.send(op="add-stream", size=size, seed=5)
    cid = (await serve.expect("added"))["cid"]
    arguments = ["--child", "mem-get", "--dir", str(folder), "--size", str(size)]
    getter = await Child.start("memory get", [*arguments, "--address", address, "--cid", cid])
    try:
        found["get"] = await getter.expect("memory")
    finally:
        await getter.close()
    shutil.rmtree(folder / "mem-get", ignore_errors=True)
    if found["get"]["bytes"] != size:
        raise RuntimeError(f"memory get: {found['get']['bytes']} bytes read, {size} expected")
    return found


async def profile_get(folder: Path, serve: Child, address: str, cid: str, *, output: str) -> None:
    """One get under yappi (CPU clock, every thread) in B (this process) and in A; pstats to
    ``output``/b.pstat and a.pstat, and the top functions of each printed."""
    try:
        yappi: Any = importlib.import_module("yappi")
    except ImportError:
        print("  --profile needs yappi (pip install yappi)")
        return
    from msuite.runtime.node import Node

    os.makedirs(output, exist_ok=True)
    repo = folder / "profiled"
    node = Node(manifest("profiled", repo, [address]))
    async with node:
        await wait_peer(node)
        serve.send(op="profile", action="start")
        await serve.expect("profiling")
        yappi.set_clock_type("cpu")
        yappi.start(builtins=True, profile_threads=True)
        began = time.perf_counter()
        got = await files_fetch(node, cid)
        seconds = time.perf_counter() - began
        yappi.stop()
        serve.send(op="profile", action="stop", output=os.path.join(output, "a.pstat"))
        await serve.expect("profiled")
    shutil.rmtree(repo, ignore_errors=True)
    yappi.get_func_stats().save(os.path.join(output, "b.pstat"), type="pstat")
    print(f"profiled get: {got / MIB:.0f} MiB in {seconds:.2f} s ({rate(got, seconds):.1f} MB/s) under yappi")
    for thread in sorted(yappi.get_thread_stats(), key=lambda t: -t.ttot)[:3]:
        print(f"  B thread {thread.name} {thread.tid}: {thread.ttot:.2f} s CPU")
    yappi.clear_stats()
    for side in ("b", "a"):
        show_profile(os.path.join(output, f"{side}.pstat"), side.upper())
    print(f"  (pstats in {output}: python3 -m pstats {output}/b.pstat)")


def show_profile(path: str, side: str, top: int = 18) -> None:
    """The functions of one profile by own time, with their cumulative share of the total."""
    import pstats

    stats: Any = pstats.Stats(path)
    total = stats.total_tt or 1.0
    print(f"  {side}: {total:.2f} s CPU; {'function':66} {'own %':>6} {'cum %':>6}")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    for (file, line, name), (_, _, own, cumulative, _) in rows:
        where = f"{os.path.basename(file)}:{line}:{name}"[-66:]
        print(f"    {where:70} {100 * own / total:5.1f}% {100 * min(cumulative, total) / total:5.1f}%")


def median(values: list[float]) -> float:
    return statistics.median(values)


async def compare(args: argparse.Namespace) -> None:
    size = args.size * MIB
    memory_size = args.memory * MIB
    folder = Path(tempfile.mkdtemp(prefix="bench-files-"))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"node.files, 2 processes on 127.0.0.1, repositories on disk; {args.size} MiB transfers, "
        f"{args.memory} MiB memory test, {args.rounds} rounds; load {load} on {os.cpu_count()} cores",
        flush=True,
    )
    began = time.monotonic()
    serve = await Child.start("node A", ["--child", "serve", "--dir", str(folder)])
    try:
        hello = await serve.expect("addr", 60)
        address, peer = hello["addr"], hello["peer"]
        serve.send(op="add", size=size, seed=1)
        cid = (await serve.expect("added"))["cid"]
        gets: dict[str, list[tuple[float, float, float]]] = {"raw": [], "files": []}
        pid = serve.process.pid
        for round_ in range(1, args.rounds + 1):
            order = ["raw", "files"] if round_ % 2 else ["files", "raw"]
            found = await round_get(folder, address, peer, cid, size, order=order, serve_pid=pid)
            for kind, value in found.items():
                gets[kind].append(value)
            (r, rb, ra), (f, fb, fa) = found["raw"], found["files"]
            print(
                f"  get round {round_}  raw stream {r:6.1f} MB/s (CPU B {rb:.2f} s, A {ra:.2f} s)   "
                f"files.get {f:6.1f} MB/s (CPU B {fb:.2f} s, A {fa:.2f} s)   ratio {f / r:.2f}x",
                flush=True,
            )
        adds = await measure_add(folder, size, args.rounds)
        mem = await measure_memory(folder, serve, address, memory_size)
        if args.profile:
            await profile_get(folder, serve, address, cid, output=args.profile)
    finally:
        await serve.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"  ({time.monotonic() - began:.0f} s; load now {' '.join(f'{v:.2f}' for v in os.getloadavg())})")

    raw, got = median([g[0] for g in gets["raw"]]), median([g[0] for g in gets["files"]])
    sha, add_bytes, add_path = median(adds["sha256"]), median(adds["bytes"]), median(adds["path"])
    print(
        f"{f'median of {args.rounds} rounds, {args.size} MiB':40}"
        f"{'MB/s':>10}{'baseline MB/s':>15}{'ratio':>8}"
    )
    print(
        f"  {'files.get, A -> B':38}{got:10.1f}{raw:15.1f}{got / raw:7.2f}x   (baseline: raw libp2p stream)"
    )
    print(
        f"  {'files.add(bytes)':38}{add_bytes:10.1f}{sha:15.1f}{add_bytes / sha:7.2f}x"
        "   (baseline: sha256 only)"
    )
    print(f"  {'files.add(path)':38}{add_path:10.1f}{sha:15.1f}{add_path / sha:7.2f}x")
    print(f"{f'CPU seconds per {args.size} MiB get, median':40}{'files.get':>10}{'raw stream':>15}")
    for index, side in ((1, "B (fetching: this process)"), (2, "A (serving: child)")):
        ours, base = median([g[index] for g in gets["files"]]), median([g[index] for g in gets["raw"]])
        print(f"  {side:38}{ours:10.2f}{base:15.2f}{ours / base if base else 0:7.2f}x")
    print(f"{f'peak RSS growth, {args.memory} MiB, fresh process':40}{'MB':>10}{'MB/s':>15}")
    for op, label in (("add", "files.add(async iterator)"), ("get", "files.get, consumed")):
        entry = mem[op]
        note = "" if entry["reset"] else "   (peak not reset: includes start-up)"
        print(
            f"  {label:38}{entry['growth']:10.1f}{rate(entry['bytes'], entry['seconds']):15.1f}"
            f"   (RSS {entry['before']:.0f} -> peak {entry['peak']:.0f} MB){note}"
        )
    get_met = got >= GOAL_GET and got / raw >= GOAL_RATIO
    mem_met = all(mem[op]["growth"] < GOAL_MEMORY for op in ("add", "get"))
    print(
        f"files get {got:.1f} MB/s = {got / raw:.2f}x raw stream ({raw:.1f} MB/s); "
        f"goal (>= {GOAL_GET:.0f} MB/s and >= {GOAL_RATIO}x raw): {'met' if get_met else 'NOT met'}; "
        f"memory add {mem['add']['growth']:.0f} MB, get {mem['get']['growth']:.0f} MB; "
        f"goal (< {GOAL_MEMORY:.0f} MB each): {'met' if mem_met else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 MiB transfers, a 256 MiB memory test")
    parser.add_argument("--size", type=int, help="MiB per get and add (default 100, 20 with --quick)")
    parser.add_argument("--memory", type=int, help="MiB of the memory test (default 1024, 256 with --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument(
        "--profile", metavar="DIR", help="also profile one get in A and B with yappi (pstats to DIR)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--address", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cid", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "serve":
        return child_serve(Path(args.dir))
    if args.child in ("mem-add", "mem-get"):
        return child_memory(args.child[4:], Path(args.dir), args.size, args.address, args.cid)
    args.size = args.size or (20 if args.quick else 100)
    args.memory = args.memory or (256 if args.quick else 1024)
    try:
        asyncio.run(compare(args))
    except RuntimeError as error:  # a child failed or did not answer in time
        raise SystemExit(f"bench_files: {error}") from None
    return None


if __name__ == "__main__":
    main()
