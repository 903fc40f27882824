"""Distributed tracing (``diagnostics.tracing``; ``node.tracer``): OpenTracing with jaeger-client.

Every node builds its own tracer (never ``Config.initialize_tracer()``, which
sets a process-wide tracer once and returns None the second time), named after
the node, and reports its spans over UDP, in Jaeger's thrift compact format, to
the agent at ``diagnostics.tracing.jaeger`` (default ``127.0.0.1:6831``, the
agent's standard port).

Spans, all tagged by OpenTracing's semantic conventions (``span.kind``,
``component``, ``error``):

- **gRPC server calls**: one span per call, named after the full method
  (``/pkg.Service/Method``), tagged ``grpc.status_code``. It continues the trace
  found in the call's metadata (Jaeger's ``uber-trace-id`` header), else starts
  one. It is the *active* span while the handler runs, so spans the handler
  starts, and its calls through ``node.grpc.client(...)``, are its children.
- **HTTP server requests**: one span per request, named ``<METHOD> <route
  template>`` (``GET /v1/notes/{id}``), tagged ``http.method``, ``http.url``
  (the path, never the query) and ``http.status_code``; continued from the
  request's headers, active while the handler runs.
- **gRPC client calls** through the node's channels (``node.grpc.client``, the
  gateway): one client span per call, a child of the active span, whose context
  is injected into the call's metadata, so a call across two nodes is one trace.

A malformed trace header starts a new trace (and is logged at DEBUG): it never
fails the call. Sampling: ``sample_ratio`` 1.0 keeps every trace (the default,
unlike jaeger-client's own 0.1%), 0 keeps none, anything between keeps that
fraction by trace ID; a continued trace follows its caller's decision.

Spans are sent by :class:`UdpReporter` rather than jaeger-client's own
reporter, which wakes a tornado IOLoop thread once per span (half the node's
throughput went there at a 1.0 sample ratio): finishing a span appends it to a
bounded deque, and a thread of the node's own (``msuite-jaeger``) encodes and
sends batches, with the same thrift payload. Stopping the node sends what is
queued (within the shutdown grace, at most 5 s), joins that thread and closes
the UDP socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio
import opentracing
from jaeger_client import thrift as jaeger_thrift
from jaeger_client.reporter import BaseReporter
from jaeger_client.sampler import ConstSampler, ProbabilisticSampler, Sampler
from jaeger_client.span import Span
from jaeger_client.span_context import SpanContext
from jaeger_client.thrift_gen.agent import Agent
from jaeger_client.tracer import Tracer
from opentracing import Format
from opentracing.ext import tags as ext
from opentracing.scope_managers.contextvars import ContextVarsScopeManager
from thrift.protocol import TCompactProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TTransport

from msuite.runtime.errors import NodeError

from ._batches import BatchThread
from ._client_spans import ClientSpan, SpanInterceptor, call_method

if TYPE_CHECKING:
    from aiohttp import web

    from msuite.runtime.grpc.interceptors import Begin, Context, End
    from msuite.spec.models import Tracing

__all__ = ["DEFAULT_AGENT", "NodeTracing"]

log = logging.getLogger("msuite.tracing")

DEFAULT_AGENT = "127.0.0.1:6831"
"""Where spans go when ``diagnostics.tracing.jaeger`` is not set (Jaeger agent's compact-thrift port)."""

_FLUSH_LIMIT = 5.0
"""At most this many seconds of the shutdown grace go to flushing spans."""


def _agent(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _sampler(ratio: float) -> Sampler:
    if ratio >= 1.0:
        return ConstSampler(True)
    if ratio <= 0.0:
        return ConstSampler(False)
    return ProbabilisticSampler(ratio)


def _process_tags() -> dict[str, str]:
    # given here, so jaeger-client does not probe network interfaces for an address
    hostname = socket.gethostname()
    try:
        ip = socket.gethostbyname(hostname)
    except OSError:
        ip = "127.0.0.1"
    return {"hostname": hostname, "ip": ip}


class UdpReporter(BaseReporter, BatchThread[Span]):
    """Sends finished spans to a Jaeger agent over UDP from a thread of its own.

    ``report_span`` (called on the node's loop as a span finishes) only queues
    it (:class:`BatchThread`). The thread encodes batches with jaeger-client's
    thrift types and thrift's C compact encoder (the payload jaeger-client's
    own reporter sends: an ``Agent.emitBatch`` one-way message), and sends each
    as one datagram, halving batches that would exceed ``MAX_PACKET``.
    """

    MAX_PACKET = 65000
    """Largest datagram sent (the agent's UDP server reads up to 65000 bytes)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        flush_interval: float = 0.5,
        batch_size: int = 50,
        queue_limit: int = 10_000,
    ) -> None:
        BatchThread.__init__(
            self,
            "msuite-jaeger",
            flush_interval=flush_interval,
            batch_size=batch_size,
            queue_limit=queue_limit,
        )
        self.address = (host, port)
        self._process: Any = None
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._seqid = 0

    def set_process(self, service_name: str, tags: Any, max_length: int) -> None:
        self._process = jaeger_thrift.make_process(service_name, tags, max_length)

    def report_span(self, span: Span) -> None:
        self.offer(span)

    def close_and_join(self, timeout: float) -> bool:
        """Send what is queued, stop the thread and close the socket; False when time ran out."""
        if not self._finish(timeout):
            return False
        self._socket.close()
        return True

    # ------------------------------------------------------------------ the thread

    def _encode(self, spans: list[Span]) -> bytes:
        buffer = TTransport.TMemoryBuffer()
        protocol = TCompactProtocol.TCompactProtocolAccelerated(buffer, fallback=True)
        self._seqid += 1
        protocol.writeMessageBegin("emitBatch", TMessageType.ONEWAY, self._seqid)
        args = Agent.emitBatch_args()
        args.batch = jaeger_thrift.make_jaeger_batch(spans=spans, process=self._process)
        args.write(protocol)
        protocol.writeMessageEnd()
        payload: bytes = buffer.getvalue()
        return payload

    def _send(self, spans: list[Span]) -> None:
        try:
            payload = self._encode(spans)
        except Exception:
            self.failed += len(spans)
            log.exception("tracing: %d spans could not be encoded", len(spans))
            return
        if len(payload) > self.MAX_PACKET:
            if len(spans) == 1:
                self.dropped += 1
                log.warning("tracing: a span of %d bytes is over the UDP limit; dropped", len(payload))
                return
            half = len(spans) // 2
            self._send(spans[:half])
            self._send(spans[half:])
            return
        try:
            self._socket.sendto(payload, self.address)
        except OSError as exc:  # no agent listening (ICMP refused), buffer full: spans are lost
            self.failed += len(spans)
            log.debug("tracing: sending %d spans to %s:%d failed: %s", len(spans), *self.address, exc)
        else:
            self.sent += len(spans)


def _carrier(pairs: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {key: value for key, value in pairs if isinstance(value, str)}


class NodeTracing:
    """Component ``tracing``: the node's tracer, its server hooks and its client interceptors."""

    name = "tracing"
    requires: tuple[str, ...] = ()

    def __init__(self, settings: Tracing, service: str) -> None:
        self.settings = settings
        self.service = service
        self.agent = settings.jaeger or DEFAULT_AGENT
        self.state = "new"
        self._tracer: Tracer | None = None
        self._reporter: UdpReporter | None = None

    @property
    def tracer(self) -> opentracing.Tracer:
        """The node's OpenTracing tracer (while the node runs)."""
        if self._tracer is None:
            raise NodeError("node.tracer exists while the node runs")
        return self._tracer

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        host, port = _agent(self.agent)
        reporter = UdpReporter(host, port)
        self._tracer = Tracer(
            self.service,
            reporter,
            _sampler(self.settings.sample_ratio),
            tags=_process_tags(),
            scope_manager=ContextVarsScopeManager(),
        )
        reporter.start()
        self._reporter = reporter
        self.state = "running"

    async def stop(self, grace: float) -> None:
        reporter = self._reporter
        if reporter is None:
            return
        self.state = "stopping"
        self._tracer = None  # spans finishing from now on are not reported
        budget = min(max(grace, 0.1), _FLUSH_LIMIT)
        if not await asyncio.to_thread(reporter.close_and_join, budget):
            log.warning("tracing: spans not sent within %.1f s are dropped", budget)
        self._reporter = None
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "state": self.state,
            "exporter": "jaeger",
            "agent": self.agent,
            "sample_ratio": self.settings.sample_ratio,
        }
        if self._reporter is not None:
            reporter = self._reporter
            report["spans"] = {"sent": reporter.sent, "dropped": reporter.dropped, "failed": reporter.failed}
        return report

    # ------------------------------------------------------------------ extraction

    def _extract(self, tracer: Tracer, form: str, carrier: dict[str, str]) -> SpanContext | None:
        try:
            context: SpanContext | None = tracer.extract(form, carrier)
        except (opentracing.SpanContextCorruptedException, opentracing.InvalidCarrierException) as exc:
            log.debug("ignoring a malformed trace header: %s", exc)
            return None
        return context

    # ------------------------------------------------------------------ gRPC server hook

    def prepare(self, method: str, kind: str) -> Begin:
        """The gRPC call hook (see :class:`msuite.runtime.grpc.interceptors.CallHook`)."""
        tags = {ext.SPAN_KIND: ext.SPAN_KIND_RPC_SERVER, ext.COMPONENT: "grpc"}

        def begin(context: Context) -> End:
            tracer = self._tracer
            if tracer is None:
                return _ignore_end
            parent = self._extract(tracer, Format.TEXT_MAP, _carrier(context.invocation_metadata() or ()))
            span = tracer.start_span(method, child_of=parent, tags=tags, ignore_active_span=True)
            scope = tracer.scope_manager.activate(span, finish_on_close=False)

            def end(code: grpc.StatusCode, elapsed: float) -> None:
                span.set_tag("grpc.status_code", code.name)
                if code is not grpc.StatusCode.OK:
                    span.set_tag(ext.ERROR, True)
                span.finish()
                _close(scope)

            return end

        return begin

    # ------------------------------------------------------------------ HTTP hook

    def begin(self, request: web.Request, route: str) -> Callable[[int, float], None]:
        """The HTTP hook (see :class:`msuite.runtime.http.app.HttpHook`)."""
        tracer = self._tracer
        if tracer is None:
            return _ignore_end
        parent = self._extract(tracer, Format.HTTP_HEADERS, dict(request.headers))
        span = tracer.start_span(
            f"{request.method} {route}",
            child_of=parent,
            ignore_active_span=True,
            tags={
                ext.SPAN_KIND: ext.SPAN_KIND_RPC_SERVER,
                ext.COMPONENT: "aiohttp",
                ext.HTTP_METHOD: request.method,
                ext.HTTP_URL: request.path,
            },
        )
        scope = tracer.scope_manager.activate(span, finish_on_close=False)

        def end(status: int, elapsed: float) -> None:
            span.set_tag(ext.HTTP_STATUS_CODE, status)
            if status >= 500:
                span.set_tag(ext.ERROR, True)
            span.finish()
            _close(scope)

        return end

    # ------------------------------------------------------------------ gRPC client side

    def client_interceptors(
        self, target: str = "", peer: str | None = None
    ) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for the node's channels: a client span per call, its context sent along."""
        return [SpanInterceptor(self.start_client_span)]

    def start_client_span(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[ClientSpan | None, grpc.aio.ClientCallDetails]:
        tracer = self._tracer
        if tracer is None:
            return None, details
        span = tracer.start_span(
            call_method(details),
            child_of=cast("Span | None", tracer.active_span),
            tags={ext.SPAN_KIND: ext.SPAN_KIND_RPC_CLIENT, ext.COMPONENT: "grpc"},
        )
        carrier: dict[str, str] = {}
        tracer.inject(span, Format.TEXT_MAP, carrier)
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
        replaced: grpc.aio.ClientCallDetails = details._replace(metadata=metadata)  # type: ignore[attr-defined]
        return _JaegerClientSpan(span), replaced


def _ignore_end(code: Any, elapsed: float) -> None:
    return None


def _close(scope: opentracing.Scope) -> None:
    # ValueError: ended in another context than it began (a generator closed elsewhere)
    with contextlib.suppress(ValueError):
        scope.close()


class _JaegerClientSpan:
    def __init__(self, span: opentracing.Span) -> None:
        self.span = span

    def finish(self, code: grpc.StatusCode) -> None:
        self.span.set_tag("grpc.status_code", code.name)
        if code is not grpc.StatusCode.OK:
            self.span.set_tag(ext.ERROR, True)
        self.span.finish()

    def fail(self, error: BaseException) -> None:
        self.span.set_tag(ext.ERROR, True)
        self.span.log_kv({"event": "error", "error.kind": type(error).__name__})
        self.span.finish()
