"""Clients by name over TLS: ``discovery.tls`` applies to the static ``host:port`` addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from msuite.runtime.node import Node
from msuite.spec import Discovery, Manifest
from msuite.spec.models import ClientTLS
from tests.runtime.nodes import started

from .conftest import Pki, echo_over_tls, server_tls


def caller(target: str, tls: ClientTLS | None, unix: str | None = None) -> Manifest:
    static = {"echo.v1.Echo": target}
    if unix is not None:
        static["echo.v1.Admin"] = unix
    return Manifest(name="caller", repo=":memory:", discovery=Discovery(static=static, tls=tls))


async def say(node: Node, echo_pb: Any, text: str, service: str = "echo.v1.Echo") -> str:
    echo_pb2, echo_pb2_grpc = echo_pb
    reply = await echo_pb2_grpc.EchoStub(node.grpc.client(service)).Say(echo_pb2.Ping(text=text), timeout=5)
    return str(reply.text)


async def test_a_client_by_name_dials_a_mtls_server_with_its_certificate(
    echo_manifest: Path, echo_pb: Any, pki: Pki, tmp_path: Path
) -> None:
    server = echo_over_tls(echo_manifest, server_tls(pki, mutual=True), unix=True, http=False)
    async with started(server, tmp_path / "server") as h:
        tls = ClientTLS(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
        # a Unix address of the same list stays plaintext
        async with Node(caller(h.target("tcp"), tls, unix=h.target("unix"))) as node:
            assert await say(node, echo_pb, "by name") == "echo: by name"
            assert node.component("clients").status()["tls"] == [h.target("tcp")]
            admin = node.grpc.client("echo.v1.Admin")
            echo_pb2, echo_pb2_grpc = echo_pb
            reply = await echo_pb2_grpc.EchoStub(admin).Say(echo_pb2.Ping(text="unix"), timeout=5)
            assert reply.text == "echo: unix"


async def test_without_its_certificate_the_mtls_server_refuses_the_client(
    echo_manifest: Path, echo_pb: Any, pki: Pki, tmp_path: Path
) -> None:
    server = echo_over_tls(echo_manifest, server_tls(pki, mutual=True), http=False)
    async with started(server, tmp_path / "server") as h:
        async with Node(caller(h.target("tcp"), ClientTLS(ca=str(pki.ca)))) as node:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await say(node, echo_pb, "no cert")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with Node(caller(h.target("tcp"), None)) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await say(plain, echo_pb, "plaintext")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
