"""A real ``msuite up`` under a small open-files limit, against 1,100 half-open HTTP connections.

Issue 21, item 5: idle or unfinished HTTP connections were never closed, and
with the usual soft limit of 1024 open files 1,100 of them starved both gRPC
and HTTP until the attacker left. Each test starts ``msuite up`` in a child
process with its limit set by ``setrlimit`` before exec, opens the
connections (half of them send nothing, half a partial request), and checks
that other clients are served, that the half-open ones are closed after
``http.header_timeout`` and that ``/status`` reports the limit. Loopback
only; every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

ATTACK = 1_100
HEADER_TIMEOUT = 4.0
READY = re.compile(r"^ready (\S+) (\S+) \((\d+) ms\)$")
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}

LIMITED_UP = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({}, {})); "
    "os.execv(sys.executable, [sys.executable, '-m', 'msuite', 'up'])"
)
"""``msuite up`` exec'd from a process that set its open-files limit first (no preexec_fn)."""

MANIFEST = f"""\
name: exhausted
grpc: {{tcp: {{host: 127.0.0.1, port: 0}}}}
http: {{host: 127.0.0.1, port: 0, header_timeout: {HEADER_TIMEOUT:g}s}}
logging: {{level: info}}
shutdown: {{grace: 2s}}
"""


class Up:
    """``msuite up`` in ``folder`` with the open-files limit ``(soft, hard)``."""

    def __init__(self, folder: Path, nofile: tuple[int, int]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LIMITED_UP.format(*nofile)],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self.errors.append), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(pipe: Any, put: Any) -> None:
        for line in pipe:
            put(line)
        put("")

    def ready(self, timeout: float = 30.0) -> dict[str, str]:
        listeners: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(listeners) < 2:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"not ready in {timeout} s: {''.join(self.errors)}") from None
            assert line, f"exited {self.process.wait(10)}: {''.join(self.errors)}"
            match = READY.match(line.strip())
            assert match, line
            listeners[match.group(1)] = match.group(2)
        return listeners

    def stop(self) -> str:
        """SIGTERM, wait, and return what it wrote on stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for thread in self._threads:
            thread.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return "".join(self.errors)


@pytest.fixture(autouse=True)
def enough_files_here() -> None:
    """This process holds the attack's sockets: it needs more than 1,100 descriptors itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * ATTACK
    if soft != resource.RLIM_INFINITY and soft < wanted:
        assert hard == resource.RLIM_INFINITY or hard >= 2 * ATTACK, (
            f"the hard open-files limit {hard} is too low"
        )
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "msuite.yaml").write_text(MANIFEST)
    return tmp_path


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def half_open(address: tuple[str, int], count: int, budget: float = 30.0) -> list[socket.socket]:
    """``count`` connections that never finish a request: odd ones send part of a request line and
    headers, even ones nothing. Stops early (returning fewer) when the server no longer accepts."""
    opened: list[socket.socket] = []
    deadline = time.monotonic() + budget
    for number in range(count):
        if time.monotonic() > deadline:
            break
        if number % 50 == 49:  # let the server drain its accept queue (128): a full one drops SYNs for 1 s
            time.sleep(0.02)
        sock = socket.socket()
        sock.settimeout(2.0)
        try:
            sock.connect(address)
            if number % 2:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        except OSError:
            sock.close()
            break
        opened.append(sock)
    return opened


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset); never blocks."""
    sock.setblocking(False)
    try:
        while data := sock.recv(65536):  # a 503 or 408 the server wrote before closing
            del data
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def http_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/status", timeout=timeout) as response:
        assert response.status == 200
        report: dict[str, Any] = json.loads(response.read())
        return report


def grpc_health(target: str, timeout: float = 5.0) -> bytes:
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(HEALTH_CHECK)
        reply: bytes = check(b"", timeout=timeout)
        return reply


def wait_closed(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Wait (bounded) until the server closed every socket; those still open."""
    deadline = time.monotonic() + timeout
    left = list(socks)
    while left and time.monotonic() < deadline:
        left = [sock for sock in left if not closed_by_server(sock)]
        if left:
            time.sleep(0.1)
    return left


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def test_1100_half_open_connections_do_not_starve_a_node_stuck_at_1024_open_files(folder: Path) -> None:
    """Soft and hard limit 1024 (raising cannot help): the connection cap, lowered to half the
    limit, keeps descriptors for gRPC, and a new HTTP connection closes the longest-waiting
    half-open one instead of waiting behind it."""
    up = Up(folder, (1024, 1024))
    attack: list[socket.socket] = []
    try:
        listeners = up.ready()
        http = listeners["http"]
        attack = half_open(_address(http), ATTACK)
        began = time.monotonic()
        # the other clients are served while the attacker stays (its connections are all young)
        assert grpc_health(listeners["grpc.tcp"]) == SERVING
        report = http_status(http)
        assert time.monotonic() - began < HEADER_TIMEOUT / 2, "served only once the attack timed out"
        assert len(attack) == ATTACK, f"the node stopped accepting after {len(attack)} connections"
        assert report["open_files"]["soft"] == 1024
        assert report["open_files"]["hard"] == 1024
        connections = report["http"]["connections"]
        assert connections["max"] == 512  # half the open-files limit
        assert connections["open"] <= 512
        # every half-open connection is closed: the oldest to make room, the rest at the timeout
        left = wait_closed(attack, HEADER_TIMEOUT + 5)
        assert not left, f"{len(left)} half-open connections still open {HEADER_TIMEOUT + 5} s on"
        after = http_status(http)["http"]["connections"]
        assert after["closed"]["header_timeout"] >= 1
        assert after["closed"]["evicted"] >= ATTACK - 512
        assert grpc_health(listeners["grpc.tcp"]) == SERVING
    finally:
        close_all(attack)
        errors = up.stop()
    # one line when the cap was reached, not one per connection
    reached = [line for line in errors.splitlines() if "http.max_connections" in line]
    assert len(reached) == 1, errors[-3000:]
    assert "Traceback" not in errors, errors[-3000:]


def test_up_raises_the_soft_open_files_limit_to_the_hard_one_and_reports_both(folder: Path) -> None:
    """The common case: soft 1024 under a higher hard limit. ``msuite up`` raises the soft limit,
    so 1,100 half-open connections fit under the cap and beside every other client."""
    up = Up(folder, (1024, 4096))
    attack: list[socket.socket] = []
    try:
        listeners = up.ready()
        http = listeners["http"]
        attack = half_open(_address(http), ATTACK)
        assert grpc_health(listeners["grpc.tcp"]) == SERVING
        report = http_status(http)
        assert len(attack) == ATTACK
        assert report["open_files"]["soft"] == 4096
        assert report["open_files"]["hard"] == 4096
        connections = report["http"]["connections"]
        assert connections["max"] == 2048
        assert connections["closed"]["evicted"] == 0  # all fit under the cap
        assert connections["refused"] == 0
        assert not wait_closed(attack, HEADER_TIMEOUT + 5)
        assert http_status(http)["http"]["connections"]["closed"]["header_timeout"] >= ATTACK
    finally:
        close_all(attack)
        errors = up.stop()
    assert "http.max_connections" not in errors
    assert "Traceback" not in errors, errors[-3000:]
