"""docs/tutorial.md, run for real: every file it shows is written, every command it shows is run.

The tutorial marks its steps with an HTML comment on the line before a fenced block:

- ``<!-- file: PATH -->``: write the block to ``PATH`` (relative to the tutorial's folder);
- ``<!-- append: PATH -->``: add the block at the end of ``PATH``, after a blank line;
- ``<!-- edit: PATH -->``: a ``diff`` block; its ``-`` lines (with the context lines around
  them) are replaced by its ``+`` lines, once, in ``PATH``;
- ``<!-- shell: NAME -->`` (or ``<!-- shell: NAME, retry -->``): a ``console`` block typed into
  the shell ``NAME``. Each ``$ `` line is a command and the lines under it its output (stdout
  and stderr). Shells keep their working folder and exported variables from block to block,
  as a terminal does. ``msuite up`` keeps running in its shell: its block shows the lines it
  prints while starting, and a later block of the same shell that starts with ``^C`` stops it
  with SIGINT and shows what it prints then.

Outputs are compared after normalising what differs from run to run (times, durations, note
ids, and the tutorial's folder, ports and peer IDs, which the test maps to its own: a temporary
folder, free ports, the peer IDs of its nodes). A command's output must match line for line
(``...`` stands for any lines); a line shown for ``msuite up`` or its ``^C`` must be among the
lines it printed (its stdout and stderr interleave). ``retry`` runs a command again, for up to
10 s, until its output matches (a write on one node reaches the other a moment later).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
FOLDER = "/tmp/tutorial"
"""The folder the tutorial works in; the test works in a temporary folder instead."""
PORTS = (50051, 8080, 4001, 50052, 8081, 4002)
"""The ports the tutorial's nodes listen on; the test gives each a free port."""

STEP = re.compile(
    r"^<!-- (file|append|edit|shell): ([^,>]+?)(, retry)? -->\n```[a-z]*\n(.*?)^```$", re.M | re.S
)
PEER_ID = re.compile(r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}")
VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
    (re.compile(r"\(\d+ ms\)"), "(<n> ms)"),
    (re.compile(r"\b\d+(\.\d+)?ms\b"), "<n>ms"),
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<id>"),  # the store's ids (ULIDs)
]
READY_P2P = re.compile(r"^ready p2p (\S+) ")


@dataclass
class Step:
    kind: str
    target: str
    retry: bool
    body: str
    line: int

    def where(self) -> str:
        return f"docs/tutorial.md:{self.line}"


def steps() -> list[Step]:
    text = TUTORIAL.read_text()
    return [
        Step(m.group(1), m.group(2).strip(), bool(m.group(3)), m.group(4), text.count("\n", 0, m.start()) + 1)
        for m in STEP.finditer(text)
    ]


