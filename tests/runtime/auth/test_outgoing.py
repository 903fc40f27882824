"""``auth.outgoing``: a node's own calls to other nodes' protected services carry its credential."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest

from msuite.runtime.auth.outgoing import Credential
from msuite.runtime.node import Node
from msuite.runtime.testing import running
from msuite.spec import Manifest, Outgoing, loads_manifest

SECRET = "an-echo-test-secret-of-at-least-32-bytes"  # the echo project's default


def caller(target: str, outgoing: dict[str, Any] | None, secret: str = SECRET) -> Manifest:
    auth: dict[str, Any] = {"jwt": {"secret": secret}}
    if outgoing is not None:
        auth["outgoing"] = outgoing
    return Manifest.model_validate(
        {
            "name": "billing",
            "repo": ":memory:",
            "auth": auth,
            "discovery": {"static": {"echo.v1.Echo": target, "echo.v1.Admin": target}},
        }
    )


async def test_a_minted_token_reaches_protected_services_over_tcp_and_unix(
    echo_manifest: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    async with running(echo_manifest) as server:
        for kind in ("tcp", "unix"):
            async with Node(caller(server.target(kind), {"role": "admin", "ttl": "1m"})) as node:
                pong = await echo_pb2_grpc.EchoStub(node.grpc.client("echo.v1.Echo")).Shout(
                    echo_pb2.Ping(text="hi")
                )
                assert (pong.subject, pong.role) == ("billing", "admin")  # the node, as itself
                reset = await echo_pb2_grpc.AdminStub(node.grpc.client("echo.v1.Admin")).Reset(
                    echo_pb2.Ping()
                )
                assert reset.text == "reset"
                # a caller's own token, passed on explicitly, is kept (and its role decides)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await echo_pb2_grpc.AdminStub(node.grpc.client("echo.v1.Admin")).Reset(
                        echo_pb2.Ping(), metadata=server.metadata("authenticated_write", "a user")
                    )
                assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_without_a_credential_or_with_a_lower_role_the_call_is_refused(
    echo_manifest: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    async with running(echo_manifest) as server:
        async with Node(caller(server.target("tcp"), None)) as node:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await echo_pb2_grpc.EchoStub(node.grpc.client("echo.v1.Echo")).Shout(echo_pb2.Ping())
            assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        low = caller(server.target("tcp"), {"role": "authenticated_write"})
        async with Node(low) as node:
            await echo_pb2_grpc.EchoStub(node.grpc.client("echo.v1.Echo")).Shout(echo_pb2.Ping())
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await echo_pb2_grpc.AdminStub(node.grpc.client("echo.v1.Admin")).Reset(echo_pb2.Ping())
            assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # a key the server does not know: its tokens are refused, not trusted
        other = caller(
            server.target("tcp"), {"role": "admin"}, secret="another-secret-of-at-least-32-bytes!!"
        )
        async with Node(other) as node:
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await echo_pb2_grpc.EchoStub(node.grpc.client("echo.v1.Echo")).Shout(echo_pb2.Ping())
            assert unknown.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_fixed_token_from_the_environment(
    echo_manifest: Path, echo_pb: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    async with running(echo_manifest) as server:
        monkeypatch.setenv("BILLING_TOKEN", server.token("admin", "ops-robot"))
        text = (
            "name: billing\nrepo: ':memory:'\nauth:\n  outgoing: {token: \"${BILLING_TOKEN}\"}\n"
            f"discovery:\n  static: {{echo.v1.Echo: '{server.target('tcp')}'}}\n"
        )
        manifest = loads_manifest(text, file="billing.yaml", base_dir=tmp_path)
        assert "BILLING_TOKEN" not in repr(manifest.auth) and server.token("admin", "ops-robot") not in repr(
            manifest.auth
        )
        async with Node(manifest) as node:
            pong = await echo_pb2_grpc.EchoStub(node.grpc.client("echo.v1.Echo")).Shout(echo_pb2.Ping())
            assert (pong.subject, pong.role) == ("ops-robot", "admin")


async def test_the_gateway_never_lends_the_nodes_credential_to_http_callers(echo_manifest: Path) -> None:
    text = echo_manifest.read_text().replace("auth:\n", "auth:\n  outgoing: {role: admin}\n", 1)
    path = echo_manifest.with_name("outgoing.yaml")
    path.write_text(text)
    async with running(path) as server:
        address = server.node.http.address
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{address}/v1/shout", json={"text": "x"}) as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {server.token('authenticated_write', 'someone')}"}
            async with http.post(f"{address}/v1/shout", json={"text": "x"}, headers=headers) as response:
                assert response.status == 200 and (await response.json())["subject"] == "someone"


def test_a_minted_token_is_renewed_when_two_thirds_of_its_life_are_gone() -> None:
    issued: list[tuple[str, str, float]] = []

    class Jwt:
        def issue(self, subject: str, role: str, *, ttl: float) -> str:
            issued.append((subject, role, ttl))
            return f"token-{len(issued)}"

    now = [1000.0]
    credential = Credential(
        Outgoing(role="admin", ttl=timedelta(minutes=3)),
        "billing",
        Jwt,
        clock=lambda: now[0],  # type: ignore[arg-type,return-value]
    )
    assert credential.header() == "Bearer token-1"
    now[0] += 119
    assert credential.header() == "Bearer token-1"
    now[0] += 1  # 120 s of 180: renewed
    assert credential.header() == "Bearer token-2"
    assert issued == [("billing", "admin", 180.0)] * 2 and credential.minted == 2
    assert "token" not in repr(Credential(Outgoing(token="s3cret"), "b", Jwt))  # type: ignore[arg-type,return-value]
    assert Credential(Outgoing(token="s3cret"), "b", Jwt).header() == "Bearer s3cret"  # type: ignore[arg-type,return-value]


async def test_the_credential_goes_over_libp2p_too(echo_manifest: Path, echo_pb: Any, tmp_path: Path) -> None:
    from msuite.runtime.testing import prepare
    from msuite.spec import load_manifest
    from tests.runtime.p2p.test_grpc_p2p import serving_over_p2p

    echo_pb2, echo_pb2_grpc = echo_pb
    async with Node(prepare(load_manifest(serving_over_p2p(echo_manifest)), tmp_path)) as server:
        manifest = Manifest.model_validate(
            {
                "name": "billing",
                "repo": ":memory:",
                "p2p": {"port": 0, "bootstrap": server.p2p.addrs},
                "auth": {"jwt": {"secret": SECRET}, "outgoing": {"role": "admin"}},
            }
        )
        async with Node(manifest) as node:
            await node.p2p.find_service("echo.v1.Admin", timeout=5)
            reset = await echo_pb2_grpc.AdminStub(node.grpc.client("echo.v1.Admin")).Reset(echo_pb2.Ping())
            assert reset.text == "reset"
            pong = await echo_pb2_grpc.EchoStub(node.grpc.client("echo.v1.Echo")).Shout(echo_pb2.Ping())
            assert (pong.subject, pong.role) == ("billing", "admin")


@pytest.mark.parametrize(
    ("outgoing", "jwt", "where", "message"),
    [
        ("{role: admin, token: t}", True, (4, 13, "auth.outgoing"), "exactly one of role"),
        ("{ttl: 5m}", True, (4, 13, "auth.outgoing"), "exactly one of role"),
        ("{role: boss}", True, (4, 20, "auth.outgoing.role"), "the ladder is auth.roles"),
        ("{role: admin}", False, (3, 20, "auth.outgoing.role"), "needs a signing key in auth.jwt"),
        ("{role: admin, ttl: 2s}", True, (4, 32, "auth.outgoing.ttl"), "at least 10s"),
    ],
)
def test_validate_locates_outgoing_problems(
    tmp_path: Path, outgoing: str, jwt: bool, where: tuple[int, int, str], message: str
) -> None:
    from msuite.spec import ManifestError, check_manifest

    keys = f"  jwt: {{secret: {SECRET}}}\n" if jwt else ""
    text = f"name: billing\nauth:\n{keys}  outgoing: {outgoing}\n"
    try:
        found = check_manifest(loads_manifest(text, file="m.yaml", base_dir=tmp_path))
    except ManifestError as exc:
        found = exc.diagnostics
    assert [(d.line, d.column, d.path) for d in found] == [where], found
    assert message in found[0].message
