"""gRPC over TLS and mutual TLS on grpc.tcp: real servers, real grpc.aio clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.runtime.nodes import started

from .conftest import Pki, echo_over_tls, server_tls


def credentials(pki: Pki, *, cert: bool = False, stranger: bool = False) -> grpc.ChannelCredentials:
    if stranger:
        chain, key = pki.stranger_cert.read_bytes(), pki.stranger_key.read_bytes()
    elif cert:
        chain, key = pki.client_cert.read_bytes(), pki.client_key.read_bytes()
    else:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(), private_key=key, certificate_chain=chain
    )


async def say(target: str, echo_pb: Any, creds: grpc.ChannelCredentials | None, text: str) -> str:
    echo_pb2, echo_pb2_grpc = echo_pb
    channel = (
        grpc.aio.secure_channel(target, creds) if creds is not None else grpc.aio.insecure_channel(target)
    )
    async with channel:
        reply = await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(text=text), timeout=5)
    return str(reply.text)


async def test_a_tls_client_is_answered_and_listeners_say_tls(
    echo_manifest: Path, echo_pb: Any, pki: Pki, tmp_path: Path
) -> None:
    manifest = echo_over_tls(echo_manifest, server_tls(pki), unix=True)
    async with started(manifest, tmp_path / "node") as h:
        target = h.target("tcp")
        assert await say(target, echo_pb, credentials(pki), "hi") == "echo: hi"
        # the Unix socket stays plaintext
        assert await say(h.target("unix"), echo_pb, None, "unix") == "echo: unix"
        listeners = dict(h.node.listeners())
        assert listeners["grpc.tcp"].endswith(" (tls)")
        assert "(tls)" not in listeners["grpc.unix"]
        shown = {entry["kind"]: entry for entry in h.node.grpc.server.status()["listeners"]}
        assert shown["tcp"]["tls"] == "tls"
        assert "tls" not in shown["unix"]


async def test_a_plaintext_client_fails_and_the_node_keeps_serving(
    echo_manifest: Path, echo_pb: Any, pki: Pki, tmp_path: Path
) -> None:
    manifest = echo_over_tls(echo_manifest, server_tls(pki))
    async with started(manifest, tmp_path / "node") as h:
        target = h.target("tcp")
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await say(target, echo_pb, None, "plain")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await say(target, echo_pb, credentials(pki), "after") == "echo: after"


async def test_mtls_refuses_a_client_without_a_certificate_at_the_handshake(
    echo_manifest: Path, echo_pb: Any, pki: Pki, tmp_path: Path
) -> None:
    manifest = echo_over_tls(echo_manifest, server_tls(pki, mutual=True))
    async with started(manifest, tmp_path / "node") as h:
        target = h.target("tcp")
        for creds in (credentials(pki), credentials(pki, stranger=True)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await say(target, echo_pb, creds, "no")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        servicer = h.node.grpc.server.servicers["echo.v1.Echo"]
        assert servicer.finished == 0  # refused before any call reached the service
        assert await say(target, echo_pb, credentials(pki, cert=True), "yes") == "echo: yes"
        assert dict(h.node.listeners())["grpc.tcp"].endswith(" (mtls)")


async def test_the_gateway_and_own_clients_work_when_grpc_tcp_has_mtls(
    echo_manifest: Path, echo_pb: Any, pki: Pki, tmp_path: Path
) -> None:
    echo_pb2, _ = echo_pb
    manifest = echo_over_tls(echo_manifest, server_tls(pki, mutual=True))
    async with started(manifest, tmp_path / "node") as h:
        own = h.node.grpc.target("echo.v1.Echo")
        assert own.startswith("unix:") and own != h.target("tcp")
        async with h.http.get("/v1/echo/gw") as response:
            assert response.status == 200
            assert (await response.json())["text"] == "echo: gw"
        reply = await h.clients.echo().Say(echo_pb2.Ping(text="own"))
        assert reply.text == "echo: own"
        private = Path(own[len("unix:") :]).parent
        assert private.stat().st_mode & 0o077 == 0  # only this user may dial past mTLS
    assert not private.exists()  # removed at stop
