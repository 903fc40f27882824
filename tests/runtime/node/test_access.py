"""JWT and ACL through a running node: gRPC metadata, HTTP headers, run-time ACL changes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web

from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, prepare, running
from msuite.spec import Role, load_manifest


@pytest.fixture
async def echo(echo_manifest: Path) -> AsyncIterator[Harness]:
    async with running(echo_manifest) as harness:
        yield harness


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (Role.PUBLIC_READ, grpc.StatusCode.PERMISSION_DENIED),
        (Role.AUTHENTICATED_READ, grpc.StatusCode.PERMISSION_DENIED),
        (Role.AUTHENTICATED_WRITE, grpc.StatusCode.OK),
        (Role.ADMIN, grpc.StatusCode.OK),
    ],
)
async def test_a_protected_method_needs_a_high_enough_role(
    echo: Harness, echo_pb: Any, role: Role | None, expected: grpc.StatusCode
) -> None:
    echo_pb2, _ = echo_pb
    metadata = echo.metadata(role, "alice") if role else None
    assert await code_of(echo.clients.echo().Shout(echo_pb2.Ping(text="hi"), metadata=metadata)) == expected


async def test_the_handler_sees_who_called(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, _ = echo_pb
    reply = await echo.clients.echo().Shout(
        echo_pb2.Ping(text="hi"), metadata=echo.metadata("admin", "alice")
    )
    assert (reply.text, reply.subject, reply.role) == ("echo: HI", "alice", "admin")
    anonymous = await echo.clients.echo().Say(echo_pb2.Ping(text="hi"))
    assert (anonymous.subject, anonymous.role) == ("", "none")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-token",
        "Bearer a.b.c",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "x" * 9000,
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwicm9sZSI6ImFkbWluIiwiZXhwIjo0MTAyNDQ0ODAwfQ.",
    ],
)
async def test_a_bad_token_is_unauthenticated_even_on_an_open_method(
    echo: Harness, echo_pb: Any, authorization: str
) -> None:
    echo_pb2, _ = echo_pb
    call = echo.clients.echo().Say(echo_pb2.Ping(text="hi"), metadata=(("authorization", authorization),))
    assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_metadata_over_the_limit_is_refused_every_time(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, _ = echo_pb
    for size in (9_000, 20_000, 30_000):  # between gRPC's default soft and hard limits: no randomness
        metadata = (("authorization", "Bearer " + "x" * size),)
        for _ in range(5):
            call = echo.clients.echo().Say(echo_pb2.Ping(), metadata=metadata)
            assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED
    call = echo.clients.echo().Say(echo_pb2.Ping(), metadata=(("authorization", "x" * 40_000),))
    assert await code_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_expired_token_is_unauthenticated(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, _ = echo_pb
    from jose import jwt

    settings = echo.node.manifest.auth
    assert settings is not None and settings.jwt is not None
    now = int(time.time())
    claims = {"sub": "alice", "role": "admin", "iat": now - 60, "exp": now - 5}
    token = jwt.encode(claims, settings.jwt.secret.get_secret_value(), algorithm="HS256")
    call = echo.clients.echo().Shout(echo_pb2.Ping(), metadata=(("authorization", f"Bearer {token}"),))
    assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_service_prefix_covers_its_methods(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    stub = echo_pb2_grpc.AdminStub(echo.node.grpc.client("echo.v1.Admin"))
    assert await code_of(stub.Reset(echo_pb2.Ping())) == grpc.StatusCode.UNAUTHENTICATED
    low = echo.metadata("authenticated_write")
    assert await code_of(stub.Reset(echo_pb2.Ping(), metadata=low)) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stub.Reset(echo_pb2.Ping(), metadata=echo.metadata("admin"))) == grpc.StatusCode.OK


async def test_acl_changes_apply_at_once_and_persist(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, _ = echo_pb
    manifest = prepare(load_manifest(echo_manifest), tmp_path)
    async with running(manifest, repo=str(tmp_path / "kept")) as echo:
        say = echo.clients.echo().Say
        assert await code_of(say(echo_pb2.Ping())) == grpc.StatusCode.OK
        await echo.node.auth.acl.allow("/echo.v1.Echo/Say", Role.AUTHENTICATED_READ)
        assert await code_of(say(echo_pb2.Ping())) == grpc.StatusCode.UNAUTHENTICATED
        reader = echo.metadata("authenticated_read")
        assert await code_of(say(echo_pb2.Ping(), metadata=reader)) == grpc.StatusCode.OK
        # a manifest entry changed at run time is put back at the next start
        await echo.node.auth.acl.allow("/echo.v1.Echo/Shout", Role.NONE)
        assert await code_of(echo.clients.echo().Shout(echo_pb2.Ping())) == grpc.StatusCode.OK
    async with running(manifest, repo=str(tmp_path / "kept")) as echo:
        acl = echo.node.auth.acl.list()
        assert acl["/echo.v1.Echo/Say"] == Role.AUTHENTICATED_READ  # added at run time: kept
        assert acl["/echo.v1.Echo/Shout"] == Role.AUTHENTICATED_WRITE  # from the manifest: restored
        assert await code_of(echo.clients.echo().Say(echo_pb2.Ping())) == grpc.StatusCode.UNAUTHENTICATED
        assert await echo.node.auth.acl.remove("/echo.v1.Echo/Say")
        assert await code_of(echo.clients.echo().Say(echo_pb2.Ping())) == grpc.StatusCode.OK
    async with running(manifest, repo=str(tmp_path / "kept")) as echo:
        assert "/echo.v1.Echo/Say" not in echo.node.auth.acl.list()


async def test_http_paths_are_checked_with_the_same_tokens(echo_manifest: Path, tmp_path: Path) -> None:
    node = Node(prepare(load_manifest(echo_manifest), tmp_path))

    async def secret(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    node.http.router.add_get("/private/{name}", secret)
    node.http.router.add_get("/public", secret)
    async with node:
        harness = Harness(node, None)
        try:
            http = harness.http
            async with http.get("/private/x") as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert (await response.json())["code"] == 16
            async with http.get("/private/x", headers=harness.bearer("public_read")) as response:
                assert response.status == 403
                assert (await response.json())["code"] == 7
            async with http.get("/private/x?q=1", headers=harness.bearer("authenticated_read")) as response:
                assert response.status == 200
                assert await response.json() == {"path": "/private/x"}
            async with http.get("/public") as response:
                assert response.status == 200
            async with http.get("/public", headers={"Authorization": "Bearer nonsense"}) as response:
                assert response.status == 401
        finally:
            await harness.close()


async def test_several_credentials_are_refused_in_any_order_on_grpc(echo: Harness, echo_pb: Any) -> None:
    """A valid admin token beside a bad one must not win by coming first (it did)."""
    echo_pb2, _ = echo_pb
    good = ("authorization", f"Bearer {echo.token('admin', 'alice')}")
    bad = ("authorization", "Bearer garbage")
    for metadata in ((good, bad), (bad, good), (good, good)):
        call = echo.clients.echo().Shout(echo_pb2.Ping(text="hi"), metadata=metadata)
        assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        await code_of(echo.clients.echo().Shout(echo_pb2.Ping(text="hi"), metadata=(good,)))
        == grpc.StatusCode.OK
    )


async def test_several_credentials_are_refused_in_any_order_on_http_and_the_gateway(echo: Harness) -> None:
    good = ("Authorization", f"Bearer {echo.token('admin', 'alice')}")
    bad = ("Authorization", "Bearer garbage")
    for headers in ([good, bad], [bad, good]):
        for method, path in (("GET", "/v1/echo/hi"), ("GET", "/status")):
            async with echo.http.request(method, path, headers=headers) as response:
                assert response.status == 400
                body = await response.json()
                assert body["code"] == 16 and "one Authorization credential" in body["message"]
    async with echo.http.get("/v1/echo/hi", headers=[good]) as response:
        assert response.status == 200


# --------------------------------------------------------------------------- a ladder of the manifest's own

LADDER = """
  roles: [guest, user, editor, owner]
  acl:
    /echo.v1.Echo/Shout: editor
    /echo.v1.Admin/: owner
    /private/: user
    /status: none
