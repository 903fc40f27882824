"""Real servers for the tests, started on free loopback ports (Redis so far).

When a server's binary is missing, tests that need it skip with a loud reason,
except under CI (``CI=true``), where a missing binary is a failure: CI must
install it (see .ci/run and scripts/test).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "ZooKeeperServer", "free_port", "need_binary"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package {package}): these tests need a real server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class RedisServer:
    """A redis-server process of our own: no persistence unless asked, loopback only."""

    def __init__(self, workdir: Path, *, password: str | None = None, persistent: bool = False) -> None:
        self.binary = need_binary("redis-server", "redis-server")
        self.workdir = workdir
        self.password = password
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--save", ""]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")


class ZooKeeperServer:
    """A standalone ZooKeeper of our own (Debian's zookeeper package), loopback only."""

    def __init__(self, workdir: Path) -> None:
        self.java = need_binary("java", "zookeeperd (it brings a Java runtime)")
        if not ZOOKEEPER_JAR.exists():
            message = (
                f"{ZOOKEEPER_JAR} is missing (Debian package zookeeperd): these tests need a real server"
            )
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        data = self.workdir / "zk-data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "zoo.cfg"
        config.write_text(
            "tickTime=500\n"
            f"dataDir={data}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "minSessionTimeout=1000\n"
            "maxSessionTimeout=30000\n"
            "4lw.commands.whitelist=ruok,srvr\n"
        )
        self.process = subprocess.Popen(
            [
                self.java,
                "-Xmx256m",
                "-cp",
                f"/etc/zookeeper/conf:{ZOOKEEPER_JAR}",
                f"-Dzookeeper.log.dir={self.workdir}",
                "-Dzookeeper.root.logger=WARN,CONSOLE",
                "org.apache.zookeeper.server.ZooKeeperServerMain",
                str(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"srvr")  # answers "Mode: ..." only once it serves sessions
                    if b"Mode:" in sock.recv(1024):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"ZooKeeper did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
