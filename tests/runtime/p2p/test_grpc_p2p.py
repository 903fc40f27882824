"""gRPC over libp2p: a service found by name on a peer, called through the piped stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from msuite.runtime.grpc.clients import ServiceNotFound
from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, prepare
from msuite.spec import Manifest, load_manifest
from tests.helpers import eventually

GRPC_SECTION = "grpc:\n  tcp: {port: 0}\n  unix: {path: echo.sock}\n"


def serving_over_p2p(echo_manifest: Path) -> Path:
    """The echo node with gRPC on libp2p only (no TCP, no Unix socket of its own)."""
    text = echo_manifest.read_text(encoding="utf-8")
    assert GRPC_SECTION in text
    text = text.replace(GRPC_SECTION, "grpc:\n  p2p: true\n") + "p2p: {port: 0}\n"
    path = echo_manifest.with_name("p2p-server.yaml")
    path.write_text(text, encoding="utf-8")
    return path


def caller(bootstrap: list[str]) -> Manifest:
    return Manifest.model_validate(
        {"name": "caller", "repo": ":memory:", "p2p": {"port": 0, "bootstrap": bootstrap}}
    )


@contextlib.asynccontextmanager
async def pair(echo_manifest: Path, folder: Path) -> AsyncIterator[tuple[Harness, Node]]:
    server = Node(prepare(load_manifest(serving_over_p2p(echo_manifest)), folder))
    async with server:
        harness = Harness(server, None)
        client = Node(caller(server.p2p.addrs))
        try:
            async with client:
                await client.p2p.find_service("echo.v1.Echo", timeout=5)
                yield harness, client
        finally:
            await harness.close()


async def test_a_service_is_called_over_libp2p_by_name(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    async with pair(echo_manifest, tmp_path) as (server, client):
        assert [kind for kind, _ in server.node.listeners()] == ["p2p", "http"]  # no TCP or Unix gRPC
        assert client.p2p.providers("echo.v1.Echo") == [server.node.p2p.peer_id]
        stub = echo_pb2_grpc.EchoStub(client.grpc.client("echo.v1.Echo"))
        metadata = server.metadata()
        pong = await stub.Say(echo_pb2.Ping(text="over p2p"), metadata=metadata)
        assert (pong.text, pong.subject) == ("echo: over p2p", "test")
        # streaming both ways, and many calls on the one connection
        replies = [p.seen async for p in stub.Repeat(echo_pb2.Ping(count=5), metadata=metadata)]
        assert replies == [0, 1, 2, 3, 4]
        chat = stub.Chat(metadata=metadata)
        for text in ("a", "b"):
            await chat.write(echo_pb2.Ping(text=text))
        await chat.done_writing()
        assert [p.text async for p in chat] == ["echo: a", "echo: b"]
        results = await asyncio.gather(
            *(stub.Say(echo_pb2.Ping(text=str(i)), metadata=metadata) for i in range(50))
        )
        assert [r.text for r in results] == [f"echo: {i}" for i in range(50)]
        # the server's interceptors see p2p calls like any other: the ACL refuses a missing token
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await echo_pb2_grpc.AdminStub(client.grpc.client("echo.v1.Admin")).Reset(echo_pb2.Ping())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        big = "x" * (1 << 20)
        assert (await stub.Say(echo_pb2.Ping(text=big), metadata=metadata)).text == "echo: " + big
        # the generated Clients work unchanged: node.grpc is their channel source
        from msuite.runtime.loading import import_from

        wiring = import_from(echo_manifest.parent, "gen.wiring")
        echo_stub = wiring.Clients(client.grpc).echo()
        assert (await echo_stub.Say(echo_pb2.Ping(text="typed"), metadata=metadata)).text == "echo: typed"
        report = await client.status.report()
        assert report["p2p"]["peer_services"] == {server.node.p2p.peer_id: ["echo.v1.Admin", "echo.v1.Echo"]}


async def test_an_unknown_service_names_the_p2p_peers_tried(echo_manifest: Path, tmp_path: Path) -> None:
    async with pair(echo_manifest, tmp_path) as (_, client):
        with pytest.raises(ServiceNotFound, match="connected p2p peers"):
            client.grpc.client("nobody.v1.Serves")
        with pytest.raises(TimeoutError, match=r"nobody\.v1\.Serves"):
            await client.p2p.find_service("nobody.v1.Serves", timeout=0.2)


async def test_a_provider_that_leaves_is_no_longer_offered(echo_manifest: Path, tmp_path: Path) -> None:
    server = Node(prepare(load_manifest(serving_over_p2p(echo_manifest)), tmp_path))
    await server.start()
    try:
        async with Node(caller(server.p2p.addrs)) as client:
            await client.p2p.find_service("echo.v1.Echo", timeout=5)
            await server.stop()
            await eventually(lambda: not client.p2p.providers("echo.v1.Echo"))
            assert client.p2p.providers("echo.v1.Echo") == []
            with pytest.raises(ServiceNotFound):
                client.grpc.client("echo.v1.Echo")
    finally:
        await server.stop()


def open_sockets() -> int:
    """Sockets this process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def test_deadlines_cancels_and_a_lost_peer_leave_the_pipe_sound(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    # a first round creates what a process keeps once gRPC and libp2p have run (gRPC's poller
    # wake-up pair, the event loop's); what is open after it must be all that stays open
    async with pair(echo_manifest, tmp_path / "warm") as (server, client):
        stub = echo_pb2_grpc.EchoStub(client.grpc.client("echo.v1.Echo"))
        assert (await stub.Say(echo_pb2.Ping(text="warm"), metadata=server.metadata())).text == "echo: warm"
    before = open_sockets()
    async with pair(echo_manifest, tmp_path) as (server, client):
        metadata = server.metadata()
        stub = echo_pb2_grpc.EchoStub(client.grpc.client("echo.v1.Echo"))
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.Say(echo_pb2.Ping(text="slow", action="sleep:2"), metadata=metadata, timeout=0.2)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        call = stub.Say(echo_pb2.Ping(text="dropped", action="sleep:2"), metadata=metadata)
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # the connection through the pipe still carries calls
        assert (await stub.Say(echo_pb2.Ping(text="after"), metadata=metadata)).text == "echo: after"

        # a new channel (a new libp2p stream) works while the first is in use
        other = grpc.aio.insecure_channel(client.grpc.target("echo.v1.Echo"))
        try:
            pong = await echo_pb2_grpc.EchoStub(other).Say(echo_pb2.Ping(text="second"), metadata=metadata)
            assert pong.text == "echo: second"
        finally:
            await other.close()

        # the serving node goes away mid-call: the caller gets UNAVAILABLE, not a hang
        pending = asyncio.ensure_future(
            stub.Say(echo_pb2.Ping(text="cut", action="sleep:5"), metadata=metadata, timeout=20)
        )
        await asyncio.sleep(0.2)
        await server.node.stop()
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await asyncio.wait_for(pending, 10)
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    # every socket the pipes opened is closed again
    await eventually(lambda: open_sockets() <= before)
    assert open_sockets() <= before


async def test_a_draining_node_withdraws_its_services_from_peers_first(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    async with pair(echo_manifest, tmp_path) as (server, client):
        served = server.node.component("grpc_p2p")
        assert served.status()["state"] == "serving"
        await served.draining()  # what stop does first, before any server stops
        await eventually(lambda: client.p2p.providers("echo.v1.Echo") == [])
        assert [peer["id"] for peer in client.p2p.peers()] == [server.node.p2p.peer_id]  # still connected
        with pytest.raises(ServiceNotFound):
            client.grpc.client("echo.v1.Echo")
        # the gRPC server itself still answers on its own listeners until it stops
        async with grpc.aio.insecure_channel(server.node.grpc.server.local_target) as channel:
            pong = await echo_pb2_grpc.EchoStub(channel).Say(
                echo_pb2.Ping(text="x"), metadata=server.metadata()
            )
        assert pong.text == "echo: x"


def test_a_late_or_older_services_list_is_ignored() -> None:
    from msuite.runtime.p2p.mesher import Mesher

    mesher = Mesher()
    assert mesher.is_newest("peer", 10, 0)
    assert mesher.is_newest("peer", 10, 2)
    assert not mesher.is_newest("peer", 10, 1)  # sent before rev 2, arrived after it
    assert mesher.is_newest("peer", 10, 2)  # the same list again (a hello after an update)
    assert mesher.is_newest("peer", 11, 0)  # the peer restarted: a later epoch, its count begins again
    assert not mesher.is_newest("peer", 10, 5)  # a late list of the process before the restart
    assert mesher.is_newest("other", None, "junk")  # no stamp: (0, 0), a peer's first list is taken
    assert not mesher.is_newest("peer", -3, 99)  # nonsense counts as 0