"""


def with_ladder(echo_manifest: Path) -> Path:
    text = echo_manifest.read_text()
    start = text.index("  acl:\n")
    end = text.index("shutdown:")
    path = echo_manifest.with_name("ladder.yaml")
    path.write_text(text[:start] + LADDER.lstrip("\n") + text[end:])
    return path


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("guest", grpc.StatusCode.PERMISSION_DENIED),
        ("user", grpc.StatusCode.PERMISSION_DENIED),
        ("editor", grpc.StatusCode.OK),
        ("owner", grpc.StatusCode.OK),
    ],
)
async def test_a_ladder_of_the_manifests_own_orders_the_roles(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any, role: str | None, expected: grpc.StatusCode
) -> None:
    echo_pb2, _ = echo_pb
    async with running(prepare(load_manifest(with_ladder(echo_manifest)), tmp_path)) as echo:
        metadata = echo.metadata(role, "alice") if role else None
        call = echo.clients.echo().Shout(echo_pb2.Ping(text="hi"), metadata=metadata)
        assert await code_of(call) == expected


async def test_a_custom_ladder_refuses_roles_it_does_not_have(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, _ = echo_pb
    async with running(prepare(load_manifest(with_ladder(echo_manifest)), tmp_path)) as echo:
        auth = echo.node.auth
        assert list(auth.roles) == ["none", "guest", "user", "editor", "owner"]
        # the harness's default token holds the highest role of the ladder
        reply = await echo.clients.echo().Shout(echo_pb2.Ping(text="hi"), metadata=echo.metadata())
        assert reply.role == "owner"
        with pytest.raises(ValueError, match="unknown role 'edtor'; did you mean 'editor'"):
            auth.jwt.issue("alice", "edtor")
        with pytest.raises(ValueError, match="unknown role 'admin'"):  # the default ladder's, not this one's
            await auth.acl.allow("/x", "admin")
        # a token of the default ladder, signed with the same secret, names a role this node lacks
        default_ladder = auth.jwt.__class__(auth.settings.jwt)  # type: ignore[arg-type]
        foreign = (("authorization", f"Bearer {default_ladder.issue('alice', 'admin')}"),)
        say = echo.clients.echo().Say(echo_pb2.Ping(text="hi"), metadata=foreign)
        assert await code_of(say) == grpc.StatusCode.UNAUTHENTICATED
        async with echo.http.get("/private/x", headers=echo.bearer("guest")) as response:
            assert response.status == 403
            assert "role guest may not use /private/x (needs user)" in (await response.json())["message"]


async def test_a_run_time_entry_whose_role_left_the_ladder_fails_closed(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    echo_pb2, _ = echo_pb
    repo = str(tmp_path / "kept")
    async with running(prepare(load_manifest(with_ladder(echo_manifest)), tmp_path), repo=repo) as echo:
        await echo.node.auth.acl.allow("/echo.v1.Echo/Say", "editor")
    renamed = with_ladder(echo_manifest)
    renamed.write_text(renamed.read_text().replace("editor", "writer"))
    async with running(prepare(load_manifest(renamed), tmp_path), repo=repo) as echo:
        acl = echo.node.auth.acl.list()
        assert acl["/echo.v1.Echo/Shout"] == "writer"  # the manifest's entry, rewritten at start
        assert acl["/echo.v1.Echo/Say"] == "editor"  # run time's: kept, and out of reach
        assert "ACL entry /echo.v1.Echo/Say needs role 'editor'" in caplog.text
        say = echo.clients.echo().Say
        assert (
            await code_of(say(echo_pb2.Ping(), metadata=echo.metadata("owner")))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        shout = echo.clients.echo().Shout(echo_pb2.Ping(), metadata=echo.metadata("writer"))
        assert await code_of(shout) == grpc.StatusCode.OK
        assert await echo.node.auth.acl.remove("/echo.v1.Echo/Say")
        assert await code_of(say(echo_pb2.Ping())) == grpc.StatusCode.OK