def free_port(avoid: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


class Names:
    """The tutorial's folder, ports and peer IDs, and the test's for each (both ways)."""

    def __init__(self, folder: Path, *, own_ports: bool = True) -> None:
        self.forward: dict[str, str] = {FOLDER: str(folder)}
        taken = set(PORTS)
        for port in PORTS if own_ports else ():
            mine = free_port(taken)
            taken.add(mine)
            self.forward[str(port)] = str(mine)

    def learn(self, shown: str, real: str) -> None:
        self.forward[shown] = real

    @staticmethod
    def _replace(text: str, mapping: dict[str, str]) -> str:
        keys = sorted(mapping, key=len, reverse=True)
        pattern = re.compile(
            "|".join(rf"(?<![A-Za-z0-9]){k}(?![A-Za-z0-9])" if k.isdigit() else re.escape(k) for k in keys)
        )
        return pattern.sub(lambda m: mapping[m.group(0)], text)

    def mine(self, text: str) -> str:
        """The tutorial's text with the test's folder, ports and peer IDs."""
        return self._replace(text, self.forward)

    def shown(self, text: str) -> str:
        """Real output as the tutorial shows it: its folder, ports and peer IDs, volatile parts masked."""
        return normal(self._replace(text, {real: shown for shown, real in self.forward.items()}))


def normal(text: str) -> str:
    """``text`` with what differs from run to run masked."""
    for pattern, mask in VOLATILE:
        text = pattern.sub(mask, text)
    return text


def matches(shown: list[str], real: list[str]) -> bool:
    """Whether ``real`` is ``shown`` line for line, ``...`` standing for any lines."""
    if not shown:
        return not real
    if shown[0] == "...":
        return any(matches(shown[1:], real[i:]) for i in range(len(real) + 1))
    return bool(real) and real[0] == shown[0] and matches(shown[1:], real[1:])


def console(body: str) -> list[tuple[str, list[str]]]:
    """A console block's commands and the output lines shown under each (``^C`` is a command)."""
    commands: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ ") or line == "^C":
            commands.append((line.removeprefix("$ "), []))
        else:
            assert commands, f"output before any command: {line!r}"
            commands[-1][1].append(line)
    return commands


class Server:
    """A running ``msuite up`` and every line it printed, stdout and stderr in one queue."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        # one reader per pipe: in a single pipe, a print's newline may land after another's line
        self.readers = [
            threading.Thread(target=self._read, args=(pipe,), daemon=True)
            for pipe in (process.stdout, process.stderr)
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        for line in pipe:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("\0")  # the end of this pipe

    def wait_for(
        self, wanted: list[str], names: Names, timeout: float, learn: Callable[[str], None]
    ) -> list[str]:
        """The lines printed until every wanted line (as shown) was among them; fails after timeout.

        ``learn`` sees each line first (a ``ready p2p`` line tells the node's peer ID)."""
        deadline = time.monotonic() + timeout
        printed: list[str] = []
        missing = [line for line in wanted if line != "..."]
        ended = 0
        while missing and ended < len(self.readers):
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line == "\0":
                ended += 1
                continue
            printed.append(line)
            learn(line)
            if names.shown(line) in missing:
                missing.remove(names.shown(line))
        assert not missing, f"never printed {missing}; printed:\n" + "\n".join(map(names.shown, printed))
        return printed

    def interrupt(self, timeout: float = 20) -> list[str]:
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout) == 0
        self.close()
        rest: list[str] = []
        while not self.lines.empty():
            if (line := self.lines.get()) != "\0":
                rest.append(line)
        return rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.close()

    def close(self) -> None:
        for reader in self.readers:
            reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class Shell:
    """A terminal: its working folder and environment carry over from command to command."""

    def __init__(self, cwd: Path, env: dict[str, str], state: Path) -> None:
        self.cwd = cwd
        self.env = env
        self.state = state
        self.server: Server | None = None

    def run(self, command: str) -> tuple[int, list[str]]:
        script = f'{command}\n__rc=$?\npwd > "{self.state}.cwd"\nenv -0 > "{self.state}.env"\nexit $__rc\n'
        done = subprocess.run(
            ["bash", "-c", script],
            check=False,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        self.cwd = Path(Path(f"{self.state}.cwd").read_text().strip())
        pairs = Path(f"{self.state}.env").read_text().split("\0")
        self.env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        return done.returncode, done.stdout.splitlines()

    def serve(self, command: str) -> Server:
        assert self.server is None, "msuite up already runs in this shell"
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.server = Server(process)
        return self.server


class Tutorial:
    """The tutorial's steps done in ``folder``, with ``scratch`` for the test's own files.

    With a ``transcript``, what each command really printed is written there too, as a terminal
    shows it (unmasked), for copying into the tutorial when it changes.
    """

    def __init__(self, folder: Path, scratch: Path, transcript: Path | None = None) -> None:
        self.folder = folder
        self.scratch = scratch
        self.names = Names(folder, own_ports=transcript is None)
        self.transcript = transcript.open("w") if transcript else None
        bin_dir = scratch / "bin"
        bin_dir.mkdir()
        # `msuite` and `python` are this interpreter's, whatever else PATH holds
        (bin_dir / "msuite").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m msuite "$@"\n')
        (bin_dir / "msuite").chmod(0o755)
        (bin_dir / "python").symlink_to(sys.executable)
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("TOKEN", "NOTES_JWT_SECRET")},
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.shells: dict[str, Shell] = {}

    def path(self, target: str) -> Path:
        return self.folder / target

    def shell(self, name: str) -> Shell:
        if name not in self.shells:
            state = self.scratch / f"shell-{name}"
            self.shells[name] = Shell(self.scratch, dict(self.env), state)
        return self.shells[name]

    def do(self, step: Step) -> None:
        body = self.names.mine(step.body)
        if step.kind == "file":
            self.path(step.target).parent.mkdir(parents=True, exist_ok=True)
            self.path(step.target).write_text(body)
        elif step.kind == "append":
            path = self.path(step.target)
            path.write_text(path.read_text().rstrip("\n") + "\n\n" + body)
        elif step.kind == "edit":
            self.edit(step, body)
        else:
            for command, shown in console(step.body):
                self.command(step, self.shell(step.target), command, [normal(line) for line in shown])

    def edit(self, step: Step, body: str) -> None:
        path = self.path(step.target)
        lines = [line for line in body.splitlines() if not line.startswith("@@")]
        old = "".join(line[1:] + "\n" for line in lines if not line.startswith("+"))
        new = "".join(line[1:] + "\n" for line in lines if not line.startswith("-"))
        text = path.read_text()
        assert text.count(old) == 1, f"{step.where()}: the lines to change are not in {step.target} once"
        path.write_text(text.replace(old, new))

    def command(self, step: Step, shell: Shell, command: str, shown: list[str]) -> None:
        where = f"{step.where()}: `{command}`"
        if command == "^C":
            assert shell.server is not None, f"{where}: nothing runs in shell {step.target}"
            rest = self.record(step, command, shell.server.interrupt())
            shell.server = None
            missing = [line for line in shown if line != "..." and line not in rest]
            assert not missing, f"{where}: never printed {missing}; printed:\n" + "\n".join(rest)
            return
        if command.startswith("msuite up"):
            # the scaffold's manifest too (written by `msuite init`, not by a step) gets the test's ports
            manifest = shell.cwd / "msuite.yaml"
            manifest.write_text(self.names.mine(manifest.read_text()))
            server = shell.serve(self.names.mine(command))
            printed = server.wait_for(
                shown, self.names, timeout=30, learn=lambda line: self.learn_peer(shown, line)
            )
            self.record(step, command, printed)
            return
        deadline = time.monotonic() + (10 if step.retry else 0)
        while True:
            rc, lines = shell.run(self.names.mine(command))
            real = self.record(step, command, lines)
            if matches(shown, real) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert matches(shown, real), f"{where} (exit {rc}) printed:\n" + "\n".join(real)

    def record(self, step: Step, command: str, lines: list[str]) -> list[str]:
        """The lines as the tutorial shows them; the transcript gets them as printed."""
        if self.transcript:
            prompt = command if command == "^C" else f"$ {command}"
            self.transcript.write(f"<!-- shell: {step.target} ({step.where()}) -->\n{prompt}\n")
            self.transcript.writelines(f"{line}\n" for line in lines)
            self.transcript.flush()
        return [self.names.shown(line) for line in lines]

    def learn_peer(self, shown: list[str], line: str) -> None:
        """Map the peer ID of a shown ``ready p2p`` line to the real one (they differ by port only)."""
        real = READY_P2P.match(line)
        if not real:
            return
        for candidate in shown:
            match = READY_P2P.match(candidate)
            if match:
                shown_id = PEER_ID.search(match.group(1))
                real_id = PEER_ID.search(real.group(1))
                assert shown_id and real_id
                self.names.learn(shown_id.group(0), real_id.group(0))

    def close(self) -> None:
        for shell in self.shells.values():
            if shell.server is not None:
                shell.server.kill()
        if self.transcript:
            self.transcript.close()


@pytest.fixture
def tutorial() -> Iterator[Tutorial]:
    """The tutorial in a temporary folder on free ports.

    ``MSUITE_TUTORIAL_TRANSCRIPT=FILE`` runs it as written instead, in /tmp/tutorial (which must
    not exist yet) on the tutorial's own ports, and writes what every command printed to FILE.
    """
    # a short folder: the scaffold's Unix socket lives in it (paths of at most 107 bytes)
    scratch = Path(tempfile.mkdtemp(prefix="msuite-tut-"))
    transcript = os.environ.get("MSUITE_TUTORIAL_TRANSCRIPT")
    if transcript:
        folder = Path(FOLDER)
        assert not folder.exists(), f"{FOLDER} exists: remove it first"
        run = Tutorial(folder, scratch, Path(transcript).resolve())
    else:
        folder = scratch / "tutorial"
        run = Tutorial(folder, scratch)
    try:
        yield run
    finally:
        run.close()
        shutil.rmtree(scratch, ignore_errors=True)
        if transcript:
            shutil.rmtree(folder, ignore_errors=True)


def test_the_tutorial_marks_its_steps() -> None:
    found = steps()
    assert len(found) >= 20, [step.where() for step in found]
    # a marker that does not parse would silently skip its block
    markers = re.findall(r"^<!-- [a-z]+:.*$", TUTORIAL.read_text(), re.M)
    assert len(markers) == len(found), "a step marker the test does not understand"


def test_every_step_of_the_tutorial_runs_as_shown(tutorial: Tutorial) -> None:
    for step in steps():
        tutorial.do(step)
    assert not any(shell.server for shell in tutorial.shells.values()), "a node left running"
