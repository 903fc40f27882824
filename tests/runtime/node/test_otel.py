"""Tracing with OpenTelemetry: the spans the node really exports, decoded by OTLP receivers on 127.0.0.1.

The receivers stand in for a collector: one takes OTLP/HTTP (``POST
/v1/traces``, a protobuf ``ExportTraceServiceRequest``), one OTLP/gRPC
(``TraceService/Export``); both decode with the OTLP protobuf definitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import trustme
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from msuite.runtime.errors import NodeError, NotConfigured
from msuite.runtime.node import Node
from msuite.runtime.testing import prepare
from msuite.spec import Manifest, load_manifest
from tests.runtime.nodes import started
from tests.runtime.p2p.test_grpc_p2p import serving_over_p2p

EXTERNAL_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
EXTERNAL_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{EXTERNAL_TRACE}-{EXTERNAL_SPAN}-01"
"""W3C Trace Context's own example header: a sampled trace begun outside the nodes."""


@dataclass
class Span:
    service: str
    name: str
    trace: str
    span: str
    parent: str
    kind: int
    attributes: dict[str, Any]
    status: int


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind is not None else None


class Receiver:
    """What an OTLP receiver got: spans, and the headers (metadata) of each export."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.headers: list[dict[str, str]] = []
        self.errors: list[str] = []

    def take(self, body: bytes, headers: dict[str, str]) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as exc:  # recorded: the test fails on it
            self.errors.append(repr(exc))
            return
        self.headers.append(headers)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.spans.append(
                        Span(
                            service=resource["service.name"],
                            name=s.name,
                            trace=s.trace_id.hex(),
                            span=s.span_id.hex(),
                            parent=s.parent_span_id.hex(),
                            kind=s.kind,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            status=s.status.code,
                        )
                    )

    def named(self, name: str, service: str | None = None, kind: int | None = None) -> Span:
        found = [
            s
            for s in self.spans
            if s.name == name and service in (None, s.service) and kind in (None, s.kind)
        ]
        assert len(found) == 1, (name, service, kind, [(s.name, s.service, s.kind) for s in self.spans])
        return found[0]


SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
ERROR = trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
UNSET = trace_pb2.Status.StatusCode.STATUS_CODE_UNSET


@contextlib.asynccontextmanager
async def http_receiver(tls: trustme.LeafCert | None = None) -> AsyncIterator[tuple[Receiver, str]]:
    """An OTLP/HTTP receiver on 127.0.0.1 (over TLS with ``tls``): the receiver and its URL."""
    receiver = Receiver()

    async def export(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf", request.content_type
        receiver.take(await request.read(), {k.lower(): v for k, v in request.headers.items()})
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.configure_cert(context)
    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield receiver, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
    assert receiver.errors == []


@contextlib.asynccontextmanager
async def grpc_receiver(tls: trustme.LeafCert | None = None) -> AsyncIterator[tuple[Receiver, str]]:
    """An OTLP/gRPC receiver on 127.0.0.1 (over TLS with ``tls``): the receiver and its URL."""
    receiver = Receiver()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request: Any, context: Any) -> Any:
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            receiver.take(request.SerializeToString(), metadata)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)  # type: ignore[no-untyped-call]
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        pair = (tls.private_key_pem.bytes(), tls.cert_chain_pems[0].bytes())
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([pair]))
    await server.start()
    try:
        yield receiver, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await server.stop(0)
    assert receiver.errors == []


@pytest.fixture
async def otlp_http() -> AsyncIterator[tuple[Receiver, str]]:
    async with http_receiver() as found:
        yield found


@pytest.fixture
async def otlp_grpc() -> AsyncIterator[tuple[Receiver, str]]:
    async with grpc_receiver() as found:
        yield found


def traced(manifest: Manifest | Path, endpoint: str, ratio: float = 1.0, **otlp: Any) -> Manifest:
    if isinstance(manifest, Path):
        manifest = load_manifest(manifest)
    settings = {"tracing": {"otlp": {"endpoint": endpoint, **otlp}, "sample_ratio": ratio}}
    diagnostics = type(manifest.diagnostics).model_validate(settings)
    return manifest.model_copy(update={"diagnostics": diagnostics})


async def until(condition: Callable[[], Awaitable[object]], timeout: float) -> None:
    """Wait until ``await condition()`` is true (AssertionError after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, f"{condition.__name__} still false after {timeout} s"
        await asyncio.sleep(0.02)


async def test_an_http_request_through_the_gateway_continues_the_callers_trace(
    echo_manifest: Path, tmp_path: Path, otlp_http: tuple[Receiver, str]
) -> None:
    receiver, endpoint = otlp_http
    async with started(traced(echo_manifest, endpoint), tmp_path) as harness:
        headers = {**harness.bearer(), "traceparent": TRACEPARENT}
        async with harness.http.get("/v1/echo/hi?count=1", headers=headers) as response:
            assert response.status == 200
    # the node sent its spans as it stopped
    http = receiver.named("GET /v1/echo/{text}")
    client = receiver.named("/echo.v1.Echo/Say", kind=CLIENT)
    server = receiver.named("/echo.v1.Echo/Say", kind=SERVER)
    assert {s.service for s in (http, client, server)} == {"echo"}
    assert http.trace == client.trace == server.trace == EXTERNAL_TRACE
    assert (http.parent, client.parent, server.parent) == (EXTERNAL_SPAN, http.span, client.span)
    assert http.kind == SERVER
    assert http.attributes == {
        "http.request.method": "GET",
        "url.path": "/v1/echo/hi",  # never the query
        "http.route": "/v1/echo/{text}",
        "http.response.status_code": 200,
    }
    assert server.attributes["rpc.system"] == "grpc"
    assert (server.attributes["rpc.service"], server.attributes["rpc.method"]) == ("echo.v1.Echo", "Say")
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["network.peer.address"]
    assert client.attributes["rpc.grpc.status_code"] == 0
    assert server.status == client.status == http.status == UNSET


async def test_a_call_across_two_nodes_over_libp2p_is_one_trace(
    echo_manifest: Path, tmp_path: Path, otlp_http: tuple[Receiver, str], echo_pb: Any
) -> None:
    """Node front, in a span of its own, calls Echo.Say by name; node back serves it over libp2p."""
    receiver, endpoint = otlp_http
    echo_pb2, echo_pb2_grpc = echo_pb
    back_manifest = traced(load_manifest(serving_over_p2p(echo_manifest)), endpoint)
    back_manifest = back_manifest.model_copy(update={"name": "back"})
    async with started(back_manifest, tmp_path / "back") as back:
        front_manifest = Manifest.model_validate(
            {
                "name": "front",
                "repo": ":memory:",
                "p2p": {"port": 0, "bootstrap": back.node.p2p.addrs},
                "diagnostics": {"tracing": {"otlp": {"endpoint": endpoint}}},
            }
        )
        async with Node(front_manifest) as front:
            await front.p2p.find_service("echo.v1.Echo", timeout=5)
            stub = echo_pb2_grpc.EchoStub(front.grpc.client("echo.v1.Echo"))
            with front.otel_tracer.start_as_current_span("nightly job"):
                pong = await stub.Say(echo_pb2.Ping(text="x"), metadata=back.metadata())
            assert pong.text == "echo: x"
            back_peer = back.node.p2p.peer_id
    job = receiver.named("nightly job", "front")
    front_client = receiver.named("/echo.v1.Echo/Say", "front", CLIENT)
    back_server = receiver.named("/echo.v1.Echo/Say", "back", SERVER)
    assert job.trace == front_client.trace == back_server.trace
    assert job.parent == ""
    assert front_client.parent == job.span
    assert back_server.parent == front_client.span
    assert front_client.attributes["msuite.peer_id"] == back_peer
    assert front_client.attributes["server.address"].startswith("unix-abstract:")
    assert back_server.attributes["rpc.grpc.status_code"] == 0


async def test_a_call_across_two_nodes_over_tcp_continues_the_callers_trace(
    echo_manifest: Path, tmp_path: Path, otlp_http: tuple[Receiver, str], echo_pb: Any
) -> None:
    """A call enters node front with a traceparent; its handler calls node back over TCP."""
    receiver, endpoint = otlp_http
    echo_pb2, echo_pb2_grpc = echo_pb

    class Relay(echo_pb2_grpc.EchoServicer):  # type: ignore[misc, name-defined]
        node: Node

        async def Say(self, request: Any, context: Any) -> Any:
            stub = echo_pb2_grpc.EchoStub(self.node.grpc.client("echo.v1.Echo"))
            metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
            return await stub.Say(request, metadata=metadata)

    echo = load_manifest(echo_manifest)
    async with started(traced(echo, endpoint).model_copy(update={"name": "back"}), tmp_path / "b") as back:
        target = back.node.grpc.server.local_target
        front_manifest = traced(echo, endpoint).model_copy(
            update={
                "name": "front",
                "discovery": type(echo.discovery).model_validate({"static": {"echo.v1.Echo": target}}),
            }
        )
        relay = Relay()
        async with started(front_manifest, tmp_path / "f", servicers={"echo.v1.Echo": relay}) as front:
            relay.node = front.node
            async with grpc.aio.insecure_channel(front.node.grpc.server.local_target) as channel:
                metadata = (*front.metadata(), ("traceparent", TRACEPARENT))
                pong = await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(text="x"), metadata=metadata)
            assert pong.text == "echo: x"
    front_server = receiver.named("/echo.v1.Echo/Say", "front", SERVER)
    front_client = receiver.named("/echo.v1.Echo/Say", "front", CLIENT)
    back_server = receiver.named("/echo.v1.Echo/Say", "back", SERVER)
    assert front_server.trace == front_client.trace == back_server.trace == EXTERNAL_TRACE
    assert front_server.parent == EXTERNAL_SPAN
    assert front_client.parent == front_server.span
    assert back_server.parent == front_client.span
    assert front_client.attributes["server.address"] == target
    assert "msuite.peer_id" not in front_client.attributes


