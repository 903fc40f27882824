"""Two ``msuite up`` processes export to one OTLP/HTTP receiver: a call that crosses them over libp2p is one trace."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.integration.test_p2p_up import project, socket_path
from tests.integration.test_up import Up, _forget_gen

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


class Collected:
    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []  # (service.name, span)
        self.lock = threading.Lock()


@pytest.fixture
def receiver() -> Iterator[tuple[Collected, str]]:
    collected = Collected()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            with collected.lock:
                for resource_spans in request.resource_spans:
                    names = [a.value.string_value for a in resource_spans.resource.attributes]
                    keys = [a.key for a in resource_spans.resource.attributes]
                    service = names[keys.index("service.name")]
                    for scope_spans in resource_spans.scope_spans:
                        collected.spans += [(service, s) for s in scope_spans.spans]
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield collected, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def traced(folder: Path, endpoint: str) -> Path:
    manifest = folder / "msuite.yaml"
    manifest.write_text(
        manifest.read_text() + f"diagnostics:\n  tracing:\n    otlp: {{endpoint: '{endpoint}'}}\n"
    )
    return folder


def test_a_call_across_two_up_processes_over_libp2p_is_one_trace(
    tmp_path: Path, receiver: tuple[Collected, str]
) -> None:
    collected, endpoint = receiver
    alpha_socket, beta_socket = socket_path(), socket_path()
    alpha = beta = None
    try:
        alpha_dir = traced(project(tmp_path, "alpha", "pair.v1.Ping", "Ping", alpha_socket), endpoint)
        alpha = Up(alpha_dir)
        listeners = alpha.wait_ready(2, timeout=60)
        beta_dir = project(tmp_path, "beta", "pair.v1.Pong", "Pong", beta_socket, bootstrap=listeners["p2p"])
        beta = Up(traced(beta_dir, endpoint))
        beta.wait_ready(2, timeout=60)
        sys.path.insert(0, str(beta_dir))
        try:
            _forget_gen()
            pair_pb2 = importlib.import_module("gen.pair_pb2")
            pair_pb2_grpc = importlib.import_module("gen.pair_pb2_grpc")
        finally:
            sys.path.remove(str(beta_dir))

        async def ask() -> str:
            import grpc.aio

            async with grpc.aio.insecure_channel(f"unix:{beta_socket}") as channel:
                metadata = (("traceparent", f"00-{TRACE}-{PARENT}-01"),)
                reply = await pair_pb2_grpc.PongStub(channel).Ask(
                    pair_pb2.Msg(), metadata=metadata, timeout=30
                )
                return str(reply.text)

        assert asyncio.run(ask()) == "ping from alpha to beta via p2p"
        assert beta.stop() == 0  # each process sends its spans as it stops
        assert alpha.stop() == 0
    finally:
        for up in (alpha, beta):
            if up is not None:
                up.kill()
        _forget_gen()
        for socket in (alpha_socket, beta_socket):
            Path(socket).unlink(missing_ok=True)

    def one(service: str, name: str, kind: int) -> Any:
        found = [s for svc, s in collected.spans if svc == service and s.name == name and s.kind == kind]
        assert len(found) == 1, [(svc, s.name, s.kind) for svc, s in collected.spans]
        return found[0]

    server, client = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER, trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
    asked = one("beta", "/pair.v1.Pong/Ask", server)
    calling = one("beta", "/pair.v1.Ping/Call", client)
    called = one("alpha", "/pair.v1.Ping/Call", server)
    assert {s.trace_id.hex() for s in (asked, calling, called)} == {TRACE}
    assert asked.parent_span_id.hex() == PARENT
    assert calling.parent_span_id == asked.span_id
    assert called.parent_span_id == calling.span_id
    peer = {a.key: a.value.string_value for a in calling.attributes}["msuite.peer_id"]
    assert peer == listeners["p2p"].rsplit("/p2p/", 1)[1]  # alpha's peer id
