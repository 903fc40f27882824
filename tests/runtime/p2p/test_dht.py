"""The DHT: the services a node serves over libp2p are advertised and found by name."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from msuite.runtime.node import Node
from msuite.runtime.testing import prepare
from msuite.spec import Manifest, load_manifest
from tests.runtime.p2p.test_grpc_p2p import serving_over_p2p


def dht_node(name: str, bootstrap: list[str]) -> Manifest:
    return Manifest.model_validate(
        {
            "name": name,
            "repo": ":memory:",
            "p2p": {"port": 0, "bootstrap": bootstrap},
            "discovery": {"dht": True},
        }
    )


async def test_served_services_are_advertised_and_found_in_the_dht(
    echo_manifest: Path, tmp_path: Path
) -> None:
    path = serving_over_p2p(echo_manifest)
    path.write_text(path.read_text() + "discovery: {dht: true}\n")
    server = Node(prepare(load_manifest(path), tmp_path))
    async with (
        server,
        Node(dht_node("b", server.p2p.addrs)) as b,
        Node(dht_node("c", server.p2p.addrs)) as c,
    ):
        began = time.monotonic()
        while len(server.p2p.peers()) < 2 or (await server.status.report())["p2p"]["dht"]["rounds"] < 1:
            assert time.monotonic() - began < 10, "not advertised within 10 s"
            await asyncio.sleep(0.05)
        report = (await server.status.report())["p2p"]["dht"]
        assert report["advertised"] == ["echo.v1.Echo", "echo.v1.Admin"]
        assert report["routing_table"] >= 2
        found = await c.p2p.find_providers("echo.v1.Echo", timeout=5)
        assert [address.rsplit("/p2p/", 1)[1] for address in found] == [server.p2p.peer_id]
        assert found[0].startswith("/ip4/127.0.0.1/tcp/")
        began = time.monotonic()
        assert await b.p2p.find_providers("nobody.v1.Serves", timeout=2) == []
        assert time.monotonic() - began < 5  # bounded, whatever the DHT does
        assert await c.p2p.find_service("echo.v1.Echo", timeout=5) == server.p2p.peer_id


async def test_a_peer_connecting_during_a_round_wakes_another(echo_manifest: Path, tmp_path: Path) -> None:
    path = serving_over_p2p(echo_manifest)
    path.write_text(path.read_text() + "discovery: {dht: true}\n")
    server = Node(prepare(load_manifest(path), tmp_path))
    # the first round runs at start (a 1 s pause, then the records): the peer connects inside it
    async with server, Node(dht_node("late", server.p2p.addrs)) as late:
        await late.p2p.find_service("echo.v1.Echo", timeout=5)
        began = time.monotonic()
        while (await server.status.report())["p2p"]["dht"]["rounds"] < 2:
            # without the wake-up the next round would come 10 minutes later
            assert time.monotonic() - began < 5, "the connection did not wake another round"
            await asyncio.sleep(0.05)


async def test_only_peers_that_speak_the_dht_join_its_routing_table() -> None:
    """Every connected peer was added, also peers without a DHT, and each round then logged
    py-libp2p's warnings about them."""
    async with Node(dht_node("a", [])) as a:
        plain = Manifest.model_validate(
            {"name": "plain", "repo": ":memory:", "p2p": {"port": 0, "bootstrap": list(a.p2p.addrs)}}
        )
        async with Node(plain), Node(dht_node("b", list(a.p2p.addrs))):
            began = time.monotonic()
            while True:
                report = (await a.status.report())["p2p"]["dht"]
                if report["skipped_peers"] == 1 and report["routing_table"] == 1:
                    break
                assert time.monotonic() - began < 10, report
                await asyncio.sleep(0.05)