async def test_otlp_grpc_with_headers_errors_and_a_bad_traceparent(
    echo_manifest: Path, tmp_path: Path, otlp_grpc: tuple[Receiver, str], echo_pb: Any
) -> None:
    receiver, endpoint = otlp_grpc
    echo_pb2, echo_pb2_grpc = echo_pb
    manifest = traced(echo_manifest, endpoint, protocol="grpc", headers={"X-Api-Key": "k-123"})
    async with (
        started(manifest, tmp_path) as harness,
        grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel,
    ):
        stub = echo_pb2_grpc.EchoStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Say(
                echo_pb2.Ping(action="abort:NOT_FOUND"),
                metadata=(*harness.metadata(), ("traceparent", TRACEPARENT)),
            )
        # a malformed traceparent: a new trace, and the call is served
        bad = (("traceparent", "00-not-a-trace-01"),)
        assert (await stub.Shout(echo_pb2.Ping(text="a"), metadata=harness.metadata() + bad)).text
    failed = receiver.named("/echo.v1.Echo/Say")
    assert (failed.trace, failed.parent) == (EXTERNAL_TRACE, EXTERNAL_SPAN)
    assert failed.status == ERROR
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    fresh = receiver.named("/echo.v1.Echo/Shout")
    assert fresh.parent == "" and fresh.trace != EXTERNAL_TRACE
    assert all(h.get("x-api-key") == "k-123" for h in receiver.headers) and receiver.headers


