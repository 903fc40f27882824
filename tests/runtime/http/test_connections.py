"""The HTTP server's connection timeouts and cap, over real loopback sockets against a real node.

Each phase of a connection has its deadline (``http.header_timeout``,
``http.body_timeout``, ``http.keepalive_timeout``; a handler's own time has
none), and ``http.max_connections`` caps how many are open: a new one closes
the longest-waiting idle or unfinished connection, or is answered 503 when
every connection is in a request. Timings are asserted with the sweep's
period and a margin for a loaded machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from msuite.runtime.node import Node
from msuite.runtime.testing import prepare
from msuite.spec import load_manifest
from tests.helpers import eventually

HEADER = 0.6
BODY = 1.0
KEEPALIVE = 2.0
SLACK = 2.0  # the sweep runs every 0.15 s here; the rest is for a loaded machine

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def serving(tmp_path: Path, http: str) -> AsyncIterator[Node]:
    """A node with ``http: {port: 0, <http>}`` and three routes: ``/hello``, ``/read`` (reads the
    body, answers its length) and ``/slow`` (answers once ``node.gate`` is set)."""
    manifest = tmp_path / "msuite.yaml"
    manifest.write_text(f"name: conns\nhttp: {{port: 0, access_log: false, {http}}}\n")
    node = Node(prepare(load_manifest(manifest), tmp_path))
    gate = asyncio.Event()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def read(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(gate.wait(), 10)
        return web.Response(text="late")

    node.http.router.add_get("/hello", hello)
    node.http.router.add_post("/read", read)
    node.http.router.add_get("/slow", slow)
    node.gate = gate  # type: ignore[attr-defined]
    async with node:
        yield node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    timeouts = f"header_timeout: {HEADER}s, body_timeout: {BODY}s, keepalive_timeout: {KEEPALIVE}s"
    async with serving(tmp_path, timeouts) as started:
        yield started


async def connect(node: Node) -> Stream:
    assert node.http.port is not None
    return await asyncio.open_connection("127.0.0.1", node.http.port)


async def until_closed(reader: asyncio.StreamReader, limit: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took."""
    began = time.monotonic()
    data = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - began


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: its status and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return int(lines[0].split()[1]), body


def closed(node: Node) -> dict[str, int]:
    assert node.http.connections is not None
    counts: dict[str, int] = node.http.connections.status()["closed"]
    return counts


GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


# --------------------------------------------------------------------------- the deadlines


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(node: Node) -> None:
    reader, writer = await connect(node)
    data, took = await until_closed(reader)
    assert data == b""
    assert HEADER - 0.05 <= took < HEADER + SLACK
    assert closed(node)["header_timeout"] == 1
    writer.close()


async def test_a_head_trickled_byte_by_byte_is_closed_at_the_header_timeout(node: Node) -> None:
    """Slowloris: bytes keep coming, but the head is never finished; the clock runs from its first."""
    reader, writer = await connect(node)
    began = time.monotonic()
    writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: ")

    async def trickle() -> None:
        for _ in range(50):
            await asyncio.sleep(0.1)
            writer.write(b"a")

    trickling = asyncio.create_task(trickle())
    try:
        data, _ = await until_closed(reader)
    finally:
        trickling.cancel()
    took = time.monotonic() - began
    assert data == b""
    assert HEADER - 0.05 <= took < HEADER + SLACK
    assert closed(node)["header_timeout"] == 1
    writer.close()


async def test_a_kept_alive_connection_gets_the_keepalive_timeout_between_requests(node: Node) -> None:
    reader, writer = await connect(node)
    writer.write(GET_HELLO)
    assert await response(reader) == (200, b"hello")
    await asyncio.sleep(HEADER + 0.3)  # past the header timeout, within the keep-alive one
    writer.write(GET_HELLO)
    assert await response(reader) == (200, b"hello")
    data, took = await until_closed(reader)
    assert data == b""
    assert KEEPALIVE - 0.05 <= took < KEEPALIVE + SLACK
    assert closed(node) == {"header_timeout": 0, "body_timeout": 0, "keepalive_timeout": 1, "evicted": 0}
    writer.close()


