"""Driving :mod:`tests.runtime.p2p.peer_process` nodes from a test: one :class:`Peer` per process."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[3]


class NodeProcess:
    """A node in a process of its own, driven one line per command over stdin/stdout; it prints
    ``ready <peer id> <multiaddr>`` once it runs (see :mod:`.peer_process`)."""

    def __init__(self, name: str, module: str, *arguments: str) -> None:
        self.name = name
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *arguments],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._errors: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self._lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self._errors.append), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        self.peer_id = self.addr = ""

    def ready(self) -> Self:
        """Wait for the ``ready`` line (once; processes may start side by side, then be waited for)."""
        if self.peer_id:
            return self
        try:
            words = self._line(60).split()
            assert words[0] == "ready", words
            self.peer_id, self.addr = words[1], words[2]
        except BaseException:
            self.kill()
            raise
        return self

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)
        put("")

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no answer in {timeout} s; stderr:\n{self.stderr}") from None
        if not line:
            raise AssertionError(f"{self.name} exited {self.process.poll()}; stderr:\n{self.stderr}")
        return line.strip()

    @property
    def stderr(self) -> str:
        return "".join(self._errors)

    def ask(self, command: str, timeout: float = 60) -> str:
        """Send ``command``; its one-line answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line(timeout)

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.ask("status"))
        return answer

    def wait_for(self, condition: Any, timeout: float = 20, what: str = "") -> dict[str, Any]:
        """Poll ``status()`` until ``condition(status)``; return that status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if condition(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {what or condition} still false after {timeout} s: {status}"
                )
            time.sleep(0.05)

    def quit(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
        code = self.process.wait(timeout)
        self._close_pipes()
        return code

    def kill(self) -> None:
        """SIGKILL: nothing is closed cleanly (a process that ended already is only waited for)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pump in self._pumps:
            pump.join(5)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


class Peer(NodeProcess):
    """An msuite node in a process of its own (see :mod:`.peer_process`), ready once built."""

    def __init__(self, name: str, repo: str | Path = ":memory:", bootstrap: tuple[str, ...] = ()) -> None:
        super().__init__(name, "tests.runtime.p2p.peer_process", name, str(repo), *bootstrap)
        self.ready()

    def send(self, command: str, timeout: float = 60) -> str:
        return self.ask(command, timeout)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.process.poll() is None:
                self.quit()
        except Exception:
            self.kill()
        finally:
            self.kill()


def raw_peer(mode: str, address: str, count: int = 0, timeout: float = 120) -> dict[str, Any]:
    """Run :mod:`.raw_peer` (a plain py-libp2p peer in its own process) and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.runtime.p2p.raw_peer", mode, address, str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer
