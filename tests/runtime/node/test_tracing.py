"""Tracing: the spans jaeger-client really sends (thrift over UDP), decoded by a loopback agent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from jaeger_client.thrift_gen.agent import Agent
from thrift.protocol import TCompactProtocol
from thrift.transport import TTransport

from msuite.runtime.errors import NotConfigured
from msuite.runtime.node import Node
from msuite.runtime.testing import prepare
from msuite.spec import Manifest, load_manifest
from tests.runtime.nodes import started


@dataclass
class Span:
    service: str
    name: str
    trace: int
    span: int
    parent: int
    tags: dict[str, Any]


class Agent_(asyncio.DatagramProtocol):
    """A Jaeger agent stand-in on 127.0.0.1: decodes each emitBatch datagram."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.errors: list[str] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        protocol = TCompactProtocol.TCompactProtocol(TTransport.TMemoryBuffer(data))
        try:
            name, _, _ = protocol.readMessageBegin()
            assert name == "emitBatch", name
            args = Agent.emitBatch_args()
            args.read(protocol)
        except Exception as exc:  # recorded: the test fails on it
            self.errors.append(repr(exc))
            return
        service = args.batch.process.serviceName
        for s in args.batch.spans:
            tags = {}
            for tag in s.tags or ():
                tags[tag.key] = next(
                    v for v in (tag.vStr, tag.vBool, tag.vLong, tag.vDouble) if v is not None
                )
            self.spans.append(Span(service, s.operationName, s.traceIdLow, s.spanId, s.parentSpanId, tags))
        self.arrived.set()

    def named(self, name: str) -> Span:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]


