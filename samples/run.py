"""Start the three sample services together on 127.0.0.1: notifications, auth and cdn.

    python samples/run.py [--two] [--ports default|0] [--repos DIR] [--redis URL] [--smtp HOST:PORT]

Each service is a ``msuite up`` process in its sample's folder. notifications
starts first (the seed); auth and cdn bootstrap to it (``SAMPLES_SEED``) and
join the channel ``samples``. ``--two`` adds a second auth and a second cdn
node. Each node's pid is printed as ``<node> pid <pid>``, each readiness line
as ``<node> ready <listener> <address> (<ms> ms)``, then ``all ready``. A
node that ends on its own is reported and the others keep serving; Ctrl-C
(or SIGTERM) stops them all, newest first (and the Redis it started).

- ``SAMPLES_JWT_SECRET``: taken from the environment, else a fresh random one
  for this run (printed, so you can mint tokens with it).
- ``--ports default``: the ports of samples/README.md (second nodes: +1);
  ``--ports 0``: free ports (read them from the readiness lines).
- ``--repos DIR``: the repositories go under DIR (default: each sample's
  ``.msuite``, ``.msuite-2`` for second nodes).
- ``--redis URL``: the lock server of auth (default ``REDIS_URL`` or
  redis://127.0.0.1:6379/0); if nothing answers there and ``redis-server`` is
  installed, one is started on a free port for this run.
- ``--smtp HOST:PORT``: notifications mails through that SMTP server (plain,
  no login); without it, mails go to notifications' log.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent

PORTS = {
    "notifications": {"GRPC": 50071, "HTTP": 8071, "P2P": 4071},
    "auth": {"GRPC": 50061, "HTTP": 8061, "P2P": 4061},
    "cdn": {"HTTP": 8081, "P2P": 4081},
}


@dataclass
class Running:
    """One ``msuite up`` process and the listeners it reported."""

    name: str
    process: subprocess.Popen[str]
    listeners: dict[str, str] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=1):
            return True
    except OSError:
        return False


def _pipe(node: Running, out: threading.Lock) -> None:
    assert node.process.stdout is not None
    for raw in node.process.stdout:
        line = raw.rstrip("\n")
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "ready" and parts[1] != "(no":
            node.listeners[parts[1]] = parts[2]
        with out:
            print(f"{node.name} {line}", flush=True)
        if line.startswith("ready") and _complete(node):
            node.ready.set()
    node.ready.set()  # it ended: nobody waits for it any more


def _complete(node: Running) -> bool:
    wanted = {"http", "p2p"} | ({"grpc.tcp"} if not node.name.startswith("cdn") else set())
    return wanted <= set(node.listeners)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--two", action="store_true", help="a second auth and a second cdn node")
    parser.add_argument("--ports", choices=("default", "0"), default="default")
    parser.add_argument("--repos", type=Path, default=None, help="put the repositories under this folder")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--smtp", default=None, help="HOST:PORT of an SMTP server (default: log the mails)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each node may take to start")
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("SAMPLES_JWT_SECRET", secrets.token_urlsafe(32))
    if "SAMPLES_JWT_SECRET" not in os.environ:
        print(f"SAMPLES_JWT_SECRET={env['SAMPLES_JWT_SECRET']}", flush=True)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SAMPLES_SEED", None)
    if args.smtp:
        host, _, port = args.smtp.rpartition(":")
        env.update(NOTIFY_PROVIDER="smtp", SMTP_HOST=host, SMTP_PORT=port, SMTP_TLS="none")

    started: list[Running] = []
    redis: subprocess.Popen[bytes] | None = None
    scratch: Path | None = None
    if not _answers(args.redis):
        binary = shutil.which("redis-server")
        if binary is None:
            print(f"nothing answers at {args.redis} and redis-server is not installed", file=sys.stderr)
            return 1
        port = _free_port()
        scratch = Path(tempfile.mkdtemp(prefix="msuite-samples-redis-"))
        redis = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(scratch)],
            stdout=subprocess.DEVNULL,
        )
        args.redis = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not _answers(args.redis) and redis.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _answers(args.redis):
            print(f"the redis-server started for this run does not answer at {args.redis}", file=sys.stderr)
            redis.kill()
            redis.wait(10)
            shutil.rmtree(scratch, ignore_errors=True)
            return 1
        print(f"redis {args.redis} (started for this run)", flush=True)
    env["REDIS_URL"] = args.redis
    out = threading.Lock()

    def start(sample: str, index: int) -> Running:
        name = sample if index == 1 else f"{sample}-{index}"
        node_env = dict(env)
        prefix = sample.upper()
        for kind, port in PORTS[sample].items():
            node_env[f"{prefix}_{kind}_PORT"] = "0" if args.ports == "0" else str(port + index - 1)
        if args.repos is not None:
            node_env[f"{prefix}_REPO"] = str((args.repos / name).resolve())
        elif index > 1:
            node_env[f"{prefix}_REPO"] = f".msuite-{index}"
        process = subprocess.Popen(
            [sys.executable, "-m", "msuite", "up"],
            cwd=SAMPLES / sample,
            env=node_env,
            stdout=subprocess.PIPE,
            text=True,
        )
        node = Running(name, process)
        with out:
            print(f"{name} pid {process.pid}", flush=True)
        threading.Thread(target=_pipe, args=(node, out), daemon=True).start()
        started.append(node)
        if not node.ready.wait(args.timeout) or process.poll() is not None:
            raise RuntimeError(f"{name} did not start (its errors are above)")
        return node

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        seed = start("notifications", 1)
        env["SAMPLES_SEED"] = seed.listeners["p2p"]
        order = [("auth", 1), ("cdn", 1)] + ([("auth", 2), ("cdn", 2)] if args.two else [])
        for sample, index in order:
            start(sample, index)
        with out:
            print("all ready", flush=True)
        reported: set[str] = set()
        while len(reported) < len(started):  # a node that ends is reported; the others serve on
            for node in started:
                code = node.process.poll()
                if code is not None and node.name not in reported:
                    reported.add(node.name)
                    with out:
                        print(f"{node.name} ended (exit status {code}); the others keep running", flush=True)
            time.sleep(0.2)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second stop request must not cut the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for node in reversed(started):
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in reversed(started):
            try:
                node.process.wait(15)
            except subprocess.TimeoutExpired:
                node.process.kill()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
