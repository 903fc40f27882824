"""The HTTP server: users' handlers, /status, recovery, CORS, body limit, access log."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, prepare
from msuite.spec import load_manifest


@pytest.fixture
async def web_node(echo_manifest: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    node = Node(prepare(load_manifest(echo_manifest), tmp_path))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.match_info['name']}")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail")

    async def echo_body(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    node.http.router.add_get("/hello/{name}", hello)
    node.http.router.add_get("/broken", broken)
    node.http.router.add_post("/body", echo_body)
    async with node:
        harness = Harness(node, None)
        yield harness
        await harness.close()


async def test_users_handlers_are_served(web_node: Harness) -> None:
    async with web_node.http.get("/hello/ann") as response:
        assert response.status == 200
        assert await response.text() == "hello ann"
    async with web_node.http.get("/nowhere") as response:
        assert response.status == 404


async def test_status_reports_the_node_its_services_and_listeners(web_node: Harness) -> None:
    async with web_node.http.get("/status") as response:
        assert response.status == 200
        report = await response.json()
    assert report["node"] == "echo"
    assert report["state"] == "running"
    assert list(report["services"]) == ["echo.v1.Echo", "echo.v1.Admin"]
    listeners = report["grpc"]["listeners"]
    assert report["services"]["echo.v1.Echo"] == {
        "proto": "protos/echo.proto",
        "impl": "echo_service:Echo",
        "served_on": [entry["address"] for entry in listeners],
    }
    assert report["grpc"]["unimplemented"] == ["/echo.v1.Admin/Wipe"]
    assert [(entry["kind"], entry["state"]) for entry in listeners] == [
        ("tcp", "serving"),
        ("unix", "serving"),
    ]
    assert report["http"]["state"] == "serving"
    assert report["repo"]["kv"]["backend"] == "leveldb"
    assert [worker["task"] for worker in report["tasks"]["workers"]] == [None]
    assert report["auth"]["acl"]["entries"] == 4
    secret = web_node.node.manifest.auth.jwt.secret.get_secret_value()  # type: ignore[union-attr]
    assert secret not in str(report)


async def test_users_add_status_sections(web_node: Harness) -> None:
    async def queue() -> dict[str, int]:
        return {"depth": 3}

    web_node.node.status.add("queue", queue)
    web_node.node.status.add("broken", lambda: 1 / 0)
    with pytest.raises(ValueError, match="exists already"):
        web_node.node.status.add("grpc", dict)
    async with web_node.http.get("/status") as response:
        report = await response.json()
    assert report["queue"] == {"depth": 3}
    assert report["broken"] == {"error": "ZeroDivisionError: division by zero"}


async def test_a_failing_handler_is_a_500_without_details(
    web_node: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="msuite.http"):
        async with web_node.http.get("/broken") as response:
            assert response.status == 500
            body = await response.json()
    assert body == {"code": 13, "message": "internal error", "details": []}
    assert any("secret detail" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_cors_for_allowed_origins_only(web_node: Harness) -> None:
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    async with web_node.http.options("/private/x", headers=preflight) as response:
        assert response.status == 204  # answered before authentication
        assert response.headers["Access-Control-Allow-Origin"] == "http://app.example"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
    async with web_node.http.get("/hello/a", headers={"Origin": "http://app.example"}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "http://app.example"
    async with web_node.http.get("/private/x", headers={"Origin": "http://app.example"}) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == "http://app.example"
    async with web_node.http.get("/hello/a", headers={"Origin": "http://evil.example"}) as response:
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_bodies_over_the_limit_are_refused(web_node: Harness) -> None:
    async with web_node.http.post("/body", data=b"x" * 1000) as response:
        assert response.status == 200
        assert len(await response.read()) == 1000
    async with web_node.http.post("/body", data=b"x" * (64 * 1024 + 1)) as response:
        assert response.status == 413


async def test_one_access_log_line_per_request(web_node: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="msuite.http.access"):
        async with web_node.http.get("/hello/a?x=1") as response:
            await response.read()
        async with web_node.http.get("/nowhere") as response:
            await response.read()
    lines = [r.getMessage() for r in caplog.records if r.name == "msuite.http.access"]
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["GET /hello/a 200", "GET /nowhere 404"]


async def test_the_server_binds_loopback_by_default(web_node: Harness) -> None:
    assert web_node.base_url.startswith("http://127.0.0.1:")


async def test_the_gateway_reaches_grpc_with_the_same_token_and_acl(web_node: Harness) -> None:
    http = web_node.http
    async with http.get("/v1/echo/hi") as response:
        assert response.status == 200
        assert await response.json() == {"text": "echo: hi", "subject": "", "role": "none", "seen": 0}
    # /echo.v1.Echo/Shout needs authenticated_write: the gateway call is checked against the gRPC method
    async with http.post("/v1/shout", json={"text": "hi"}) as response:
        assert response.status == 401
        assert (await response.json())["code"] == 16
    async with http.post(
        "/v1/shout", json={"text": "hi"}, headers=web_node.bearer("public_read")
    ) as response:
        assert response.status == 403
    async with http.post(
        "/v1/shout", json={"text": "hi"}, headers=web_node.bearer("admin", "ann")
    ) as response:
        assert response.status == 200
        assert await response.json() == {"text": "echo: HI", "subject": "ann", "role": "admin", "seen": 0}
    async with http.post(
        "/v1/shout", json={"text": "hi"}, headers={"Authorization": "Bearer bad"}
    ) as response:
        assert response.status == 401


async def test_gateway_errors_map_to_http_statuses(web_node: Harness) -> None:
    http = web_node.http
    admin = web_node.bearer("admin")
    async with http.post("/v1/shout", data=b"{not json", headers=admin) as response:
        assert response.status == 400
        assert (await response.json())["code"] == 3
    async with http.get("/v1/echo/x", params={"action": "abort:NOT_FOUND"}) as response:
        assert response.status == 404
        assert (await response.json())["message"] == "asked to fail"
    async with http.get("/v1/echo/x", params={"action": "raise"}) as response:
        assert response.status == 500
        assert (await response.json())["message"] == "internal error"
    async with http.get(
        "/v1/echo/x", params={"action": "location:/elsewhere"}, allow_redirects=False
    ) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere"


async def test_every_http_error_of_the_node_is_json(echo_manifest: Path, tmp_path: Path) -> None:
    """Unknown routes, trailing slashes, wrong methods and handlers' own refusals answered as text
    (`404: Not Found`) while the gateway answered JSON; now one shape for all."""
    node = Node(prepare(load_manifest(echo_manifest), tmp_path))

    async def refuse(request: web.Request) -> web.Response:
        raise web.HTTPConflict(text="the note was changed meanwhile")

    node.http.router.add_post("/notes", refuse)
    async with node:
        harness = Harness(node, None)
        try:
            cases = [
                ("GET", "/nowhere", 404, 5, "not found"),
                ("GET", "/status/", 404, 5, "not found"),
                ("DELETE", "/status", 405, 12, "method not allowed"),
                ("POST", "/notes", 409, 10, "the note was changed meanwhile"),
            ]
            for method, path, status, code, message in cases:
                async with harness.http.request(method, path) as response:
                    assert response.status == status
                    assert response.content_type == "application/json"
                    assert await response.json() == {"code": code, "message": message, "details": []}
                    if status == 405:
                        assert response.headers["Allow"] == "GET,HEAD"
        finally:
            await harness.close()


async def _raw_request(address: str, header_line: bytes) -> bytes:
    host, port = address.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n" + header_line + b"\r\n\r\n")
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    return data


async def test_a_token_the_jwt_check_accepts_is_never_refused_by_the_http_parser(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    """With `max_token_size: 16KiB`, a valid 10 KB token passed on gRPC but got aiohttp's 400 on
    HTTP and the gateway (its header limit was 8190 bytes)."""
    path = echo_manifest.with_name("big-tokens.yaml")
    text = echo_manifest.read_text(encoding="utf-8")
    anchor = "    secret: ${ECHO_JWT_SECRET:-an-echo-test-secret-of-at-least-32-bytes}\n"
    assert anchor in text
    path.write_text(text.replace(anchor, anchor + "    max_token_size: 16KiB\n"), encoding="utf-8")
    node = Node(prepare(load_manifest(path), tmp_path))
    async with node:
        harness = Harness(node, None)
        try:
            token = node.auth.jwt.issue("alice", "admin", meta={"blob": "x" * 10_000})
            assert 10_000 < len(token) < 16 * 1024
            headers = {"Authorization": f"Bearer {token}"}
            async with harness.http.get("/private/x", headers=headers) as response:
                assert response.status == 404  # through auth (no such route), not refused for size
            async with harness.http.get("/v1/echo/hi", headers=headers) as response:
                assert response.status == 200
                assert (await response.json())["subject"] == "alice"
        finally:
            await harness.close()


async def test_a_header_over_the_limit_gets_a_json_431_that_repeats_nothing(
    web_node: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp answered a text 400 repeating the header's first 100 bytes, and logged a traceback."""
    echo = web_node
    address = echo.node.http.address
    assert address is not None
    with caplog.at_level(logging.INFO):
        raw = await _raw_request(address, b"X-Secret: SECRET" + b"a" * 40_000)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"431", head
    assert json.loads(body) == {
        "code": 8,
        "message": f"a request line or header is over {16 * 1024} bytes",
        "details": [],
    }
    assert b"SECRET" not in raw
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"
    assert "SECRET" not in caplog.text
    assert any("refused a request" in r.getMessage() for r in caplog.records)
    async with echo.http.get("/status") as response:  # the node goes on serving
        assert response.status == 200
