"""Real servers for the tests, started on free loopback ports (Redis so far).

When a server's binary is missing, tests that need it skip with a loud reason,
except under CI (``CI=true``), where a missing binary is a failure: CI must
install it (see .ci/run and scripts/test).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

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


__all__ += ["TcpProxy", "frozen"]


@contextlib.contextmanager
def frozen(server: RedisServer | ZooKeeperServer) -> Iterator[None]:
    """The server's process stopped with SIGSTOP for the block, SIGCONT after: a silent
    server whose connections stay open and whose port still accepts (the kernel does)."""
    assert server.process is not None, "start the server first"
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class TcpProxy:
    """A TCP proxy from a free loopback port to ``target_port``, in a thread of its own
    (so it keeps forwarding while a test's event loop waits in blocking code).

    ``cut()`` is a partition: bytes stop flowing both ways and are held, as TCP
    would hold them, and new connections are accepted but hear nothing; ``heal()``
    lets everything through again. ``reset()`` aborts every connection through it.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open = asyncio.Event()
        self._transports: set[asyncio.WriteTransport] = set()
        self._server: asyncio.Server | None = None

    @property
    def hosts(self) -> str:
        """``host:port`` of the proxy (a ZooKeeper connect string)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """A Redis URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-tcp-proxy", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._set_open(False))

    def heal(self) -> None:
        self._call(self._set_open(True))

    def reset(self) -> None:
        self._call(self._abort_all())

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._thread = None

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "start the proxy first"
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set_open(self, value: bool) -> None:
        if value:
            self._open.set()
        else:
            self._open.clear()

    async def _abort_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._abort_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._transports.add(client_writer.transport)
        try:
            await self._open.wait()
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            self._transports.add(upstream_writer.transport)
            try:
                await asyncio.gather(
                    self._pump(client_reader, upstream_writer), self._pump(upstream_reader, client_writer)
                )
            finally:
                upstream_writer.transport.abort()
                self._transports.discard(upstream_writer.transport)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback reports a cancelled handler)
        finally:
            client_writer.transport.abort()
            self._transports.discard(client_writer.transport)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF, then half-close (so replies read to EOF arrive whole)."""
        while data := await reader.read(65536):
            await self._open.wait()  # while cut, what was read waits here, and nothing more is read
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
