"""The shared store: convergence over three nodes, the batch_delay trade-off, and local put/get vs node.store.

    python bench/bench_shared.py [--quick] [--rounds R] [--items N] [--local N] [--timeout S] [--profile DIR]

Three nodes, each in its own process, on 127.0.0.1, on one channel
(``storage.shared``), repositories on disk in a temporary folder (removed at
the end), ``storage.sync: false`` (the OS decides when to flush; no fsync per
write), each node meshed with the other two before anything is measured. A
fresh set of three processes per ``batch_delay`` per round; ``batch_max`` is
the default (1000). Items are a small pydantic model (id, a 32-character
title, an int), created with ``await store.create(item)`` one after another
on the writer; each measurement uses its own namespace. Rounds alternate the
order of the configurations; medians are reported.

1. **Convergence** (``batch_delay`` 10ms, the default): N = 1,000 and 10,000
   creates on one node. Reported: the time to make the writes on the writer,
   the time from the last write until every node's ``count`` is N (each of the
   two other nodes polls its own ``count`` every 10 ms and notes
   ``time.time_ns()``: one machine, one clock), the total, and the deltas the
   writer made (``status()["deltas_made"]``: the batch size is N / deltas).
   A measurement whose nodes do not all have N within ``--timeout`` seconds
   of the start of their wait (just before the first write) is reported as
   "not within", not as an error; failure counters of ``status()`` that grow
   during a measurement (walk failures, bad deltas, ...) are shown.
2. **batch_delay trade-off**: 0s, 10ms, 50ms, N = 1,000, with the writes
   back to back (no await yields to the event loop between two creates,
   except the turn a write takes when ``batch_max`` writes are pending, so
   the writes go out in full deltas as they are made, the rest after the
   last one) and paced (an
   ``await asyncio.sleep(0)`` after each create: one event-loop turn per
   write, as a service handling one request per turn). The 10ms back-to-back
   row is part 1's N = 1,000 measurement.
3. **Local put/get**: in this process, one node (shared store on, no
   peers, the same kind of repository): ``create`` of N items then ``read``
   of each, through ``node.shared(ns)`` (baseline: ``node.store``, the same
   item class), ops/s and the ratio shared / local; also shared ``create``
   followed by ``await store.flush()`` (the delta made and published) against
   the same local creates. N = ``--local`` (10,000).

``--quick``: 2,000 writes instead of 10,000 in part 1 and 2,000 items in
part 3, a 20 s convergence timeout instead of 60 s (about 50 s in all; the
full run about 70 s, on 2 cores). Exits non-zero only on errors, never
because something is slow. ``--profile DIR`` writes to DIR a cProfile of the
main thread (the event loop, where the shared store runs; not the libp2p
thread) of each node process during each measurement (from the write or the
watch until the nodes agree), and of part 3, and prints the top functions of
the writer and the receivers for N = ``--items`` at 10ms and for the paced
writes at 0s, and of part 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

CHANNEL = "bench"
TOPIC = f"msuite/{CHANNEL}/shared"
PEERS = 2
"""Mesh size every node waits for: the other two."""
POLL = 0.01
"""Seconds between two ``count`` polls on a watching node."""
DELAYS = ("0s", "10ms", "50ms")
DEFAULT_DELAY = "10ms"
STEP_TIMEOUT = 120.0
"""Longest wait, in seconds, for a child's answer that is not a convergence."""
IDLE_TIMEOUT = 30.0
"""Longest wait, in seconds, for the three nodes to agree before a measurement."""


class Item(BaseModel):
    store_namespace: ClassVar[str] = "items"
    id: str | None = None
    title: str
    rank: int


def items(count: int, tag: str) -> list[Item]:
    return [Item(id=f"{tag}-{i:06d}", title=f"item {i:06d} ".ljust(32, "x"), rank=i) for i in range(count)]


def say(kind: str, **values: Any) -> None:
    print(json.dumps({"kind": kind, **values}), flush=True)


def manifest(name: str, repo: Path, delay: str, bootstrap: list[str]) -> Any:
    from msuite.spec import Manifest

    return Manifest.model_validate(
        {
            "name": name,
            "repo": str(repo),
            "p2p": {"port": 0, "bootstrap": bootstrap},
            "storage": {"sync": False, "shared": {"channel": CHANNEL, "batch_delay": delay}},
        }
    )


