"""The shared store end to end: real ``msuite up`` processes on one channel converge.

Each node is a copy of ``shared_app/`` (the impl of ``kv.v1.KV``, which adds ``PUT /kv/{id}``,
``DELETE /kv/{id}`` and ``GET /kv`` over ``node.shared("app")`` to ``node.http.router``) with its
own manifest and repository. Every write the test makes goes through HTTP; a write whose answer
was 2xx is *acknowledged*, and the test keeps what each key must hold in the end (:class:`Expected`):
an exact value (or absent), or one of a few values where writes were concurrent (then every node
must hold the same one of them).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_up import Up

APP = Path(__file__).parent / "shared_app"
CHANNEL = "kv-e2e"
TOPIC = f"msuite/{CHANNEL}/shared"

MANIFEST = """\
name: {name}
services:
  kv.v1.KV: {{proto: protos/kv.proto, impl: "kv_app:KV"}}
grpc:
  tcp: {{host: 127.0.0.1, port: 0}}
http: {{host: 127.0.0.1, port: 0}}
p2p:
  host: {p2p_host}
  port: 0
  bootstrap: [{bootstrap}]
storage:
  shared: {{channel: {channel}, rebroadcast: {rebroadcast}}}
logging: {{level: warning}}
shutdown: {{grace: 2s}}
"""

Call = Callable[[str, str, "str | None"], tuple[int, str]]
"""``call(method, url, body)`` -> (HTTP status, body text); status 0 when no answer came."""


def direct(method: str, url: str, body: str | None = None) -> tuple[int, str]:
    """One HTTP request from this process (the nodes listen on this namespace's loopback)."""
    data = None if body is None else body.encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (OSError, http.client.HTTPException) as exc:  # refused, reset: the node is gone
        return 0, f"{type(exc).__name__}: {exc}"


def project(
    root: Path,
    name: str,
    *,
    bootstrap: str = "",
    channel: str = CHANNEL,
    p2p_host: str = "127.0.0.1",
    rebroadcast: str = "5s",
) -> Path:
    """The node folder ``root/name``: the app (copied once) and its manifest."""
    folder = root / name
    if not folder.exists():
        shutil.copytree(APP, folder, ignore=shutil.ignore_patterns("gen", ".msuite", "__pycache__"))
    text = MANIFEST.format(
        name=name, bootstrap=bootstrap, channel=channel, p2p_host=p2p_host, rebroadcast=rebroadcast
    )
    (folder / "msuite.yaml").write_text(text)
    return folder


class KV:
    """A running node and its /kv routes."""

    def __init__(self, up: Up, call: Call = direct) -> None:
        self.up = up
        self.call = call
        self.base = up.listeners["http"]
        self.p2p = up.listeners["p2p"]

    def put(self, key: str, text: str) -> bool:
        status, _ = self.call("PUT", f"{self.base}/kv/{key}", text)
        return 200 <= status < 300

    def delete(self, key: str) -> bool:
        status, _ = self.call("DELETE", f"{self.base}/kv/{key}", None)
        return 200 <= status < 300

    def items(self) -> dict[str, str] | None:
        status, text = self.call("GET", f"{self.base}/kv", None)
        if status != 200:
            return None
        items: dict[str, str] = json.loads(text)
        return items

    def status(self) -> dict[str, Any]:
        status, text = self.call("GET", f"{self.base}/status", None)
        assert status == 200, text
        report: dict[str, Any] = json.loads(text)
        return report


def start(folder: Path) -> Up:
    up = Up(folder)
    up.wait_ready(3, timeout=60)  # p2p, grpc.tcp, http
    return up


def start_all(folders: Sequence[Path]) -> list[Up]:
    """Start the nodes at once (their startups overlap), then wait for each."""
    ups = [Up(folder) for folder in folders]
    try:
        for up in ups:
            up.wait_ready(3, timeout=60)
    except BaseException:
        for up in ups:
            up.kill()
        raise
    return ups


def wait_mesh(nodes: Sequence[KV], timeout: float = 20.0) -> None:
    """Until the first node has every other in its mesh of the channel's topic, and each other has
    at least one peer there (the others bootstrap to the first)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [n.status()["p2p"]["pubsub"].get(TOPIC, {}).get("peers", 0) for n in nodes]
        if counts[0] >= len(nodes) - 1 and min(counts) >= 1:
            return
        assert time.monotonic() < deadline, f"no mesh on {TOPIC} in {timeout} s: peers {counts}"
        time.sleep(0.05)


class Expected:
    """What each key must hold on every node once they converge."""

    def __init__(self) -> None:
        self.exact: dict[str, str | None] = {}
        self.one_of: dict[str, set[str | None]] = {}
        self._lock = threading.Lock()

    def wrote(self, key: str, value: str | None) -> None:
        """An acknowledged write (None: a delete) that nothing concurrent can beat."""
        with self._lock:
            self.exact[key] = value
            self.one_of.pop(key, None)

    def either(self, key: str, values: set[str | None]) -> None:
        with self._lock:
            self.exact.pop(key, None)
            self.one_of[key] = set(values)

    def problems(self, state: dict[str, str]) -> list[str]:
        found = []
        for key, value in self.exact.items():
            if state.get(key) != value:
                found.append(f"{key}: {state.get(key)!r}, expected {value!r}")
        for key, values in self.one_of.items():
            if state.get(key) not in values:
                found.append(f"{key}: {state.get(key)!r}, expected one of {sorted(map(str, values))}")
        found += [f"{key}: {value!r}, never written" for key, value in state.items() if key not in self]
        return found

    def __contains__(self, key: str) -> bool:
        return key in self.exact or key in self.one_of


def converge(nodes: Sequence[KV], expected: Expected, timeout: float) -> tuple[float, dict[str, str]]:
    """Poll every node's items until all are equal and as expected: the seconds that took and the
    state. AssertionError naming the differences after ``timeout`` seconds."""
    began = time.monotonic()
    states: list[dict[str, str] | None] = []
    while True:
        states = [node.items() for node in nodes]
        first = states[0]
        if first is not None and all(s == first for s in states) and not expected.problems(first):
            return time.monotonic() - began, first
        if time.monotonic() - began > timeout:
            break
        time.sleep(0.05)
    lines = [f"not converged in {timeout} s:"]
    for index, (node, state) in enumerate(zip(nodes, states, strict=True)):
        if state is None:
            lines.append(f"  node {index}: no answer")
            continue
        problems = expected.problems(state)
        lines.append(f"  node {index} ({node.up.folder.name}): {len(state)} items, {len(problems)} wrong")
        lines += [f"    {p}" for p in problems[:8]]
        shared = node.status().get("shared", {})
        lines.append(f"    shared: { {k: v for k, v in shared.items() if k != 'peers'} }")
    raise AssertionError("\n".join(lines))


def same_deltas(nodes: Sequence[KV], timeout: float = 5.0) -> dict[str, Any]:
    """Until every node reports the same applied deltas, heads and height; the first's report."""
    deadline = time.monotonic() + timeout
    while True:
        reports = [node.status()["shared"] for node in nodes]
        seen = [(r["deltas"], r["heads"], r["height"], r["pending_writes"]) for r in reports]
        if all(s == seen[0] for s in seen) and seen[0][3] == 0:
            return reports[0]
        assert time.monotonic() < deadline, f"(deltas, heads, height, pending) differ: {seen}"
        time.sleep(0.05)


def soft(problems: list[str], what: str, check: Callable[[], tuple[float, object]]) -> str:
    """Run ``check`` (a :func:`converge`); when it fails, keep its message in ``problems`` for the
    end of the test (so the steps after it still run), naming it ``what``. How long it took, or
    "no"."""
    try:
        took, _ = check()
    except AssertionError as exc:
        problems.append(f"{what}: {exc}")
        return "no"
    return f"{took:.2f} s"


def stop_all(ups: Sequence[Up | None]) -> None:
    for up in ups:
        if up is not None:
            up.kill()


# --------------------------------------------------------------------------- three nodes


def test_three_up_processes_converge_under_spread_and_concurrent_writes(tmp_path: Path) -> None:
    """300 creates spread over three nodes (each node writing a third, the three at once), updates
    and deletes of each node's own keys, and five keys written by all three at the same moment:
    every node lists the same items, the concurrent keys with one of their three values. Then
    writes on one node over items another wrote (it has seen them, so they win everywhere)."""
    first = start(project(tmp_path, "a"))
    ups: list[Up | None] = [first]
    try:
        ups += start_all([project(tmp_path, n, bootstrap=first.listeners["p2p"]) for n in ("b", "c")])
        nodes = [KV(up) for up in ups if up is not None]
        wait_mesh(nodes)
        expected = Expected()
        barrier = threading.Barrier(3, timeout=20)
        failures: list[str] = []

        def write(index: int) -> None:
            node = nodes[index]
            mine = [f"k{n}" for n in range(index, 300, 3)]
            for key in mine:
                if node.put(key, f"{key}@{index}"):
                    expected.wrote(key, f"{key}@{index}")
                else:
                    failures.append(f"PUT {key} on node {index}")
            for key in mine[:10]:
                if node.put(key, f"{key}@{index}-v2"):
                    expected.wrote(key, f"{key}@{index}-v2")
                else:
                    failures.append(f"PUT {key} v2 on node {index}")
            for key in mine[10:20]:
                if node.delete(key):
                    expected.wrote(key, None)
                else:
                    failures.append(f"DELETE {key} on node {index}")
            for round_ in range(5):  # the three write hot<round> at once
                barrier.wait()
                if not node.put(f"hot{round_}", f"hot{round_}@{index}"):
                    failures.append(f"PUT hot{round_} on node {index}")

        began = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(write, range(3)))
        wrote_in = time.monotonic() - began
        assert not failures, failures[:5]
        for round_ in range(5):
            expected.either(f"hot{round_}", {f"hot{round_}@{i}" for i in range(3)})
        took, state = converge(nodes, expected, timeout=10.0)
        assert len(state) == 300 - 30 + 5
        winners = [state[f"hot{r}"] for r in range(5)]
        report = same_deltas(nodes)
        print(f"\n330 writes in {wrote_in:.2f} s; converged {took:.2f} s after; hot winners {winners}")
        print(
            f"shared: deltas {report['deltas']}, conflicts {[n.status()['shared']['conflicts'] for n in nodes]}"
        )

        # node b overwrites items a wrote and deletes items c wrote, and a hot key: b has seen them all
        b = nodes[1]
        for key in [f"k{n}" for n in range(60, 120, 3)]:
            assert b.put(key, f"{key}@b-over"), key
            expected.wrote(key, f"{key}@b-over")
        for key in [f"k{n}" for n in range(62, 122, 3)]:
            assert b.delete(key), key
            expected.wrote(key, None)
        assert b.put("hot0", "hot0@b-last")
        expected.wrote("hot0", "hot0@b-last")
        took2, state = converge(nodes, expected, timeout=10.0)
        assert len(state) == 275 - 20
        same_deltas(nodes)
        print(f"41 overwrites from one node converged in {took2:.2f} s")
    finally:
        stop_all(ups)


