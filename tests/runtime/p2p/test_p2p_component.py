"""The recipe of docs/architecture.md: a subsystem on the libp2p host is one component and one table line.

A toy "ping" subsystem, written the way events and file sharing will be: a
p2p service (trio side: a stream handler), a component requiring ``p2p``
that adds the service at build and crosses to trio through the bridge, and
an accessor (``node.ping``). Two real nodes on 127.0.0.1 use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio

from msuite.runtime.components import BuildContext, ComponentSpec, FrozenError
from msuite.runtime.errors import NotConfigured
from msuite.runtime.node import Node
from msuite.runtime.p2p.bridge import Bridge
from msuite.runtime.p2p.host import P2PHost
from msuite.runtime.registry import COMPONENTS
from msuite.spec import Manifest
from tests.helpers import eventually

PROTOCOL = "/test/ping/1.0.0"


class PingService:
    """Trio side: answers each stream with ``pong:`` and what it read."""

    name = "ping"

    def __init__(self) -> None:
        self.host: Any = None
        self.answered = 0

    async def run(self, host: Any, bridge: Bridge, *, task_status: Any) -> None:
        from libp2p.custom_types import TProtocol

        async def answer(stream: Any) -> None:
            data = await stream.read(64)
            await stream.write(b"pong:" + data)
            await stream.close()
            self.answered += 1

        self.host = host
        host.set_stream_handler(TProtocol(PROTOCOL), answer)
        task_status.started()
        await trio.sleep_forever()

    def status(self) -> dict[str, int]:
        return {"answered": self.answered}

    async def ask(self, peer_id: str, text: bytes) -> bytes:  # trio side
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        stream = await self.host.new_stream(ID.from_base58(peer_id), [TProtocol(PROTOCOL)])
        await stream.write(text)
        reply: bytes = await stream.read(64)
        await stream.close()
        return reply


class Ping:
    """Component ``ping`` (``node.ping``): asks a peer over the toy protocol."""

    name = "ping"
    requires: tuple[str, ...] = ("p2p",)

    def __init__(self, host: P2PHost) -> None:
        self.host = host
        self.service = PingService()
        host.add_service(self.service)  # at build, before the host starts

    async def ask(self, peer_id: str, text: bytes) -> bytes:
        return await self.host.bridge.run(self.service.ask, peer_id, text)

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        return None

    def status(self) -> dict[str, int]:
        return self.service.status()


def _build(context: BuildContext) -> Ping:
    return Ping(context.require("p2p", P2PHost))


def _ping(component: Ping, built: Mapping[str, Any]) -> Ping:
    return component


PING = ComponentSpec(
    "ping",
    _build,
    enabled=lambda m: m.p2p is not None,
    key=("p2p",),
    requires=("p2p",),
    accessors={"ping": _ping},
)
TABLE = (*COMPONENTS, PING)


def manifest(name: str, bootstrap: tuple[str, ...] = ()) -> Manifest:
    return Manifest.model_validate(
        {"name": name, "repo": ":memory:", "p2p": {"port": 0, "bootstrap": list(bootstrap)}}
    )


async def test_a_subsystem_on_the_host_is_one_component_and_one_table_line() -> None:
    async with (
        Node(manifest("a"), components=TABLE) as a,
        Node(manifest("b", (a.p2p.addrs[0],)), components=TABLE) as b,
    ):
        await eventually(lambda: a.p2p.peers() and b.p2p.peers())
        assert a.components[-1] == "ping" and a.p2p.services[-1] == "ping"
        assert await b.ping.ask(a.p2p.peer_id, b"hi") == b"pong:hi"
        # a counts once its answer is closed, which b does not wait for (a loaded run read 0)
        await eventually(lambda: a.ping.status() == {"answered": 1})
        assert (await a.status.report())["ping"] == {"answered": 1}
        with pytest.raises(FrozenError, match="p2p service 'late' added after the host started"):
            a.p2p.add_service(type("Late", (PingService,), {"name": "late"})())


def test_the_accessor_of_a_subsystem_the_manifest_leaves_out_names_its_key() -> None:
    node = Node(Manifest(name="bare", repo=":memory:"), components=TABLE)
    with pytest.raises(NotConfigured, match=r"node\.ping is not configured: add `p2p` to the manifest"):
        node.ping  # noqa: B018


class Crashing(PingService):
    """Serves, then fails on its own (a bug in a service, after it started)."""

    name = "crashing"

    async def run(self, host: Any, bridge: Bridge, *, task_status: Any) -> None:
        task_status.started()
        await trio.sleep(0.05)
        raise RuntimeError("service bug")


class Early(PingService):
    name = "early"

    async def run(self, host: Any, bridge: Bridge, *, task_status: Any) -> None:
        raise RuntimeError("cannot start")


async def test_a_service_failing_after_it_started_leaves_the_host_and_the_others_serving() -> None:
    node = Node(manifest("c"), components=TABLE)
    node.p2p.add_service(Crashing())
    async with node:
        await eventually(lambda: node.p2p.failed)
        assert node.p2p.failed == {"crashing": "RuntimeError: service bug"}
        assert (await node.status.report())["p2p"]["failed_services"] == node.p2p.failed
        async with Node(manifest("d", (node.p2p.addrs[0],)), components=TABLE) as d:
            await eventually(d.p2p.peers)  # the host still accepts connections
            assert await d.ping.ask(node.p2p.peer_id, b"still") == b"pong:still"
        assert node.state == "running"


async def test_a_service_failing_before_it_started_fails_the_start() -> None:
    from msuite.runtime.errors import StartError

    node = Node(manifest("e"), components=TABLE)
    node.p2p.add_service(Early())
    with pytest.raises(StartError, match="p2p: cannot start"):
        await node.start()
    assert node.state == "failed"


def test_a_factory_reaching_for_the_node_during_build_is_told_how_to_declare_it() -> None:
    from msuite.runtime.components import ComponentError

    def build(context: BuildContext) -> Ping:
        context.node.tasks  # noqa: B018  (the node is being built)
        raise AssertionError("unreachable")

    table = (*COMPONENTS, ComponentSpec("reentrant", build))
    node = Node(Manifest(name="re", repo=":memory:"), components=table)
    with pytest.raises(ComponentError, match=r"used the node while it is being built.*context\.require"):
        node.build()
