"""Clients by service name: static addresses (TCP and Unix sockets), then the node's own services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msuite.runtime.grpc.clients import ServiceNotFound
from msuite.runtime.node import Node
from msuite.runtime.testing import running
from msuite.spec import Discovery, Manifest


async def test_two_clients_reach_a_server_by_static_unix_socket_and_tcp(
    echo_manifest: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb

    async with running(echo_manifest) as server:
        for kind in ("unix", "tcp"):
            address = server.target(kind)
            caller = Manifest(
                name=f"caller-{kind}",
                repo=":memory:",
                discovery=Discovery(static={"echo.v1.Echo": address}),
            )
            async with Node(caller) as node:
                stub = echo_pb2_grpc.EchoStub(node.grpc.client("echo.v1.Echo"))
                assert (await stub.Say(echo_pb2.Ping(text=kind))).text == f"echo: {kind}"
                assert node.grpc.client("echo.v1.Echo") is node.grpc.client("echo.v1.Echo")


async def test_a_node_reaches_its_own_services(echo_manifest: Path, echo_pb: Any) -> None:
    echo_pb2, _ = echo_pb

    async with running(echo_manifest) as server:
        reply = await server.clients.echo().Say(echo_pb2.Ping(text="me"))
        assert reply.text == "echo: me"


async def test_an_unknown_name_raises_naming_what_was_tried() -> None:
    manifest = Manifest(name="lost", repo=":memory:", discovery=Discovery(static={"a.v1.A": "127.0.0.1:1"}))
    async with Node(manifest) as node:
        with pytest.raises(ServiceNotFound) as caught:
            node.grpc.client("b.v1.B")
    assert str(caught.value) == (
        "no address for service 'b.v1.B': tried discovery.static (a.v1.A); this node's services (none)"
    )


async def test_relative_unix_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    from msuite.runtime.grpc.clients import target_of

    assert target_of("unix:sock/a.sock", tmp_path) == f"unix:{tmp_path}/sock/a.sock"
    assert target_of("unix:/abs.sock", tmp_path) == "unix:/abs.sock"
    assert target_of("unix-abstract:name", tmp_path) == "unix-abstract:name"
    assert target_of("[::1]:50051", tmp_path) == "[::1]:50051"