# --------------------------------------------------------------------------- restart


def test_a_node_killed_mid_burst_catches_up_after_restart_and_a_late_node_gets_everything(
    tmp_path: Path,
) -> None:
    """Nodes a and b take 150 writes each while c takes writes until it is killed with SIGKILL
    (after 40 acknowledged ones, mid-burst). While c is down, a overwrites and deletes some of
    c's items. c restarts on its repository: every node ends with the same items, c's acknowledged
    writes included (even those it had not sent yet), unless a overwrote them. A fourth node
    started afterwards on a fresh repository gets the whole state. While c is down, a and b must
    converge between themselves within 5 s (checked, then reported at the end so the restart is
    tested either way)."""
    first = start(project(tmp_path, "a"))
    ups: list[Up | None] = [first]
    late: Up | None = None
    try:
        boot = first.listeners["p2p"]
        ups += start_all([project(tmp_path, n, bootstrap=boot) for n in ("b", "c")])
        nodes = [KV(up) for up in ups if up is not None]
        a, b, c = nodes
        wait_mesh(nodes)
        expected = Expected()
        failures: list[str] = []
        problems: list[str] = []
        c_acked = 0

        done = {"a": 0, "b": 0}

        def burst(node: KV, prefix: str, count: int) -> None:
            for n in range(count):
                key = f"{prefix}{n}"
                if node.put(key, f"{key}!"):
                    expected.wrote(key, f"{key}!")
                    done[prefix] += 1
                else:
                    failures.append(key)

        def burst_c() -> None:
            nonlocal c_acked
            for n in range(1000):
                key = f"c{n}"
                if c.put(key, f"{key}!"):
                    expected.wrote(key, f"{key}!")
                    c_acked += 1
                else:  # killed: this write may have landed before the kill, or not
                    expected.either(key, {f"{key}!", None})
                    return

        with ThreadPoolExecutor(3) as pool:
            writers = [pool.submit(burst, a, "a", 150), pool.submit(burst, b, "b", 150), pool.submit(burst_c)]
            deadline = time.monotonic() + 20
            while c_acked < 40:
                assert time.monotonic() < deadline, f"c took only {c_acked} writes in 20 s"
                time.sleep(0.001)
            c.up.process.kill()  # SIGKILL, in the middle of the three bursts
            killed_at, others_at = c_acked, dict(done)
            for writer in writers:
                writer.result(timeout=60)
        assert not failures, failures[:5]
        c.up.process.wait(10)
        c.up.kill()
        print(f"\nc killed after {killed_at} acknowledged writes, a and b at {others_at} of 150 each")
        assert max(others_at.values()) < 150, "the kill came after the bursts"

        # while c is down, a and b go on converging between themselves (the writes of c's they
        # never got are c's to send once it is back)
        survivors = Expected()
        for key, value in expected.exact.items():
            if key.startswith("c"):
                survivors.either(key, {value, None})
            else:
                survivors.wrote(key, value)
        for key, values in expected.one_of.items():
            survivors.either(key, values | {None})
        took = soft(problems, "a and b while c is down", lambda: converge([a, b], survivors, timeout=5.0))
        print(f"a and b converged between themselves, c down: {took}")

        # while c is down: a overwrites and deletes items of c's it holds (so it has seen them)
        held = sorted(
            k for k, v in (a.items() or {}).items() if k.startswith("c") and expected.exact.get(k) == v
        )
        assert len(held) >= 10, f"a holds only {len(held)} of c's items"
        for key in held[:5]:
            assert a.put(key, f"{key}@a"), key
            expected.wrote(key, f"{key}@a")
        for key in held[5:10]:
            assert a.delete(key), key
            expected.wrote(key, None)

        restarted_at = time.monotonic()
        ups[2] = None
        restarted = start(c.up.folder)  # the same repository
        ups[2] = restarted
        nodes[2] = c = KV(restarted)
        took, state = converge(nodes, expected, timeout=15.0)
        since_restart = time.monotonic() - restarted_at
        assert len(state) >= 300 + c_acked - 5
        same_deltas(nodes)
        print(f"restarted c caught up in {since_restart:.2f} s from its restart ({took:.2f} s after ready)")

        # a fourth node on a fresh repository gets everything
        late_at = time.monotonic()
        late = start(project(tmp_path, "d", bootstrap=boot))
        d = KV(late)
        took, state_d = converge([a, d], expected, timeout=15.0)
        assert state_d == state
        print(f"late node d has all {len(state_d)} items {time.monotonic() - late_at:.2f} s from its start")
        # and everyone agrees on the DAG too
        same_deltas([*nodes, d])
        assert not problems, "\n\n".join(problems)
    finally:
        stop_all([late, *ups])