STATUS_KEYS = ("heads", "height", "deltas", "deltas_made", "deltas_fetched", "walks", "pending_writes")
TROUBLE = ("walk_failures", "bad_messages", "bad_deltas", "conflicts", "walks_cut")
"""Status counters that should not grow in this bench (shown when they do)."""
STATUS_KEYS += ("pending_fetches", "walk_failures", "bad_messages", "bad_deltas", "conflicts")


# ---------------------------------------------------------------------- a node (child process)


def child_node(folder: Path, name: str, delay: str, profile: str | None) -> None:
    """One node, driven by JSON lines on stdin: write, watch, status. With ``profile``, each
    write or watch is profiled (cProfile, this thread: the event loop) until the next status."""
    import cProfile

    from msuite.runtime.node import Node

    role = "writer" if name.endswith("writer") else "receiver"
    profiler: cProfile.Profile | None = None
    window = ""

    async def main() -> None:
        nonlocal profiler, window
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def pump() -> None:
            while True:
                line = sys.stdin.readline()
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(lines.put_nowait, line.strip())
                if not line:
                    return

        threading.Thread(target=pump, daemon=True).start()
        config = json.loads(await lines.get())
        node = Node(manifest(name, folder / name, delay, config["bootstrap"]))
        async with node:
            shared: Any = node.component("shared")
            say("addr", addr=node.p2p.addrs[0])
            deadline = time.monotonic() + 30
            while len(node.p2p.pubsub.mesh(TOPIC)) < PEERS:
                if time.monotonic() > deadline:
                    raise SystemExit(f"no mesh of {PEERS} in 30 s: {node.p2p.pubsub.mesh(TOPIC)}")
                await asyncio.sleep(0.02)
            say("ready")
            while line := await lines.get():
                command = json.loads(line)
                op = command["op"]
                if profile and op in ("write", "watch"):
                    profiler, window = cProfile.Profile(), command["ns"]
                    profiler.enable()
                elif profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(os.path.join(profile, f"{role}-{window}-{os.getpid()}.prof"))
                    profiler = None
                if op == "write":
                    store = node.shared(command["ns"])
                    batch = items(command["count"], command["ns"])
                    pace = command["pace"]
                    first = time.time_ns()
                    began = time.perf_counter()
                    for item in batch:
                        await store.create(item)
                        if pace:
                            await asyncio.sleep(0)
                    seconds = time.perf_counter() - began
                    say("written", first=first, last=time.time_ns(), seconds=seconds)
                elif op == "watch":
                    store = node.shared(command["ns"])
                    want, stop = command["count"], time.monotonic() + command["timeout"]
                    reached = None
                    while True:
                        got = await store.count(Item)
                        if got >= want:
                            reached = time.time_ns()
                            break
                        if time.monotonic() > stop:
                            break
                        await asyncio.sleep(POLL)
                    say("reached", at=reached, count=got)
                elif op == "status":
                    status = shared.status()
                    say("status", **{k: status[k] for k in STATUS_KEYS}, walks_cut=shared.counters.walks_cut)
                else:
                    raise SystemExit(f"unknown command {op!r}")

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
            limit=1 << 24,
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
                self.process.stdin.write(b"\n")  # an empty line: leave the command loop
                self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.stderr.close()


@dataclass
class Run:
    """One measurement: N writes on the writer, watched on the other two nodes."""

    delay: str
    count: int
    pace: bool
    write: float
    """Seconds the writer took for the N creates."""
    after: float | None
    """Seconds from the last write until the last node had all N; None: not within the timeout."""
    total: float | None
    """Seconds from the first write until the last node had all N."""
    deltas: int
    """Deltas the writer made for these writes."""
    fetched: list[int] = field(default_factory=list)
    """Deltas each other node fetched meanwhile."""
    counts: list[int] = field(default_factory=list)
    """Items each other node had at the end of the wait."""
    trouble: dict[str, int] = field(default_factory=dict)
    """Failure counters of the status that grew meanwhile, summed over the three nodes."""


@dataclass(frozen=True)
class Case:
    delay: str
    count: int
    pace: bool

    @property
    def label(self) -> str:
        pace = "paced" if self.pace else "back to back"
        return f"batch_delay {self.delay:>4}, {self.count:>6,} writes, {pace}"


