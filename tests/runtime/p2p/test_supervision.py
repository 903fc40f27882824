"""No failure of one p2p service takes the host down silently: a failed service is restarted with
backoff (the node unhealthy until it runs again); a failed host leaves the node unhealthy for good,
gRPC health NOT_SERVING and ``/status`` saying why. Real nodes on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import pytest
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from msuite.runtime.node import Node
from msuite.spec import GRPC, P2P, Manifest, TCPListener
from tests.helpers import eventually


def with_grpc(name: str, bootstrap: tuple[str, ...] = ()) -> Manifest:
    return Manifest(
        name=name,
        repo=":memory:",
        grpc=GRPC(tcp=TCPListener(port=0)),
        p2p=P2P(port=0, bootstrap=list(bootstrap)),
    )


@asynccontextmanager
async def health_of(node: Node) -> AsyncIterator[Any]:
    target = next(listener.target for listener in node.grpc.server.listeners if listener.kind == "tcp")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def check() -> Any:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
            return reply.status

        yield check


async def fail_inside(node: Node, nursery_of: Any, error: Exception) -> None:
    """Raise ``error`` in a task of the nursery ``nursery_of()`` returns (in the trio thread)."""

    async def boom() -> None:
        raise error

    async def start() -> None:
        nursery: trio.Nursery = nursery_of()
        nursery.start_soon(boom)

    await node.p2p.bridge.run(start)


async def test_a_service_that_fails_is_restarted_and_the_node_is_unhealthy_only_meanwhile() -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

    class Once:
        """Fails once, a moment after it started; runs for good the second time."""

        name = "once"
        runs = 0

        async def run(self, host: Any, bridge: Any, *, task_status: Any) -> None:
            self.runs += 1
            task_status.started()
            if self.runs == 1:
                await trio.sleep(0.3)
                raise RuntimeError("once broke")
            await trio.sleep_forever()

        def status(self) -> None:
            return None

    once = Once()
    node = Node(with_grpc("a"))
    node.p2p.add_service(once)
    changes: list[str | None] = []
    node.p2p.on_health(changes.append)
    async with node, health_of(node) as health:
        await eventually(lambda: bool(changes), 5)
        assert changes[0] == "p2p service once failed: RuntimeError: once broke (restarting)"
        assert await health() == not_serving
        await eventually(lambda: changes[-1] is None, 5)  # it runs again after the first backoff (0.5 s)
        assert once.runs == 2
        assert await health() == serving
        report = (await node.status.report())["p2p"]
        assert report["service_restarts"] == {"once": {"count": 1, "last_error": "RuntimeError: once broke"}}
        assert report["failed_services"] == {} and report["health"] is None and report["state"] == "running"
        assert changes == ["p2p service once failed: RuntimeError: once broke (restarting)", None]


async def test_a_failed_pubsub_leaves_the_node_unhealthy_and_saying_why_the_host_goes_on() -> None:
    async def echo(peer: str, request: bytes) -> bytes:
        return request

    async with Node(with_grpc("a")) as a, Node(with_grpc("b")) as b, health_of(a) as health:
        a.protocols.register("/test/echo/1", echo)
        await b.p2p.connect(a.p2p.addrs[0])
        await a.p2p.pubsub.subscribe("t", lambda message: asyncio.sleep(0))
        await fail_inside(a, lambda: a.p2p.pubsub._nursery, RuntimeError("pubsub broke"))
        await eventually(lambda: bool(a.p2p.failed), 5)
        why = "p2p service pubsub failed: RuntimeError: pubsub broke"  # not restarted in place
        assert a.p2p.health() == why
        await eventually(lambda: a.grpc.server.status()["health_problems"] == {"p2p": why}, 5)
        assert await health() == health_pb2.HealthCheckResponse.NOT_SERVING
        report = await a.status.report()
        assert report["p2p"]["failed_services"] == {"pubsub": "RuntimeError: pubsub broke"}
        assert report["p2p"]["health"] == why
        with pytest.raises(RuntimeError, match=f"pubsub is not running: {why}"):
            await a.p2p.pubsub.publish("t", b"x")
        await asyncio.sleep(1.0)
        assert a.p2p.failed == {"pubsub": "RuntimeError: pubsub broke"}  # for good
        # the host and its other services go on
        assert await b.protocols.send(a.p2p.peer_id, "/test/echo/1", b"still") == b"still"


async def test_a_failed_host_leaves_the_node_unhealthy_and_says_why() -> None:
    async with Node(with_grpc("doomed")) as node, health_of(node) as health:
        assert await health() == health_pb2.HealthCheckResponse.SERVING
        await fail_inside(node, lambda: node.p2p._nursery, ValueError("the host broke"))
        await eventually(lambda: node.p2p.state == "failed", 10)
        await eventually(lambda: node.grpc.server.status()["health_problems"] != {}, 5)
        assert await health() == health_pb2.HealthCheckResponse.NOT_SERVING
        report = await node.status.report()
        assert report["p2p"]["health"] == "the p2p host failed: ValueError: the host broke"
        assert report["p2p"]["failed_services"] == {"host": "ValueError: the host broke"}
        assert report["grpc"]["health_problems"] == {"p2p": "the p2p host failed: ValueError: the host broke"}
        with pytest.raises(RuntimeError, match="pubsub is not running: the p2p host failed: ValueError"):
            await node.p2p.pubsub.publish("t", b"x")
    assert node.p2p.state == "stopped"  # it still stops cleanly


async def test_a_service_that_keeps_failing_is_restarted_with_growing_delays() -> None:
    class Flaky:
        name = "flaky"

        def __init__(self) -> None:
            self.runs: list[float] = []

        async def run(self, host: Any, bridge: Any, *, task_status: Any) -> None:
            self.runs.append(trio.current_time())
            task_status.started()
            raise RuntimeError(f"run {len(self.runs)} failed")

        def status(self) -> None:
            return None

    flaky = Flaky()
    node = Node(Manifest(name="f", repo=":memory:", p2p=P2P(port=0)))
    node.p2p.add_service(flaky)
    async with node:
        await eventually(lambda: len(flaky.runs) >= 4, 10)
        gaps = [round(later - earlier, 1) for earlier, later in zip(flaky.runs, flaky.runs[1:], strict=False)]
        assert gaps[:3] == [0.5, 1.0, 2.0]
        # run 4 counts as running from its start until it raises: a loaded run looked in between
        await eventually(lambda: "p2p service flaky failed" in str(node.p2p.health()), 5)
        assert node.p2p.status()["service_restarts"]["flaky"]["count"] >= 3
        # the other services and the host go on
        assert node.p2p.state == "running"
        await node.p2p.pubsub.publish("t", b"still here")