# --------------------------------------------------------------------------- partition

RELAY = """\
import json, sys, urllib.error, urllib.request
for line in sys.stdin:
    method, url, body = json.loads(line)
    request = urllib.request.Request(url, data=None if body is None else body.encode(), method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = [response.status, response.read().decode()]
    except urllib.error.HTTPError as exc:
        answer = [exc.code, exc.read().decode()]
    except Exception as exc:
        answer = [0, f"{type(exc).__name__}: {exc}"]
    print(json.dumps(answer), flush=True)
"""


class Relay:
    """A Python process inside a network namespace making the test's HTTP requests there, one JSON
    line per request and per answer (the node's HTTP port is on that namespace's loopback)."""

    def __init__(self, netns: str) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-u", "-c", RELAY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()

    def __call__(self, method: str, url: str, body: str | None = None) -> tuple[int, str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(json.dumps([method, url, body]) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()  # the relay's own timeout bounds this
        assert line, f"the relay exited {self.process.poll()}"
        status, text = json.loads(line)
        return int(status), str(text)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class NetnsUp(Up):
    """``msuite up`` run with ``ip netns exec`` (which execs it: the pid is the node's)."""

    def __init__(self, folder: Path, netns: str) -> None:
        super().__init__(folder, prefix=("ip", "netns", "exec", netns))


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


def test_a_partitioned_node_converges_after_the_partition_heals(tmp_path: Path) -> None:
    """Three nodes in three network namespaces joined by a Linux bridge in a fourth; one node's
    bridge port is set down (a partition: packets dropped, no connection reset), both sides write,
    and the port is set up again.

    Network: namespace ``msk<pid>-br`` holds bridge ``br0``; node i runs in ``msk<pid>-n<i>`` with
    ``eth0`` at 10.77.0.<i+1>/24, a veth whose other end ``p<i>`` is a port of ``br0``. libp2p
    listens on 10.77.0.<i+1>; HTTP and gRPC on each namespace's own loopback. The test reaches a
    node's HTTP port through a relay process started in that node's namespace (a line of JSON per
    request): nothing is configured in the test's own namespace. ``rebroadcast: 1s``.

    During the partition: a and b each write 20 new keys and c 20; a updates pre0-4 and c deletes
    pre5-9 (each side had seen them: these win); a deletes pre10-12 while c updates them (a
    delete loses to a concurrent write: c's values win); b and c both write both0-4 (one of the two
    values wins, the same everywhere). a and b, still connected, must converge between themselves
    within rebroadcast + 4 s as if c did not exist (checked, then reported at the end so the heal
    is tested either way); c must not see a's writes before the heal. After the heal every node
    converges within rebroadcast + 5 s."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (ip netns)")
    if shutil.which("ip") is None:
        pytest.skip("needs the `ip` command (iproute2) to create network namespaces")
    tag = f"msk{os.getpid()}"
    bridge = f"{tag}-br"
    spaces = [f"{tag}-n{i}" for i in range(3)]
    created: list[str] = []
    ups: list[Up] = []
    relays: list[Relay] = []
    problems: list[str] = []
    try:
        probe = subprocess.run(["ip", "netns", "add", bridge], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot create a network namespace: {probe.stderr.strip()}")
        created.append(bridge)
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge, "link", "set", "br0", "up")
        for i, space in enumerate(spaces):
            ip("netns", "add", space)
            created.append(space)
            ip("-n", space, "link", "set", "lo", "up")
            ip("-n", space, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", bridge)
            ip("-n", space, "addr", "add", f"10.77.0.{i + 1}/24", "dev", "eth0")
            ip("-n", space, "link", "set", "eth0", "up")
            ip("-n", bridge, "link", "set", f"p{i}", "master", "br0")
            ip("-n", bridge, "link", "set", f"p{i}", "up")

        def node_folder(i: int, bootstrap: str = "") -> Path:
            return project(
                tmp_path, "abc"[i], bootstrap=bootstrap, p2p_host=f"10.77.0.{i + 1}", rebroadcast="1s"
            )

        ups.append(NetnsUp(node_folder(0), spaces[0]))
        ups[0].wait_ready(3, timeout=60)
        boot = ups[0].listeners["p2p"]
        assert boot.startswith("/ip4/10.77.0.1/"), boot
        ups += [NetnsUp(node_folder(i, boot), spaces[i]) for i in (1, 2)]
        for up in ups[1:]:
            up.wait_ready(3, timeout=60)
        relays = [Relay(space) for space in spaces]
        nodes = [KV(up, relay) for up, relay in zip(ups, relays, strict=True)]
        a, b, c = nodes
        wait_mesh(nodes)

        expected = Expected()
        for n in range(30):
            assert nodes[n % 3].put(f"pre{n}", f"pre{n}!"), n
            expected.wrote(f"pre{n}", f"pre{n}!")
        converge(nodes, expected, timeout=10.0)

        ip("-n", bridge, "link", "set", "p2", "down")  # c is cut off
        cut_at = time.monotonic()
        for n in range(20):
            for node, prefix in ((a, "pa"), (b, "pb"), (c, "pc")):
                assert node.put(f"{prefix}{n}", f"{prefix}{n}!"), (prefix, n)
                expected.wrote(f"{prefix}{n}", f"{prefix}{n}!")
        for n in range(5):
            assert a.put(f"pre{n}", f"pre{n}@a")
            expected.wrote(f"pre{n}", f"pre{n}@a")
            assert c.delete(f"pre{n + 5}")
            expected.wrote(f"pre{n + 5}", None)
            assert b.put(f"both{n}", f"both{n}@b") and c.put(f"both{n}", f"both{n}@c")
            expected.either(f"both{n}", {f"both{n}@b", f"both{n}@c"})
        for n in range(10, 13):
            assert a.delete(f"pre{n}") and c.put(f"pre{n}", f"pre{n}@c")
            expected.wrote(f"pre{n}", f"pre{n}@c")
        wrote_at = time.monotonic()
        # a and b are connected: they converge between themselves as if c did not exist
        side = _side(expected, ("pc",), ("pre5", "pre6", "pre7", "pre8", "pre9"))
        late = soft(
            problems, "a and b during the partition", lambda: converge([a, b], side, timeout=1.0 + 4.0)
        )
        time.sleep(max(0.0, wrote_at + 1.5 - time.monotonic()))  # more than a rebroadcast
        seen_c, seen_a = c.items() or {}, a.items() or {}
        assert not [k for k in seen_c if k.startswith(("pa", "pb"))], "c saw writes across the partition"
        assert not [k for k in seen_a if k.startswith("pc")], "a saw writes across the partition"

        cut_for = time.monotonic() - cut_at
        ip("-n", bridge, "link", "set", "p2", "up")
        took, state = converge(nodes, expected, timeout=1.0 + 5.0)
        winners = [state[f"both{n}"] for n in range(5)]
        report = same_deltas(nodes)
        print(
            f"\npartition of {cut_for:.1f} s (a and b converged in it: {late}); converged {took:.2f} s "
            f"after the heal; both* winners {winners}; conflicts {report['conflicts']}"
        )
        assert len(state) == 30 - 5 + 60 + 5
        assert not problems, "\n\n".join(problems)
    finally:
        for stop in [relay.kill for relay in relays] + [up.kill for up in ups]:
            with contextlib.suppress(Exception):  # the namespaces go whatever happens
                stop()
        for space in reversed(created):
            subprocess.run(["ip", "netns", "del", space], capture_output=True, check=False, timeout=10)


def _side(expected: Expected, absent_prefixes: tuple[str, ...], old: tuple[str, ...]) -> Expected:
    """What the majority side holds during the partition: none of the other side's new keys, the
    other side's deletes of ``old`` keys not applied (their pre-partition values), and the keys
    both sides wrote with this side's value."""
    side = Expected()
    for key, value in expected.exact.items():
        if key.startswith(absent_prefixes):
            continue
        if key in old:
            side.wrote(key, f"{key}!")
        elif key in ("pre10", "pre11", "pre12"):
            side.wrote(key, None)
        else:
            side.wrote(key, value)
    for key in expected.one_of:
        side.wrote(key, f"{key}@b")
    return side