@pytest.fixture
async def agent() -> AsyncIterator[tuple[Agent_, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Agent_, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    yield protocol, port
    transport.close()
    assert protocol.errors == []


def traced(echo_manifest: Path, port: int, ratio: float = 1.0, **update: Any) -> Manifest:
    manifest = load_manifest(echo_manifest)
    settings = {"tracing": {"jaeger": f"127.0.0.1:{port}", "sample_ratio": ratio}}
    diagnostics = type(manifest.diagnostics).model_validate(settings)
    return manifest.model_copy(update={"diagnostics": diagnostics, **update})


async def test_a_gateway_call_is_one_trace_http_client_server(
    echo_manifest: Path, tmp_path: Path, agent: tuple[Agent_, int]
) -> None:
    collector, port = agent
    async with (
        started(traced(echo_manifest, port), tmp_path) as harness,
        harness.http.get("/v1/echo/hi", headers=harness.bearer()) as response,
    ):
        assert response.status == 200
    # the node flushed its spans on stop
    http = collector.named("GET /v1/echo/{text}")
    client = next(
        s for s in collector.spans if s.name == "/echo.v1.Echo/Say" and s.tags["span.kind"] == "client"
    )
    server = next(
        s for s in collector.spans if s.name == "/echo.v1.Echo/Say" and s.tags["span.kind"] == "server"
    )
    assert {s.service for s in (http, client, server)} == {"echo"}
    assert http.trace == client.trace == server.trace
    assert http.parent == 0
    assert client.parent == http.span
    assert server.parent == client.span
    assert http.tags["http.status_code"] == 200
    assert http.tags["http.url"] == "/v1/echo/hi"
    assert server.tags["grpc.status_code"] == "OK"
    assert client.tags["grpc.status_code"] == "OK"
    assert "error" not in server.tags


async def test_a_call_across_two_nodes_is_one_trace(
    echo_manifest: Path, tmp_path: Path, agent: tuple[Agent_, int], echo_pb: Any
) -> None:
    collector, port = agent
    echo_pb2, echo_pb2_grpc = echo_pb

    class Relay(echo_pb2_grpc.EchoServicer):  # type: ignore[misc, name-defined]
        node: Node

        async def Say(self, request: Any, context: Any) -> Any:
            stub = echo_pb2_grpc.EchoStub(self.node.grpc.client("echo.v1.Echo"))
            metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
            return await stub.Say(request, metadata=metadata)

    relay = Relay()
    async with started(traced(echo_manifest, port, name="back"), tmp_path / "a") as back:
        front_manifest = traced(
            echo_manifest,
            port,
            name="front",
            discovery=type(load_manifest(echo_manifest).discovery).model_validate(
                {"static": {"echo.v1.Echo": back.node.grpc.server.local_target}}
            ),
        )
        async with started(front_manifest, tmp_path / "b", servicers={"echo.v1.Echo": relay}) as front:
            relay.node = front.node
            async with grpc.aio.insecure_channel(front.node.grpc.server.local_target) as channel:
                pong = await echo_pb2_grpc.EchoStub(channel).Say(
                    echo_pb2.Ping(text="x"), metadata=front.metadata()
                )
            assert pong.text == "echo: x"
    spans = [s for s in collector.spans if s.name == "/echo.v1.Echo/Say"]
    front_server = next(s for s in spans if s.service == "front" and s.tags["span.kind"] == "server")
    front_client = next(s for s in spans if s.service == "front" and s.tags["span.kind"] == "client")
    back_server = next(s for s in spans if s.service == "back" and s.tags["span.kind"] == "server")
    assert front_server.trace == front_client.trace == back_server.trace
    assert front_server.parent == 0
    assert front_client.parent == front_server.span
    assert back_server.parent == front_client.span


async def test_an_incoming_trace_is_continued_and_errors_are_tagged(
    echo_manifest: Path, tmp_path: Path, agent: tuple[Agent_, int], echo_pb: Any
) -> None:
    collector, port = agent
    echo_pb2, echo_pb2_grpc = echo_pb
    async with (
        started(traced(echo_manifest, port), tmp_path) as harness,
        grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel,
    ):
        stub = echo_pb2_grpc.EchoStub(channel)
        header = (("uber-trace-id", "00000000000004d2:000000000000162e:0:1"),)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Say(echo_pb2.Ping(action="abort:NOT_FOUND"), metadata=harness.metadata() + header)
        # a malformed header: a new trace, and the call is served
        bad = (("uber-trace-id", "not-a-trace"),)
        assert (await stub.Shout(echo_pb2.Ping(text="a"), metadata=harness.metadata() + bad)).text
    failed = collector.named("/echo.v1.Echo/Say")
    assert (failed.trace, failed.parent) == (0x4D2, 0x162E)
    assert failed.tags["error"] is True
    assert failed.tags["grpc.status_code"] == "NOT_FOUND"
    fresh = collector.named("/echo.v1.Echo/Shout")
    assert fresh.parent == 0 and fresh.trace not in (0, 0x4D2)


async def test_handlers_see_the_active_span(
    echo_manifest: Path, tmp_path: Path, agent: tuple[Agent_, int], echo_pb: Any
) -> None:
    collector, port = agent
    echo_pb2, echo_pb2_grpc = echo_pb

    class Inner(echo_pb2_grpc.EchoServicer):  # type: ignore[misc, name-defined]
        node: Node

        async def Say(self, request: Any, context: Any) -> Any:
            with self.node.tracer.start_active_span("inner work"):
                await asyncio.sleep(0)
            return echo_pb2.Pong(text="ok")

    servicer = Inner()
    async with started(
        traced(echo_manifest, port), tmp_path, servicers={"echo.v1.Echo": servicer}
    ) as harness:
        servicer.node = harness.node
        async with grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel:
            await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=harness.metadata())
    inner, server = collector.named("inner work"), collector.named("/echo.v1.Echo/Say")
    assert (inner.trace, inner.parent) == (server.trace, server.span)


async def test_sample_ratio_zero_sends_nothing_and_stop_leaves_no_thread(
    echo_manifest: Path, tmp_path: Path, agent: tuple[Agent_, int], echo_pb: Any
) -> None:
    collector, port = agent
    echo_pb2, echo_pb2_grpc = echo_pb
    async with started(traced(echo_manifest, port, ratio=0.0), tmp_path) as harness:
        assert [t.name for t in threading.enumerate()].count("msuite-jaeger") == 1
        async with grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel:
            for _ in range(5):
                await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=harness.metadata())
        assert harness.node.status.report is not None
        report = await harness.node.status.report()
        assert report["tracing"] == {
            "state": "running",
            "exporter": "jaeger",
            "agent": f"127.0.0.1:{port}",
            "sample_ratio": 0.0,
            "spans": {"sent": 0, "dropped": 0, "failed": 0},
        }
    await asyncio.sleep(0.2)
    assert collector.spans == []
    assert "msuite-jaeger" not in [t.name for t in threading.enumerate()]


async def test_node_tracer_needs_the_manifest_key(echo_manifest: Path, tmp_path: Path) -> None:
    node = Node(prepare(load_manifest(echo_manifest), tmp_path))
    with pytest.raises(NotConfigured, match=r"diagnostics\.tracing"):
        node.tracer  # noqa: B018