async def statuses(children: list[Child]) -> list[dict[str, Any]]:
    for child in children:
        child.send(op="status")
    return [await child.expect("status") for child in children]


async def settle(children: list[Child]) -> None:
    """Wait (bounded) until the nodes have applied the same deltas and nothing is in flight."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    while True:
        found = await statuses(children)
        busy = any(s["walks"] or s["pending_writes"] or s["pending_fetches"] for s in found)
        if not busy and len({s["deltas"] for s in found}) == 1:
            return
        if time.monotonic() > deadline:
            print(f"  (the nodes still differ after {IDLE_TIMEOUT:.0f} s: {found}; measuring anyway)")
            return
        await asyncio.sleep(0.05)


async def measure(children: list[Child], case: Case, ns: str, timeout: float) -> Run:
    writer, *watchers = children
    await settle(children)
    before = await statuses(children)
    for watcher in watchers:
        watcher.send(op="watch", ns=ns, count=case.count, timeout=timeout)
    writer.send(op="write", ns=ns, count=case.count, pace=case.pace)
    written = await writer.expect("written", STEP_TIMEOUT + timeout)
    reached = [await w.expect("reached", STEP_TIMEOUT + timeout) for w in watchers]
    await settle(children)
    after = await statuses(children)
    last = None if any(r["at"] is None for r in reached) else max(r["at"] for r in reached)
    return Run(
        case.delay,
        case.count,
        case.pace,
        written["seconds"],
        None if last is None else max(0.0, (last - written["last"]) / 1e9),
        None if last is None else (last - written["first"]) / 1e9,
        after[0]["deltas_made"] - before[0]["deltas_made"],
        [a["deltas_fetched"] - b["deltas_fetched"] for a, b in zip(after[1:], before[1:], strict=True)],
        [r["count"] for r in reached],
        {
            key: total
            for key in TROUBLE
            if (total := sum(a[key] - b[key] for a, b in zip(after, before, strict=True)))
        },
    )


async def node_set(
    folder: Path, delay: str, cases: list[Case], *, timeout: float, tag: str, profile: str | None
) -> list[Run]:
    """Three fresh node processes with ``batch_delay`` = ``delay``; ``cases`` measured in order."""
    base = ["--child", "node", "--dir", str(folder), "--delay", delay]
    if profile:
        base += ["--profile", profile]
    names = ("writer", "receiver-1", "receiver-2")
    children = list(
        await asyncio.gather(*(Child.start(f"{delay} {n}", [*base, "--name", f"{tag}-{n}"]) for n in names))
    )
    runs: list[Run] = []
    try:
        addrs: list[str] = []
        for child in children:  # the first receiver dials the writer, the second both
            child.send(bootstrap=addrs)
            addrs.append((await child.expect("addr", 60))["addr"])
        for child in children:
            await child.expect("ready", 40)
        for index, case in enumerate(cases):
            ns = f"{tag}-{index}-{case.count}{'p' if case.pace else ''}"
            runs.append(await measure(children, case, ns, timeout))
    finally:
        await asyncio.gather(*(child.close() for child in children))
    return runs


def seconds(value: float | None, timeout: float) -> str:
    return f"not within {timeout:g} s" if value is None else f"{value:.3f} s"


def show(round_: int, run: Run, timeout: float) -> None:
    case = Case(run.delay, run.count, run.pace)
    late = "" if run.after is not None else f"  (counts at the end: {run.counts})"
    late += f"  {run.trouble}" if run.trouble else ""
    print(
        f"  round {round_}  {case.label:45}  write {run.write:7.3f} s   "
        f"last write -> all nodes {seconds(run.after, timeout):>16}   "
        f"total {seconds(run.total, timeout):>16}   "
        f"deltas {run.deltas:>5} (fetched {'/'.join(map(str, run.fetched))}){late}",
        flush=True,
    )


# ---------------------------------------------------------------------- local put/get (this process)


async def local_rounds(folder: Path, count: int, rounds: int, profile: str | None) -> dict[str, list[float]]:
    """``create`` then ``read`` of ``count`` items through the shared store and ``node.store``."""
    from msuite.runtime.node import Node

    node = Node(manifest("local", folder / "local", DEFAULT_DELAY, []))
    found: dict[str, list[float]] = {k: [] for k in ("shared put", "shared put+flush", "shared get")}
    found.update({"local put": [], "local get": []})
    profiler: Any = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    async with node:
        shared = node.shared("local-bench")
        local = node.store

        async def once(kind: str, tag: str) -> None:
            store: Any = shared if kind == "shared" else local
            batch = items(count, tag)
            if profiler:
                profiler.enable()
            began = time.perf_counter()
            for item in batch:
                await store.create(item)
            put = time.perf_counter() - began
            if kind == "shared":
                await store.flush()
                found["shared put+flush"].append(count / (time.perf_counter() - began))
            ids = [item.id for item in batch]
            began = time.perf_counter()
            for id in ids:
                await store.read(Item, id)
            get = time.perf_counter() - began
            if profiler:
                profiler.disable()
            found[f"{kind} put"].append(count / put)
            found[f"{kind} get"].append(count / get)
            await asyncio.sleep(0.05)  # let the delta's publication and the flush settle

        await once("shared", "warm")  # warm: codecs, the namespace, the delta path
        await once("local", "warm")
        for round_ in range(1, rounds + 1):
            for kind in ("shared", "local") if round_ % 2 else ("local", "shared"):
                await once(kind, f"r{round_}")
            print(
                f"  round {round_}  put shared {found['shared put'][-1]:9,.0f}/s  "
                f"(+flush {found['shared put+flush'][-1]:9,.0f}/s)  local {found['local put'][-1]:9,.0f}/s   "
                f"get shared {found['shared get'][-1]:9,.0f}/s  local {found['local get'][-1]:9,.0f}/s",
                flush=True,
            )
    if profiler:
        profiler.dump_stats(os.path.join(profile, "local-putget.prof"))  # type: ignore[arg-type]
    return found


# ---------------------------------------------------------------------- the run


def median(values: list[float | None]) -> float | None:
    """The median, a value that did not converge (None) counting as the slowest; None when
    the median itself did not converge."""
    found = statistics.median([float("inf") if v is None else v for v in values])
    return None if found == float("inf") else found


def show_profiles(folder: str, cases: list[Case], top: int = 14) -> None:
    """The top functions (own time) of the writer's and the receivers' event loops over every
    round of each of ``cases``, and of part 3."""
    import glob
    import pstats

    groups = [
        (f"{role} of {case.label}", f"{role}-r*-{case.delay}-*-{case.count}{'p' if case.pace else ''}-*")
        for case in cases
        for role in ("writer", "receiver")
    ]
    groups.append(("part 3 (shared and local, this process)", "local-putget"))
    for title, pattern in groups:
        files = sorted(glob.glob(os.path.join(folder, f"{pattern}.prof")))
        if not files:
            continue
        stats: Any = pstats.Stats(*files)
        total = stats.total_tt or 1.0
        print(f"  {title}: {total:.2f} s in {len(files)} profiles")
        print(f"    {'function (own time)':66} {'own %':>6} {'cum %':>6}")
        rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
        for (file, line, name), (_, _, own, cumulative, _) in rows:
            where = f"{os.path.basename(file)}:{line}:{name}"[-66:]
            print(f"    {where:66} {100 * own / total:5.1f}% {100 * min(cumulative, total) / total:5.1f}%")
    print(f"  (cProfile files in {folder}: python3 -m pstats {folder}/<file>)")


async def compare(args: argparse.Namespace) -> None:
    big, small, local_count = args.items, 1000, args.local
    timeout = args.timeout
    folder = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"shared store, 3 node processes on 127.0.0.1, repositories on disk, storage.sync false, "
        f"batch_max 1000; {args.rounds} rounds; convergence timeout {timeout:g} s; "
        f"load {load} on {os.cpu_count()} cores",
        flush=True,
    )
    plans: dict[str, list[Case]] = {}
    for delay in DELAYS:
        plans[delay] = [Case(delay, small, False), Case(delay, small, True)]
    plans[DEFAULT_DELAY].append(Case(DEFAULT_DELAY, big, False))
    results: dict[Case, list[Run]] = {}
    began = time.monotonic()
    try:
        for round_ in range(1, args.rounds + 1):
            order = list(DELAYS) if round_ % 2 else list(reversed(DELAYS))
            for delay in order:
                cases = plans[delay] if round_ % 2 else list(reversed(plans[delay]))
                tag = f"r{round_}-{delay}"
                for run in await node_set(
                    folder, delay, cases, timeout=timeout, tag=tag, profile=args.profile
                ):
                    results.setdefault(Case(run.delay, run.count, run.pace), []).append(run)
                    show(round_, run, timeout)
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
        print(f"  local put/get, {local_count:,} items, one node in this process:", flush=True)
        local = await local_rounds(folder, local_count, args.rounds, args.profile)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"  ({time.monotonic() - began:.0f} s; load now {' '.join(f'{v:.2f}' for v in os.getloadavg())})")

    def row(label: str, case: Case) -> tuple[float | None, float | None]:
        runs = results[case]
        write = median([r.write for r in runs]) or 0.0
        after, total = median([r.after for r in runs]), median([r.total for r in runs])
        deltas = median([float(r.deltas) for r in runs]) or 0.0
        fetched = median([float(max(r.fetched)) for r in runs]) or 0.0
        converged = sum(r.after is not None for r in runs)
        size = f"{case.count / deltas:,.0f}" if deltas else "-"
        print(
            f"  {label:26}{write:9.3f} s{seconds(after, timeout):>19}{seconds(total, timeout):>19}"
            f"{deltas:>8.0f}{size:>8}{fetched:>9.0f}{converged:>7}/{len(runs)}"
        )
        return write, after

    print(
        f"{f'median of {args.rounds} rounds':28}{'write':>11}{'last write -> all':>19}{'total':>19}"
        f"{'deltas':>8}{'w/delta':>8}{'fetched':>9}{'conv.':>9}"
    )
    print(f"1. convergence, 3 nodes, batch_delay {DEFAULT_DELAY}, back to back")
    headline = {count: row(f"N = {count:,}", Case(DEFAULT_DELAY, count, False)) for count in (small, big)}
    print(f"2. batch_delay trade-off, N = {small:,} (b2b: back to back; paced: a loop turn per write)")
    for pace in (False, True):
        for delay in DELAYS:
            row(f"{delay:>4} {'paced' if pace else 'b2b'}", Case(delay, small, pace))
    print(
        f"  (fetched: deltas fetched by the receiver that fetched more; "
        f"conv.: rounds converged within {timeout:g} s)"
    )
    print(f"3. put/get, {local_count:,} items, one node{'':11}{'shared':>12}{'node.store':>12}{'ratio':>8}")
    ratios = {}
    for label, ours, base in (
        ("create", "shared put", "local put"),
        ("create + flush (delta made)", "shared put+flush", "local put"),
        ("read", "shared get", "local get"),
    ):
        a, b = statistics.median(local[ours]), statistics.median(local[base])
        ratios[label] = a / b
        print(f"  {label:41}{a:10,.0f}/s{b:10,.0f}/s{a / b:7.2f}x")

    def when(pair: tuple[float | None, float | None]) -> str:
        write, after = pair
        return f"{write:.3f} s to write + {seconds(after, timeout)} to all 3 nodes"

    print(
        f"shared store: {small:,} writes {when(headline[small])}, {big:,} writes {when(headline[big])}; "
        f"create {ratios['create']:.2f}x node.store, read {ratios['read']:.2f}x"
    )
    if args.profile:
        show_profiles(args.profile, [Case(DEFAULT_DELAY, big, False), Case("0s", small, True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items: 2,000 writes, 2,000 local items")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--items", type=int, help="writes of the large convergence (default 10,000)")
    parser.add_argument("--local", type=int, help="items of the local put/get (default 10,000)")
    parser.add_argument("--timeout", type=float, help="convergence timeout in seconds (default 60, 20 quick)")
    parser.add_argument("--profile", metavar="DIR", help="cProfile every node process and part 3 into DIR")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--delay", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "node":
        return child_node(Path(args.dir), args.name, args.delay, args.profile)
    args.items = args.items or (2000 if args.quick else 10_000)
    args.local = args.local or (2000 if args.quick else 10_000)
    args.timeout = args.timeout or (20.0 if args.quick else 60.0)
    try:
        asyncio.run(compare(args))
    except RuntimeError as error:  # a child failed or did not answer in time
        raise SystemExit(f"bench_shared: {error}") from None
    return None


if __name__ == "__main__":
    main()
