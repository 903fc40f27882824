"""Run every benchmark and print one table: bench, measure, msuite, baseline, ratio, goal.

    python bench/run_all.py [--full] [--only NAME ...] [--timeout S] [--json FILE] [--verbose] [--list]

Each bench runs as its own subprocess, one after another, from the project
folder, in its quick form by default: its ``--quick`` mode where it has one,
else a shorter argument set (fewer calls, items or rounds; see ``--list``).
The whole quick run takes about 4 minutes on 2 cores. ``--full`` runs every
bench with its own defaults (about 15 minutes). ``--only grpc p2p`` (or
``bench_grpc.py``) picks some.

Each bench's summary lines are parsed by a small parser of its own (the
benches themselves are unchanged); a row whose line is missing shows ``?``
and is listed under the table. The ratio is msuite / baseline as each bench
prints it (or computes it when a bench prints none): for rates, higher is
better; for times (ms, s), lower is better. The goal column holds the goals of
issue 20 where it gives one, else ``-``.

A bench that runs past ``--timeout`` seconds (default 240, 1800 with
``--full``) is stopped with its whole process group and listed as timed out.
The exit status is 1 when a bench fails (non-zero exit) or its summary cannot
be parsed, else 0: never because a figure misses its goal or a bench is slow.
``--json FILE`` writes the rows and each bench's status and command to FILE.
Progress goes to stderr (``--verbose``: each bench's output too), the table
to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

N = r"(\d[\d,]*(?:\.\d+)?)"
"""One number as the benches print it: ``3,621``, ``0.79``, ``1,154.2``."""


def num(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass
class Row:
    measure: str
    unit: str
    """Of msuite and baseline: ``/s``, ``ms``, ``s``, ``MB/s``, ``MB``, ``%`` or ``""`` (a count)."""
    msuite: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    goal: str = "-"
    parsed: bool = True
    note: str = ""
    """Shown instead of a missing msuite figure (``not within 20 s``)."""
    bench: str = ""


def row(
    measure: str, unit: str, found: tuple[float | None, ...] | None, goal: str = "-", note: str = ""
) -> Row:
    """A row from ``(msuite, baseline, ratio)`` (missing tail: none); ``found`` None: its line is missing."""
    if found is None:
        return Row(measure, unit, goal=goal, parsed=False)
    ours, base, ratio = (*found, None, None, None)[:3]
    if ratio is None and ours is not None and base:
        ratio = ours / base
    return Row(measure, unit, ours, base, ratio, goal, note=note)


def grab(text: str, pattern: str) -> tuple[float, ...] | None:
    """The numbers of the first line matching ``pattern`` (its groups, all numbers), or None."""
    match = re.search(pattern, text, re.MULTILINE)
    return None if match is None else tuple(num(g) for g in match.groups())


def word(text: str, pattern: str, default: str) -> str:
    """The first group of ``pattern`` in ``text`` (for labels: counts, sizes), or ``default``."""
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1) if match else default


# ---------------------------------------------------------------------- one parser per bench


def parse_grpc(out: str) -> list[Row]:
    # unary SayHello, 20000 calls, 16 in flight: msuite (JWT + ACL) 3,621/s   raw grpc.aio 4,591/s
    #   ratio 0.79x  (one line)
    found = grab(out, rf"msuite\b[^\n]*? {N}/s\s+raw grpc\.aio {N}/s\s+ratio {N}x")
    flight = word(out, r"(\d+) in flight", "?")
    rows = [row(f"unary calls/s, {flight} in flight, vs raw grpc.aio", "/s", found)]
    if "over TLS" in out:
        tls = grab(out, rf"over TLS[^\n]*msuite\b[^\n]*? {N}/s\s+raw grpc\.aio {N}/s\s+ratio {N}x")
        rows.append(row("unary calls/s over TLS, vs raw grpc.aio with TLS", "/s", tls, ">= 0.9x"))
    return rows


def parse_http(out: str) -> list[Row]:
    # GET /hello, 20000 requests, 16 in flight: msuite (JWT + ACL) 5,665/s   raw aiohttp 4,487/s   ratio 1.26x
    found = grab(out, rf"msuite\b[^\n]*? {N}/s\s+raw aiohttp {N}/s\s+ratio {N}x")
    flight = word(out, r"(\d+) in flight", "?")
    rows = [row(f"GET /hello/s, {flight} in flight, vs raw aiohttp", "/s", found)]
    if "over TLS" in out:
        tls = grab(out, rf"over TLS[^\n]*msuite\b[^\n]*? {N}/s\s+raw aiohttp {N}/s\s+ratio {N}x")
        rows.append(row("GET /hello/s over TLS, vs raw aiohttp with TLS", "/s", tls, ">= 0.9x"))
    return rows


def parse_grpc_p2p(out: str) -> list[Row]:
    #   over p2p   median 1.57 ms   p99 6.28 ms
    #   over unix  median 0.47 ms   p99 2.31 ms
    #   ratio p2p / unix: 3.35x
    p2p = grab(out, rf"over p2p\s+median {N} ms\s+p99 {N} ms")
    unix = grab(out, rf"over unix\s+median {N} ms\s+p99 {N} ms")
    ratio = grab(out, rf"ratio p2p / unix: {N}x")
    median = (p2p[0], unix[0], ratio[0] if ratio else None) if p2p and unix else None
    p99 = (p2p[1], unix[1]) if p2p and unix else None
    return [
        row("unary latency median, libp2p vs Unix socket", "ms", median, "<= 2.0x"),
        row("unary latency p99, libp2p vs Unix socket", "ms", p99, "<= 2.5x"),
    ]


def parse_p2p(out: str) -> list[Row]:
    # 1024-byte request/response, one stream each, 1000 calls:
    #   1 at a time  msuite     220/s (4.55 ms)   pure trio     175/s (5.70 ms)   ratio 1.25x
    #   8 in flight  msuite     669/s (1.50 ms)   pure trio     310/s (3.23 ms)   ratio 2.16x
    size = word(out, r"(\d+)-byte request/response", "?")
    lines = {
        match.group(1): (num(match.group(2)), num(match.group(3)), num(match.group(4)))
        for match in re.finditer(
            rf"^\s*(1 at a time|\d+ in flight)\s+msuite\s+{N}/s.*?pure trio\s+{N}/s.*?ratio {N}x",
            out,
            re.MULTILINE,
        )
    }
    flight = next((label for label in lines if label.endswith("in flight")), "in flight")
    return [
        row(f"{size} B request/response/s, 1 at a time, vs trio", "/s", lines.get("1 at a time"), ">= 0.9x"),
        row(f"{size} B request/response/s, {flight}, vs trio", "/s", lines.get(flight), ">= 0.9x"),
    ]


def parse_pubsub(out: str) -> list[Row]:
    # 1000 messages of 256 bytes to 2 subscribers:
    #   published in 2.21 s (452/s)
    #   all delivered in 2.85 s (350/s per subscriber)
    #   lost: 0 and 0
    count = word(out, r"^(\d+) messages of", "?")
    size = word(out, r"messages of (\d+) bytes", "?")
    published = grab(out, rf"published in {N} s \({N}/s\)")
    # publish queues for the p2p thread: a message counts as published once GossipSub has it
    published = grab(out, rf"handed to GossipSub in {N} s \({N}/s\)") or published
    delivered = grab(out, rf"all delivered in {N} s")
    lost = grab(out, rf"lost: {N} and {N}")
    after = (delivered[0] - published[0],) if published and delivered else None
    return [
        row(
            f"publishes/s (handed to GossipSub), {count} x {size} B to 2 subscribers",
            "/s",
            published and published[1:],
            ">= 2,000/s",
        ),
        row("last handed over -> all delivered", "s", after, "<= 1 s"),
        row("messages lost, worst subscriber", "", lost and (max(lost),), "0"),
    ]


def parse_up(out: str) -> list[Row]:
    # msuite up (scaffold) to ready: median 454 ms, worst 475 ms over 3 runs
    # msuite up (scaffold + p2p) to ready: median 935 ms, worst 1221 ms over 3 runs
    # python -c 'import grpc.aio, aiohttp.web': 227 ms
    floor = grab(out, rf"import grpc\.aio, aiohttp\.web'?: {N} ms")
    rows = []
    for label, goal in (("scaffold", "-"), ("scaffold + p2p", "<= 800 ms")):
        found = grab(out, rf"msuite up \({re.escape(label)}\) to ready: median {N} ms")
        values = (found[0], floor[0]) if found and floor else None
        rows.append(row(f"up to ready, {label}, vs bare import floor", "ms", values, goal))
    return rows


STORE_ROWS = (
    # (operation, baseline as printed, goal of issue 20: it measured put with sync off)
    ("put (sync off)", "plyvel put + encode", ">= 0.95x"),
    ("put (sync off)", "plyvel put +indexes", "-"),
    ("put (sync off)", "plyvel put (bytes only)", ">= 0.6x"),
    ("put (sync on)", "plyvel put + encode", "-"),
    ("put (sync on)", "plyvel put +indexes", "-"),
    ("put (sync on)", "plyvel put (bytes only)", "-"),
    ("get", "plyvel get + decode", ">= 0.95x"),
    ("get", "plyvel get (bytes only)", ">= 0.6x"),
    ("list", "plyvel index walk + decode", "-"),
)


def parse_store(out: str) -> list[Row]:
    # put (sync off)         msuite    202,183/s   plyvel put + encode           406,592/s   ratio  0.50x
    # list 2k created_desc   msuite        111/s   plyvel index walk + decode        190/s   ratio  0.58x
    lines = {
        (match.group(1), match.group(3)): (num(match.group(2)), num(match.group(4)), num(match.group(5)))
        for match in re.finditer(
            rf"^(put \(sync o\w+\)|get|list \S+ created_desc)\s+msuite\s+{N}/s"
            rf"\s+(\S.*?)\s+{N}/s\s+ratio\s+{N}x",
            out,
            re.MULTILINE,
        )
    }
    rows = []
    for operation, baseline, goal in STORE_ROWS:
        key = next((k for k in lines if k[0].startswith(operation) and k[1] == baseline), None)
        label = key[0] if key else operation
        rows.append(row(f"{label} vs {baseline}", "/s", lines.get(key) if key else None, goal))
    return rows


EVENT_ROWS = (
    # (label as printed, unit, label in the table)
    ("delivered, worst receiver", "%", "delivered, worst receiver"),
    ("p50 latency, of delivered", "ms", "p50 latency"),
    ("p99 latency, of delivered", "ms", "p99 latency"),
    ("publish rate", "/s", "publish rate"),
    ("first publish -> last delivery", "s", "first publish to last delivery"),
)


def parse_events(out: str) -> list[Row]:
    # median of 3 rounds                 msuite events  py-libp2p default    ratio
    #   delivered, worst receiver               100.0%               2.0%   50.00x
    #   p50 latency, of delivered             228.6 ms            93.3 ms    2.45x
    #   publish rate                             530/s            6,541/s    0.08x
    #   first publish -> last delivery          1.61 s             0.12 s   13.06x
    # (a value py-libp2p never produced, e.g. no delivery at all, is "-")
    count = word(out, r"^(\d+)-event burst", "?")
    rows = []
    for label, unit, short in EVENT_ROWS:
        value = rf"(?:{N}\s*{re.escape(unit)}|-)"
        match = re.search(rf"^\s*{re.escape(label)}\s+{value}\s+{value}\s+(?:{N}x|-)", out, re.MULTILINE)
        found = None if match is None else tuple(None if g is None else num(g) for g in match.groups())
        rows.append(row(f"{short}, {count} events, vs py-libp2p", unit, found))
    return rows


def parse_files(out: str) -> list[Row]:
    # median of 3 rounds, 20 MiB                    MB/s  baseline MB/s   ratio
    #   files.get, A -> B                           60.0           28.5   2.10x   (baseline: raw ...)
    #   files.add(bytes)                           687.0         1124.0   0.61x   (baseline: sha256 only)
    #   files.add(path)                            700.4         1124.0   0.62x
    # CPU seconds per 20 MiB get, median       files.get     raw stream
    #   B (fetching: this process)                  0.15           0.08   1.85x
    #   A (serving: child)                          0.11           0.07   1.57x
    # peak RSS growth, 256 MiB, fresh process         MB           MB/s
    #   files.add(async iterator)                    7.6          205.9   (RSS 106 -> peak 113 MB)
    #   files.get, consumed                         29.8           44.4   (RSS 106 -> peak 136 MB)
    size = word(out, r"median of \d+ rounds, (\d+) MiB", "?")
    memory = word(out, r"peak RSS growth, (\d+) MiB", "?")
    three = rf"\s+{N}\s+{N}\s+{N}x"
    return [
        row(f"files.get {size} MiB vs raw libp2p stream", "MB/s", grab(out, rf"files\.get, A -> B{three}")),
        row(f"files.add(bytes) {size} MiB vs sha256 only", "MB/s", grab(out, rf"files\.add\(bytes\){three}")),
        row(f"files.add(path) {size} MiB vs sha256 only", "MB/s", grab(out, rf"files\.add\(path\){three}")),
        row("CPU per get, fetching side, vs raw stream", "s", grab(out, rf"B \(fetching[^)\n]*\){three}")),
        row("CPU per get, serving side, vs raw stream", "s", grab(out, rf"A \(serving[^)\n]*\){three}")),
        row(f"peak RSS growth, add {memory} MiB", "MB", grab(out, rf"files\.add\(async iterator\)\s+{N}")),
        row(f"peak RSS growth, get {memory} MiB", "MB", grab(out, rf"files\.get, consumed\s+{N}")),
    ]


def parse_shared(out: str) -> list[Row]:
    # 1. convergence, 3 nodes, batch_delay 10ms, back to back
    #   N = 1,000                     0.032 s            0.058 s            0.089 s       1   1,000 ...
    #   N = 2,000                     0.090 s     not within 20 s    not within 20 s       2 ...
    # 3. put/get, 2,000 items, one node                 shared  node.store   ratio
    #   create                                       33,125/s   174,000/s   0.19x
    #   create + flush (delta made)                  32,157/s   174,000/s   0.18x
    #   read                                        479,866/s   648,463/s   0.74x
    part1 = (
        out.split("1. convergence", 1)[-1].split("2. batch_delay", 1)[0] if "1. convergence" in out else ""
    )
    late = r"(?:\d[\d.]*\s*s|not within ([\d.]+) s)"
    rows = []
    for match in list(
        re.finditer(rf"^\s*N = ([\d,]+)\s+{N} s\s+{late}\s+(?:{N} s|not within [\d.]+ s)", part1, re.M)
    )[:2]:
        count, _write, timeout, total = match.groups()
        note = f"not within {timeout} s" if total is None else ""
        rows.append(
            row(
                f"{count} writes to all 3 nodes (write + converge)",
                "s",
                (num(total) if total else None,),
                note=note,
            )
        )
    while len(rows) < 2:
        rows.append(row("N writes to all 3 nodes (write + converge)", "s", None))
    items = word(out, r"3\. put/get, ([\d,]+) items", "?")
    for label in ("create", "create + flush (delta made)", "read"):
        found = grab(out, rf"^\s*{re.escape(label)}\s+{N}/s\s*{N}/s\s*{N}x")
        short = label.replace(" (delta made)", "").replace(" + ", "+")
        rows.append(row(f"{short}/s, {items} items, shared vs node.store", "/s", found))
    return rows


def parse_locks(out: str) -> list[Row]:
    # acquire+release: msuite 4,549/s   redis-py lock 5,755/s   ratio 0.79x
    found = grab(out, rf"acquire\+release: msuite {N}/s\s+redis-py lock {N}/s\s+ratio {N}x")
    return [row("Redis acquire+release/s vs redis-py lock", "/s", found)]


def parse_tasks(out: str) -> list[Row]:
    # 10000 tiny tasks, 20 workers: msuite 153,268/s   semaphore pool 104,947/s   ratio 1.46x
    found = grab(out, rf"tiny tasks, \d+ workers: msuite {N}/s\s+semaphore pool {N}/s\s+ratio {N}x")
    count = word(out, r"^(\d+) tiny tasks", "?")
    return [row(f"{count} tiny tasks/s vs asyncio semaphore pool", "/s", found)]


def parse_spec(out: str) -> list[Row]:
    # samples/hello  msuite               1.55ms     1.00x
    # samples/hello  ruamel-safe          1.78ms     0.87x
    # 5k-node config ruamel+pydantic    196.50ms     0.79x
    # cold `import msuite.spec`: 134 ms (median of 5)
    times = {
        (match.group(1), match.group(2)): num(match.group(3))
        for match in re.finditer(rf"^(\S.*?)\s+(msuite|ruamel[\w+-]*)\s+{N}\s*ms\s+{N}x", out, re.MULTILINE)
    }
    rows = []
    for label in ("samples/hello", "5k-node config"):
        ours = times.get((label, "msuite"))
        for baseline in ("ruamel-safe", "ruamel-rt", "ruamel+pydantic"):
            base = times.get((label, baseline))
            found = (ours, base) if ours is not None and base is not None else None
            rows.append(row(f"load {label} vs {baseline}", "ms", found))
    cold = grab(out, rf"cold `import msuite\.spec`: {N} ms")
    rows.append(row("cold import msuite.spec (no baseline)", "ms", cold))
    return rows


def parse_codegen(out: str) -> list[Row]:
    # 20 services    msuite generate     347 ms   bare protoc     185 ms   ratio  1.87x
    # init scaffold  msuite generate     223 ms   bare protoc     117 ms   ratio  1.91x
    rows = []
    for label in ("20 services", "init scaffold"):
        pattern = rf"^{re.escape(label)}\s+msuite generate\s+{N} ms\s+bare protoc\s+{N} ms\s+ratio\s+{N}x"
        rows.append(row(f"generate, {label}, vs bare protoc", "ms", grab(out, pattern)))
    return rows


def parse_diagnostics(out: str) -> list[Row]:
    #   raw grpc.aio                            2,991/s   1.00x raw
    #   msuite (JWT + ACL)                      2,675/s   0.89x raw
    #   + metrics(latency) + tracing 1.0        1,694/s   0.57x raw   0.63x without diagnostics
    #   + metrics(latency) + tracing 0.01       2,448/s   0.82x raw   0.92x without diagnostics
    raw = grab(out, rf"^\s*raw grpc\.aio\s+{N}/s")
    plain = grab(out, rf"^\s*msuite \(JWT \+ ACL\)\s+{N}/s\s+{N}x raw")
    rows = [
        row(
            "calls/s, JWT + ACL, vs raw grpc.aio",
            "/s",
            (plain[0], raw[0], plain[1]) if plain and raw else None,
        )
    ]
    for sample in ("1.0", "0.01"):
        found = grab(
            out,
            rf"^\s*\+ metrics\(latency\) \+ tracing {re.escape(sample)}\s+{N}/s\s+{N}x raw\s+{N}x without",
        )
        values = (found[0], plain[0], found[2]) if found and plain else None
        rows.append(row(f"calls/s, + metrics + tracing {sample}, vs without", "/s", values))
    for exporter in ("jaeger", "otlp"):
        found = grab(out, rf"^\s*\+ tracing {exporter} 1\.0\s+{N}/s\s+{N}x raw\s+{N}x without")
        values = (found[0], plain[0], found[2]) if found and plain else None
        rows.append(row(f"calls/s, tracing alone ({exporter}, 1.0), vs without", "/s", values))
    return rows


# ---------------------------------------------------------------------- the benches


@dataclass(frozen=True)
class Bench:
    name: str
    parse: Callable[[str], list[Row]]
    quick: tuple[str, ...]
    """Arguments of the quick run (the default); the full run passes none (each bench's defaults)."""

    @property
    def script(self) -> Path:
        return HERE / f"bench_{self.name}.py"


BENCHES = (
    # the rows of issue 20 first, then the rest; quick runs sized for about 4 minutes in all on 2 cores
    Bench("grpc_p2p", parse_grpc_p2p, ("--calls", "1000")),
    Bench("p2p", parse_p2p, ("--calls", "500")),
    Bench("pubsub", parse_pubsub, ("--messages", "1000")),
    Bench("up", parse_up, ("--runs", "5")),
    Bench("store", parse_store, ("--items", "5000")),
    Bench("grpc", parse_grpc, ("--calls", "10000", "--rounds", "3")),
    Bench("http", parse_http, ("--requests", "10000", "--rounds", "3")),
    Bench("diagnostics", parse_diagnostics, ("--calls", "5000", "--rounds", "2")),
    Bench("events", parse_events, ("--count", "500", "--rounds", "3")),
    Bench("files", parse_files, ("--quick",)),
    Bench("shared", parse_shared, ("--quick",)),
    Bench("locks", parse_locks, ("--rounds", "2000")),
    Bench("tasks", parse_tasks, ("--tasks", "10000")),
    Bench("spec", parse_spec, ("--rounds", "10")),
    Bench("codegen", parse_codegen, ("--rounds", "3")),
)
BY_NAME = {bench.name: bench for bench in BENCHES}


@dataclass
class Outcome:
    bench: str
    command: list[str]
    status: str = "ok"
    """``ok``, ``failed`` (non-zero exit), ``timeout`` or ``unparsed`` (a summary line is missing)."""
    seconds: float = 0.0
    returncode: int | None = None
    error: str = ""
    rows: list[Row] = field(default_factory=list)


def stop_group(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop the bench and everything in its process group, and collect what it printed.

    SIGINT first (its ``finally`` blocks run: children stopped, temporary folders removed), then
    SIGTERM, then SIGKILL, each given a few seconds for the whole group to let go of the pipes.
    """
    for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            return process.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    for pipe in (process.stdout, process.stderr):  # held open by something that left the group
        if pipe is not None:
            pipe.close()
    process.wait(5)
    return "", ""


def sweep(pgid: int) -> None:
    """SIGTERM whatever of a finished bench's process group outlived it (a server it did not stop)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)


def tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(bench: Bench, arguments: list[str], timeout: float, verbose: bool) -> Outcome:
    command = [sys.executable, str(bench.script), *arguments]
    shown = " ".join([f"bench/{bench.script.name}", *arguments])
    outcome = Outcome(bench.name, [shown])
    began = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops its servers too
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = stop_group(process)
        outcome.status, outcome.error = "timeout", f"stopped after {timeout:g} s"
    except BaseException:  # Ctrl-C: take the bench's processes down with us
        stop_group(process)
        raise
    finally:
        sweep(process.pid)
    outcome.seconds = time.monotonic() - began
    outcome.returncode = process.returncode
    if verbose:
        print(f"--- {shown}\n{out.rstrip()}\n{err.rstrip()}".rstrip(), file=sys.stderr, flush=True)
    if outcome.status == "timeout":
        return outcome
    if process.returncode != 0:
        outcome.status = "failed"
        outcome.error = f"exit {process.returncode}: {tail(err or out) or '(no output)'}"
        return outcome
    try:
        outcome.rows = bench.parse(out)
    except Exception as error:  # a parser tripping over output it did not expect
        outcome.rows = []
        outcome.status, outcome.error = "unparsed", f"parser error {error!r}"
    missing = [r.measure for r in outcome.rows if not r.parsed]
    if not outcome.rows and not outcome.error:
        outcome.status, outcome.error = "unparsed", "no rows"
    elif missing:
        outcome.status = "unparsed"
        outcome.error = f"line not found for: {'; '.join(missing)}"
    if outcome.status == "unparsed":
        outcome.error += f"\n{tail(out) or '(no output)'}"
    for item in outcome.rows:
        item.bench = bench.name
    return outcome


# ---------------------------------------------------------------------- the table


def figure(value: float | None, unit: str) -> str:
    """``value`` with its unit: no decimals from 100 up (and for counts), 1 from 10, 2 from 1, else 3."""
    if value is None:
        return "-"
    size = abs(value)
    places = 0 if size >= 100 or unit == "" else 1 if size >= 10 else 2 if size >= 1 else 3
    digits = f"{value:,.{places}f}"
    return f"{digits}{unit}" if unit in ("/s", "%", "") else f"{digits} {unit}"


def table(rows: list[Row]) -> str:
    header = ("bench", "measure", "msuite", "baseline", "ratio", "goal")
    cells = [header]
    for r in rows:
        if not r.parsed:
            cells.append((r.bench, r.measure, "?", "?", "?", r.goal))
            continue
        ours = r.note if r.msuite is None and r.note else figure(r.msuite, r.unit)
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        cells.append((r.bench, r.measure, ours, figure(r.baseline, r.unit), ratio, r.goal))
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    right = (False, False, True, True, True, False)
    lines = []
    for index, line in enumerate(cells):
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right, strict=True)]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each bench with its own defaults (slow)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benches (grpc, bench_p2p.py, ...)")
    parser.add_argument("--timeout", type=float, help="seconds per bench (default 240, 1800 with --full)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows and each bench's status here")
    parser.add_argument("--verbose", action="store_true", help="echo each bench's output to stderr")
    parser.add_argument("--list", action="store_true", help="list the benches and their quick arguments")
    args = parser.parse_args()
    if args.list:
        for bench in BENCHES:
            print(f"{bench.name:12} bench/{bench.script.name} {' '.join(bench.quick)}")
        return 0
    chosen = list(BENCHES)
    if args.only:
        names = [re.sub(r"^bench_|\.py$", "", Path(name).name) for name in args.only]
        unknown = [name for name in names if name not in BY_NAME]
        if unknown:
            parser.error(f"unknown bench {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
        chosen = [bench for bench in BENCHES if bench.name in names]
    timeout = args.timeout or (1800.0 if args.full else 240.0)
    mode = "full" if args.full else "quick"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"msuite benches, {mode} run: {len(chosen)} benches, one at a time; "
        f"Python {platform.python_version()}, {os.cpu_count()} cores, load {load}",
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    outcomes = []
    for index, bench in enumerate(chosen, 1):
        arguments = [] if args.full else list(bench.quick)
        print(f"[{index}/{len(chosen)}] {bench.name} ...", end="", file=sys.stderr, flush=True)
        outcome = run(bench, arguments, timeout, args.verbose)
        outcomes.append(outcome)
        print(f" {outcome.status} in {outcome.seconds:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - began
    rows = [r for outcome in outcomes for r in outcome.rows]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"{mode} run of {len(chosen)} benches in {elapsed:.0f} s, {os.cpu_count()} cores, load after {load}"
    )
    print("ratio = msuite / baseline: rates (/s, MB/s) higher is better, times (ms, s) lower is better")
    print(table(rows))
    troubles = [outcome for outcome in outcomes if outcome.status != "ok"]
    for outcome in troubles:
        print(f"{outcome.bench}: {outcome.status} ({outcome.command[0]}): {outcome.error}")
    if args.json:
        report = {
            "mode": mode,
            "seconds": round(elapsed, 1),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "benches": [{k: v for k, v in asdict(o).items() if k != "rows"} for o in outcomes],
            "rows": [asdict(r) for r in rows],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    errors = [o for o in troubles if o.status in ("failed", "unparsed")]
    return 1 if errors else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