async def test_user_spans_nest_through_both_apis(
    echo_manifest: Path, tmp_path: Path, otlp_http: tuple[Receiver, str], echo_pb: Any
) -> None:
    receiver, endpoint = otlp_http
    echo_pb2, echo_pb2_grpc = echo_pb

    class Inner(echo_pb2_grpc.EchoServicer):  # type: ignore[misc, name-defined]
        node: Node

        async def Say(self, request: Any, context: Any) -> Any:
            with (
                self.node.tracer.start_active_span("opentracing work"),  # the shim
                self.node.otel_tracer.start_as_current_span("otel work"),
            ):
                await asyncio.sleep(0)
            return echo_pb2.Pong(text="ok")

    servicer = Inner()
    async with started(
        traced(echo_manifest, endpoint), tmp_path, servicers={"echo.v1.Echo": servicer}
    ) as harness:
        servicer.node = harness.node
        async with grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel:
            await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=harness.metadata())
    server = receiver.named("/echo.v1.Echo/Say")
    shim, inner = receiver.named("opentracing work"), receiver.named("otel work")
    assert (shim.trace, shim.parent) == (server.trace, server.span)
    assert (inner.trace, inner.parent) == (server.trace, shim.span)


async def test_sample_ratio_zero_exports_nothing_and_stop_leaves_no_thread(
    echo_manifest: Path, tmp_path: Path, otlp_http: tuple[Receiver, str], echo_pb: Any
) -> None:
    receiver, endpoint = otlp_http
    echo_pb2, echo_pb2_grpc = echo_pb
    async with started(traced(echo_manifest, endpoint, ratio=0.0), tmp_path) as harness:
        assert [t.name for t in threading.enumerate()].count("msuite-otlp") == 1
        async with grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel:
            for _ in range(5):
                await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=harness.metadata())
        assert harness.node.status.report is not None
        report = await harness.node.status.report()
        assert report["tracing"] == {
            "state": "running",
            "exporter": "otlp",
            "protocol": "http",
            "endpoint": f"{endpoint}/v1/traces",
            "sample_ratio": 0.0,
            "spans": {"sent": 0, "dropped": 0, "failed": 0},
        }
    assert receiver.spans == []
    assert "msuite-otlp" not in [t.name for t in threading.enumerate()]


