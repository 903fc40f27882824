"""``msuite up`` end to end, as a subprocess: scaffold -> up -> calls -> SIGTERM -> exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

MSUITE = [sys.executable, "-m", "msuite"]
READY = re.compile(r"^ready (\S+) (\S+) \((\d+) ms\)$")


class Up:
    """A running ``msuite up`` and the readiness lines it printed."""

    def __init__(self, folder: Path, *args: str, prefix: tuple[str, ...] = ()) -> None:
        """``msuite up ARGS`` in ``folder``, behind ``prefix`` (say ``ip netns exec NAME``)."""
        self.folder = folder
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [*prefix, *MSUITE, "up", *args],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.listeners: dict[str, str] = {}
        self.lines: queue.Queue[str] = queue.Queue()
        self._errors: list[str] = []
        # both pipes are read all the time: a node that logs more than a pipe holds
        # (64 KiB) would otherwise block on its next log line
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._error_reader = threading.Thread(target=self._read_errors, daemon=True)
        self._error_reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._errors.append(line)

    def wait_ready(self, count: int, timeout: float = 20.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while len(self.listeners) < count:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"not ready in {timeout} s: {self.stderr()}") from None
            if not line:
                raise AssertionError(f"exited {self.process.wait()}: {self.stderr()}")
            match = READY.match(line.strip())
            assert match, line
            self.listeners[match.group(1)] = match.group(2)
        return self.listeners

    def stop(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stderr(self) -> str:
        """What it wrote to stderr: all of it once it exited, else so far (marked as such)."""
        if self.process.poll() is None:
            return "(still running) " + "".join(self._errors)
        self._error_reader.join(10)
        return "".join(self._errors)

    def kill(self) -> None:
        """Kill it if it still runs and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)
        self._error_reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 another server listens on, while the block runs."""
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield blocker.getsockname()[1]
    finally:
        blocker.close()


@pytest.fixture
def scaffold(tmp_path: Path) -> Iterator[Path]:
    """``msuite init`` on free ports, with its socket in a short path."""
    folder = tmp_path / "hello"
    subprocess.run([*MSUITE, "init", str(folder)], check=True, capture_output=True)
    manifest = folder / "msuite.yaml"
    short = Path(f"/tmp/msuite-up-{os.getpid()}-{time.monotonic_ns()}.sock")
    text = manifest.read_text()
    text = text.replace("port: 50051", "port: 0").replace("port: 8080", "port: 0")
    manifest.write_text(text.replace("path: hello.sock", f"path: {short}"))
    yield folder
    short.unlink(missing_ok=True)
    _forget_gen()


def _forget_gen() -> None:
    """Drop any ``gen`` package imported before (each project has its own)."""
    for name in [m for m in sys.modules if m == "gen" or m.startswith("gen.")]:
        del sys.modules[name]


def _generated(folder: Path, *modules: str) -> list[Any]:
    """``gen.<module>`` of the project in ``folder``, for each module."""
    _forget_gen()
    sys.path.insert(0, str(folder))
    try:
        return [importlib.import_module(f"gen.{module}") for module in modules]
    finally:
        sys.path.remove(str(folder))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_scaffold_up_serves_grpc_on_tcp_and_unix_and_http_then_stops_on_sigterm(scaffold: Path) -> None:
    manifest = scaffold / "msuite.yaml"
    grpc_port, http_port = _free_port(), _free_port()
    text = manifest.read_text().replace("port: 0\n  gateway", f"port: {http_port}\n  gateway")
    manifest.write_text(text.replace("port: 0", f"port: {grpc_port}"))
    up = Up(scaffold)
    try:
        listeners = up.wait_ready(3)
        assert listeners["grpc.tcp"] == f"127.0.0.1:{grpc_port}"
        assert listeners["http"] == f"http://127.0.0.1:{http_port}"
        # the scaffold's own client, from "a second shell": gRPC over TCP and the Unix socket, HTTP
        called = subprocess.run(
            [sys.executable, "client.py", "up"],
            check=False,
            cwd=scaffold,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert called.returncode == 0, called.stderr
        assert called.stdout.splitlines() == [
            f"gRPC 127.0.0.1:{grpc_port}: Hello, up!",
            f"gRPC {listeners['grpc.unix']}: Hello, up!",
            f"HTTP http://127.0.0.1:{http_port}/v1/hello/up: Hello, up!",
        ]

        async def status() -> dict[str, Any]:
            import aiohttp

            async with aiohttp.ClientSession() as http, http.get(f"{listeners['http']}/status") as response:
                assert response.status == 200
                report: dict[str, Any] = await response.json()
                return report

        report = asyncio.run(status())
        assert report["node"] == "hello"
        assert [entry["state"] for entry in report["grpc"]["listeners"]] == ["serving", "serving"]
        assert up.stop() == 0
        assert "stopped hello" in up.stderr()
    finally:
        up.kill()


def test_up_takes_the_manifest_as_a_positional_file_from_another_folder(scaffold: Path) -> None:
    # the README's first command: `msuite up demo/msuite.yaml` from the folder above the node
    (scaffold.parent / "msuite.yaml").write_text("name: decoy\nzz: 1\n")  # refused, should it be read
    up = Up(scaffold.parent, f"{scaffold.name}/msuite.yaml")
    try:
        listeners = up.wait_ready(3)
        assert set(listeners) == {"grpc.tcp", "grpc.unix", "http"}
        assert (scaffold / "gen" / "wiring.py").is_file()  # generated beside the manifest, not in the cwd
        assert not (scaffold.parent / "gen").exists()
        assert up.stop() == 0
        assert "stopped hello" in up.stderr()
    finally:
        up.kill()


def test_up_runs_the_shared_store(scaffold: Path) -> None:
    manifest = scaffold / "msuite.yaml"
    manifest.write_text(manifest.read_text() + "p2p: {port: 0}\nstorage:\n  shared: {channel: c}\n")
    up = Up(scaffold)
    try:
        listeners = up.wait_ready(4)
        with urllib.request.urlopen(f"{listeners['http']}/status", timeout=10) as response:
            entry = json.loads(response.read())["shared"]
        assert (entry["state"], entry["channel"], entry["heads"]) == ("running", "c", 0)
        assert up.stop() == 0, up.stderr()
    finally:
        up.kill()


def test_up_names_a_taken_port_and_its_line(scaffold: Path) -> None:
    with taken_port() as port:
        manifest = scaffold / "msuite.yaml"
        manifest.write_text(
            manifest.read_text().replace("  port: 0\n  gateway", f"  port: {port}\n  gateway")
        )
        result = subprocess.run(
            [*MSUITE, "up"], check=False, cwd=scaffold, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1, result.stderr
    assert re.search(rf"msuite.yaml:\d+:9: http.port: cannot listen on 127.0.0.1:{port}", result.stderr)
    assert "Traceback" not in result.stderr


def test_the_first_up_says_it_generated_the_missing_code(scaffold: Path) -> None:
    assert not (scaffold / "gen").exists()
    up = Up(scaffold)
    try:
        up.wait_ready(3)
        assert up.stop() == 0
        assert "generated gen/ (it was missing)" in up.stderr()
        assert "regenerated" not in up.stderr()  # it said "its sources changed" before
    finally:
        up.kill()


def test_a_taken_grpc_port_is_named_without_grpcs_own_log(scaffold: Path) -> None:
    """grpc's C core printed `E... add_port.cc:...] Failed to add port to server` before msuite's
    located message; the port is now checked before grpc tries it."""
    with taken_port() as port:
        manifest = scaffold / "msuite.yaml"
        text = manifest.read_text()
        assert "tcp: {host: 127.0.0.1, port: 0}" in text
        manifest.write_text(
            text.replace("tcp: {host: 127.0.0.1, port: 0}", f"tcp: {{host: 127.0.0.1, port: {port}}}")
        )
        result = subprocess.run(
            [*MSUITE, "up"], check=False, cwd=scaffold, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1, result.stderr
    assert re.search(rf"msuite.yaml:\d+:\d+: grpc.tcp.port: cannot listen on 127.0.0.1:{port}", result.stderr)
    assert "add_port" not in result.stderr and "Failed to add port" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_set_flags_override_the_manifest_and_are_checked_at_the_flag(scaffold: Path) -> None:
    with taken_port() as port:
        manifest = scaffold / "msuite.yaml"
        text = manifest.read_text()
        assert "  port: 0\n  gateway" in text
        manifest.write_text(text.replace("  port: 0\n  gateway", f"  port: {port}\n  gateway"))
        bad = subprocess.run(
            [*MSUITE, "up", "--set", "http.port=abc"],
            check=False,
            cwd=scaffold,
            capture_output=True,
            text=True,
        )
        assert bad.returncode == 1
        assert "--set:1:1: http.port: must be a whole number" in bad.stderr
        up = Up(scaffold, "--set", "http.port=0", "--set", "logging.level=warning")
        try:
            listeners = up.wait_ready(3)  # the taken port in the file was replaced
            assert not listeners["http"].endswith(f":{port}")
            assert up.stop() == 0
        finally:
            up.kill()


def test_up_regenerates_stale_code(scaffold: Path) -> None:
    subprocess.run([*MSUITE, "generate"], cwd=scaffold, check=True, capture_output=True)
    proto = scaffold / "protos" / "hello.proto"
    proto.write_text(proto.read_text() + "\n// changed\n")
    up = Up(scaffold)
    try:
        up.wait_ready(3)
        assert up.stop() == 0
        assert "regenerated gen/ (its sources changed)" in up.stderr()
    finally:
        up.kill()


def _echo(tmp_path: Path, grace: str = "2s") -> Path:
    """A copy of the echo test project, its socket in a short path, with ``shutdown.grace``."""
    folder = tmp_path / "echo"
    shutil.copytree(Path(__file__).parents[1] / "runtime" / "node" / "echo", folder)
    manifest = folder / "msuite.yaml"
    text = manifest.read_text().replace("path: echo.sock", f"path: {tmp_path}/e.sock")
    manifest.write_text(text.replace("grace: 2s", f"grace: {grace}"))
    return folder


def test_sigterm_lets_in_flight_calls_finish(tmp_path: Path) -> None:
    folder = _echo(tmp_path)
    up = Up(folder)
    try:
        listeners = up.wait_ready(3)
        echo_pb2, echo_pb2_grpc = _generated(folder, "echo_pb2", "echo_pb2_grpc")

        async def slow_call_across_sigterm() -> str:
            async with grpc.aio.insecure_channel(listeners["grpc.tcp"]) as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                call = asyncio.ensure_future(stub.Say(echo_pb2.Ping(text="slow", action="sleep:1")))
                await asyncio.sleep(0.3)
                up.process.send_signal(signal.SIGTERM)
                reply = await call
                return str(reply.text)

        assert asyncio.run(slow_call_across_sigterm()) == "echo: slow"
        assert up.process.wait(20) == 0
    finally:
        up.kill()
        _forget_gen()


def test_a_second_signal_forces_exit(tmp_path: Path) -> None:
    folder = _echo(tmp_path, grace="30s")
    up = Up(folder)
    try:
        listeners = up.wait_ready(3)
        hang = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import grpc, sys; sys.path.insert(0, sys.argv[2]);"
                "from gen import echo_pb2, echo_pb2_grpc;"
                "ch = grpc.insecure_channel(sys.argv[1]);"
                "echo_pb2_grpc.EchoStub(ch).Say(echo_pb2.Ping(action='sleep:25'))",
                listeners["grpc.tcp"],
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            up.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert up.process.poll() is None  # draining, waiting for the slow call
            began = time.monotonic()
            up.process.send_signal(signal.SIGTERM)
            assert up.process.wait(10) == 1
            assert time.monotonic() - began < 5
            assert "forced exit" in up.stderr()
        finally:
            hang.kill()
            hang.wait(10)
    finally:
        up.kill()


def test_a_node_that_logs_more_than_a_pipe_holds_keeps_serving(scaffold: Path) -> None:
    """The harness reads stderr while the node runs: 3,000 access-log lines (about 200 KB, three
    times a pipe's buffer) reach it, and the node answers to the last request."""
    import urllib.request

    up = Up(scaffold)
    try:
        base = up.wait_ready(3)["http"]

        def status(path: str) -> int:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                return int(response.status)

        for i in range(3000):
            assert status(f"/status?n={i}") == 200
        assert up.stop() == 0
        assert up.stderr().count("GET /status") == 3000
    finally:
        up.kill()