async def test_a_stalled_body_is_closed_after_the_body_timeout(node: Node) -> None:
    reader, writer = await connect(node)
    writer.write(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    data, took = await until_closed(reader)
    assert data == b""
    assert BODY - 0.05 <= took < BODY + SLACK
    assert closed(node)["body_timeout"] == 1
    writer.close()


async def test_a_slow_but_steady_body_is_read_whole(node: Node) -> None:
    """The body timeout is the longest silence, not the body's whole time (here 2.5 x the timeout)."""
    reader, writer = await connect(node)
    writer.write(b"POST /read HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
    for _ in range(10):
        await asyncio.sleep(BODY / 4)
        writer.write(b"x" * 10)
    assert await response(reader) == (200, b"100")
    assert closed(node)["body_timeout"] == 0
    writer.close()


async def test_a_slow_handler_is_not_a_slow_client(node: Node) -> None:
    reader, writer = await connect(node)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(max(HEADER, BODY, KEEPALIVE) + 0.5)
    node.gate.set()  # type: ignore[attr-defined]
    assert await response(reader) == (200, b"late")
    assert sum(closed(node).values()) == 0
    writer.close()


# --------------------------------------------------------------------------- the cap


async def test_at_the_cap_a_new_client_closes_the_longest_waiting_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="msuite.http")
    async with serving(tmp_path, "max_connections: 8, header_timeout: 30s") as node:
        waiting = []
        for _ in range(8):
            waiting.append(await connect(node))
            await asyncio.sleep(0.01)  # an order of arrival
        await eventually_open(node, 8)
        reader, writer = await connect(node)
        writer.write(GET_HELLO)
        assert await response(reader) == (200, b"hello")
        # the first to come was closed to make room; the others still wait
        data, took = await until_closed(waiting[0][0], limit=2)
        assert (data, took < 2) == (b"", True)
        for other, _ in waiting[1:]:
            assert not other.at_eof()
        # many more: each closes the longest waiting one; one line says so
        for _ in range(20):
            waiting.append(await connect(node))
        await eventually_open(node, 8)
        assert closed(node)["evicted"] >= 1 + 20 - 1
        reached = [r for r in caplog.records if "http.max_connections" in r.getMessage()]
        assert len(reached) == 1
        assert reached[0].levelno == logging.WARNING
        for _, other in [*waiting, (reader, writer)]:
            other.close()
        await eventually_open(node, 0)
    back = [r.getMessage() for r in caplog.records if "back under the connection cap" in r.getMessage()]
    assert len(back) == 1, back


async def test_when_every_connection_is_in_a_request_a_new_one_gets_a_json_503(tmp_path: Path) -> None:
    async with serving(tmp_path, "max_connections: 4") as node:
        busy = []
        for _ in range(4):
            reader, writer = await connect(node)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            busy.append((reader, writer))
        await eventually(lambda: _busy(node) == 4)
        reader, writer = await connect(node)
        data, _ = await until_closed(reader, limit=5)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert json.loads(body) == {
            "code": 14,
            "message": "too many connections: every one is in a request",
            "details": [],
        }
        writer.close()
        node.gate.set()  # type: ignore[attr-defined]
        for reader, writer in busy:
            assert await response(reader) == (200, b"late")
            writer.close()
        assert node.http.connections is not None
        assert node.http.connections.status()["refused"] == 1


async def test_the_cap_is_at_most_half_the_open_files_limit(tmp_path: Path) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        async with serving(tmp_path, "max_connections: 1000") as node:
            assert node.http.status()["connections"]["max"] == 128
        async with serving(tmp_path, "max_connections: 100") as node:
            assert node.http.status()["connections"]["max"] == 100
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------- helpers


def _busy(node: Node) -> int:
    assert node.http.connections is not None
    busy: int = node.http.connections.status()["phases"]["busy"]
    return busy


async def eventually_open(node: Node, count: int) -> None:
    assert node.http.connections is not None
    table = node.http.connections
    await eventually(lambda: len(table) == count)