async def test_an_unreachable_receiver_costs_spans_not_calls(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the endpoint: calls are served, spans are counted as failed, one
    warning says so without the secret header, and stop does not hang on the retries."""
    from tests.servers import free_port

    echo_pb2, echo_pb2_grpc = echo_pb
    endpoint = f"http://user:pw@127.0.0.1:{free_port()}"
    manifest = traced(echo_manifest, endpoint, headers={"authorization": "Bearer s3cret-token"}, timeout="1s")
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    async with started(manifest, tmp_path) as harness:
        async with grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for i in range(20):
                assert (await stub.Say(echo_pb2.Ping(text=str(i)), metadata=harness.metadata())).text

        async def failed() -> int:
            report = await harness.node.status.report()  # type: ignore[misc]
            return int(report["tracing"]["spans"]["failed"])

        await until(failed, timeout=10)
        report = await harness.node.status.report()  # type: ignore[misc]
        assert report["tracing"]["endpoint"] == f"http://127.0.0.1:{endpoint.rsplit(':', 1)[1]}/v1/traces"
        assert report["tracing"]["spans"]["sent"] == 0
        began = loop.time()
    assert loop.time() - began < 4.0  # stop: at most the 5 s flush limit, here the 1 s timeout
    warnings = [r for r in caplog.records if r.name == "msuite.tracing" and r.levelno == logging.WARNING]
    assert warnings and "could not be sent to http://127.0.0.1:" in warnings[0].getMessage()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "s3cret-token" not in text and "user:pw" not in text
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]


async def test_otel_tracer_needs_the_otlp_exporter(echo_manifest: Path, tmp_path: Path) -> None:
    manifest = load_manifest(echo_manifest)
    jaeger = manifest.model_copy(
        update={
            "diagnostics": type(manifest.diagnostics).model_validate(
                {"tracing": {"jaeger": "127.0.0.1:6831"}}
            )
        }
    )
    async with Node(prepare(jaeger, tmp_path)) as node:
        with pytest.raises(NotConfigured, match=r"diagnostics\.tracing\.otlp"):
            node.otel_tracer  # noqa: B018


async def test_a_receiver_that_answers_errors_is_counted(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    """A receiver answering 400 (a non-retryable error): spans are failed at once, nothing retried."""
    echo_pb2, echo_pb2_grpc = echo_pb
    posts = 0

    async def refuse(request: web.Request) -> web.Response:
        nonlocal posts
        posts += 1
        await request.read()
        return web.Response(status=400, text="bad")

    app = web.Application()
    app.router.add_post("/v1/traces", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with started(traced(echo_manifest, f"http://127.0.0.1:{port}"), tmp_path) as harness:
            async with grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel:
                await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=harness.metadata())

            async def failed() -> bool:
                report = await harness.node.status.report()  # type: ignore[misc]
                return bool(report["tracing"]["spans"]["failed"] == 1)

            await until(failed, timeout=10)
        assert posts == 1
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_spans_go_to_an_https_receiver_trusted_through_the_ca_file(
    protocol: str, echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(echo_manifest.parent / "otlp-ca.pem"))
    receive = http_receiver if protocol == "http" else grpc_receiver
    async with receive(ca.issue_cert("127.0.0.1")) as (receiver, endpoint):
        manifest = traced(echo_manifest, endpoint, protocol=protocol, ca="otlp-ca.pem")
        async with (
            started(manifest, tmp_path) as harness,
            grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel,
        ):
            await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=harness.metadata())
    assert receiver.named("/echo.v1.Echo/Say").kind == SERVER


async def test_a_ca_file_that_holds_no_certificate_stops_the_start_at_its_line(
    echo_manifest: Path, tmp_path: Path
) -> None:
    (echo_manifest.parent / "junk.pem").write_text("not a certificate\n")
    path = echo_manifest.with_name("junk-ca.yaml")
    text = echo_manifest.read_text(encoding="utf-8")
    path.write_text(
        text + "diagnostics:\n  tracing:\n    otlp: {endpoint: 'https://127.0.0.1:1', ca: junk.pem}\n",
        encoding="utf-8",
    )
    line = len(text.splitlines()) + 3
    with pytest.raises(
        NodeError,
        match=rf"junk-ca.yaml:{line}:\d+: diagnostics\.tracing\.otlp\.ca: .*junk\.pem does not hold PEM certificates",
    ):
        async with Node(prepare(load_manifest(path), tmp_path)):
            pass
