"""Tracing with OpenTelemetry (``diagnostics.tracing.otlp``): OTLP export, W3C trace context.

The node builds its own ``TracerProvider`` (never the process-wide one, so two
nodes in one process keep their spans apart), named after the node
(``service.name``), sampled by ``ParentBased(TraceIdRatioBased(sample_ratio))``,
and sends its spans to an OTLP receiver over HTTP (protobuf body) or gRPC.

Spans, with OpenTelemetry's semantic conventions:

- **gRPC server calls**: kind SERVER, named after the full method
  (``/pkg.Service/Method``); ``rpc.system``, ``rpc.service``, ``rpc.method``,
  ``rpc.grpc.status_code`` and ``network.peer.address`` (the caller's address
  as gRPC gives it; a call over libp2p arrives through the node's tunnel, so
  its address is the tunnel's local socket). It continues the trace of the
  call's ``traceparent`` (and ``tracestate``) metadata, else starts one, and is
  the current span while the handler runs.
- **HTTP server requests**: kind SERVER, named ``<METHOD> <route template>``;
  ``http.request.method``, ``url.path`` (never the query), ``http.route`` and
  ``http.response.status_code``; continued from the request's ``traceparent``.
- **gRPC client calls** through the node's channels (calls by name, the
  gateway): kind CLIENT, a child of the current span, whose context goes out as
  ``traceparent``; ``server.address`` is the target dialled and
  ``msuite.peer_id`` the libp2p peer for calls over libp2p.

A malformed ``traceparent`` starts a new trace; it never fails a call. A
non-OK gRPC status, and an HTTP status of 500 or more, sets the span's status
to ERROR.

``node.tracer`` is an OpenTracing tracer too (OpenTelemetry's OpenTracing
shim), so code written against ``opentracing`` keeps working and its spans
nest under the call's span; ``node.otel_tracer`` is the node's OpenTelemetry
tracer.

Export: finishing a span appends it to a bounded deque (10,000 spans; more are
dropped and counted); a thread of the node's own (``msuite-otlp``) sends
batches of up to 512 every half second, or sooner when a batch is full. A
receiver that is down costs spans, never calls: the failure is counted and
logged as one warning a minute (the exporter's own per-batch log lines are
folded into it), never with the headers, which may hold secrets. Stopping the
node sends what is queued (within the shutdown grace, at most 5 s) and shuts
the exporter down.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from msuite.runtime.errors import NodeError

from ._batches import BatchThread
from ._client_spans import ClientSpan, SpanInterceptor, call_method

if TYPE_CHECKING:
    import opentracing
    from aiohttp import web

    from msuite.runtime.grpc.interceptors import Begin, Context, End
    from msuite.spec.models import Otlp, Tracing

__all__ = ["OtelTracing", "SpanQueue", "redact"]

log = logging.getLogger("msuite.tracing")

_FLUSH_LIMIT = 5.0
"""At most this many seconds of the shutdown grace go to sending spans."""

_WARN_EVERY = 60.0
"""Seconds between two warnings about spans that could not be sent."""

_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)

_propagator = TraceContextTextMapPropagator()


def redact(url: str) -> str:
    """``url`` without a user or password (an endpoint is shown in /status and in logs)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _sampler(ratio: float) -> Sampler:
    if ratio >= 1.0:
        root: Sampler = ALWAYS_ON
    elif ratio <= 0.0:
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(ratio)
    return ParentBased(root)


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP URL spans are posted to: ``endpoint``, with ``/v1/traces`` when it has no path."""
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, "/v1/traces", "", ""))
    return endpoint


def make_exporter(settings: Otlp, ca: tuple[Path, bytes] | None = None) -> SpanExporter:
    """The OTLP exporter ``settings`` describe; ``ca``: the CA file's path and its checked bytes."""
    timeout = settings.timeout.total_seconds()
    if settings.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=traces_url(settings.endpoint),
            certificate_file=str(ca[0]) if ca is not None else None,
            headers=dict(settings.headers),
            timeout=timeout,
            session=_session_keeping_its_ca() if ca is not None else None,
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    parts = urlsplit(settings.endpoint)
    secure = parts.scheme == "https"
    credentials = None
    if secure:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca[1] if ca is not None else None)
    return GrpcExporter(
        endpoint=parts.netloc.rpartition("@")[2],
        insecure=not secure,
        credentials=credentials,
        headers={name.lower(): value for name, value in settings.headers.items()},
        timeout=timeout,
    )


def _session_keeping_its_ca() -> Any:
    """A requests session whose ``verify`` (the configured CA file) wins over the environment.

    requests replaces a session's CA file with ``REQUESTS_CA_BUNDLE`` or
    ``CURL_CA_BUNDLE`` when either is set (as on many CI machines), so the
    receiver's certificate would be checked against the system's CAs and fail.
    """
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            settings = super().merge_environment_settings(*args, **kwargs)
            settings["verify"] = self.verify
            return settings

    return Session()


class _ExporterLog(logging.Filter):
    """Folds the OTLP exporters' per-batch log lines, on a node's export thread, into its warning."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[int, SpanQueue] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        queue = self.queues.get(threading.get_ident())
        if queue is None:
            return True
        if record.levelno >= logging.WARNING and queue.last_error is None:  # the first says why
            queue.last_error = record.getMessage()
        return False


_exporter_log = _ExporterLog()
_exporter_log_lock = threading.Lock()


def _fold_exporter_logs(queue: SpanQueue, on: bool) -> None:
    with _exporter_log_lock:
        if on:
            if not _exporter_log.queues:
                for name in _EXPORTER_LOGGERS:
                    logging.getLogger(name).addFilter(_exporter_log)
            _exporter_log.queues[threading.get_ident()] = queue
        else:
            _exporter_log.queues.pop(threading.get_ident(), None)
            if not _exporter_log.queues:
                for name in _EXPORTER_LOGGERS:
                    logging.getLogger(name).removeFilter(_exporter_log)


class SpanQueue(SpanProcessor, BatchThread[ReadableSpan]):
    """Sends finished spans through ``exporter`` from a thread of its own, in batches.

    ``on_end`` (on the node's loop, as a span ends) only queues it
    (:class:`BatchThread`); the thread exports batches of ``batch_size``:
    ``sent``, ``failed`` (the exporter said no) and ``dropped`` count every span
    once.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        endpoint: str,
        *,
        flush_interval: float = 0.5,
        batch_size: int = 512,
        queue_limit: int = 10_000,
    ) -> None:
        BatchThread.__init__(
            self, "msuite-otlp", flush_interval=flush_interval, batch_size=batch_size, queue_limit=queue_limit
        )
        self.exporter = exporter
        self.endpoint = endpoint
        self.last_error: str | None = None
        self._warned = 0.0
        self._unwarned = 0

    # the SpanProcessor interface

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.offer(span)

    def shutdown(self) -> None:
        return None  # the node stops the queue itself (close_and_join)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return not self._queue

    def close_and_join(self, timeout: float) -> bool:
        """Send what is queued and stop; False when time ran out (the rest is dropped)."""
        finished = self._finish(timeout)
        with contextlib.suppress(Exception):  # ends an export still retrying
            self.exporter.shutdown()
        if not finished:
            self._thread.join(1.0)
        return finished

    # the thread

    def _run(self) -> None:
        _fold_exporter_logs(self, True)
        try:
            self._running()
        finally:
            _fold_exporter_logs(self, False)

    def _send(self, batch: list[ReadableSpan]) -> None:
        self.last_error = None
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # an exporter bug must not end the thread
            result = SpanExportResult.FAILURE
            self.last_error = f"{type(exc).__name__}: {exc}"
        if result is SpanExportResult.SUCCESS:
            self.sent += len(batch)
            return
        self.failed += len(batch)
        self._unwarned += len(batch)
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(
                "tracing: %d spans could not be sent to %s (%s); spans are dropped until it answers",
                self._unwarned,
                self.endpoint,
                self.last_error or "the exporter gave no reason",
            )
            self._unwarned = 0


def _detach(token: object) -> None:
    # a context reset in another context than it was set in (a generator closed
    # elsewhere) is ignored, as in the Jaeger mode; OpenTelemetry's own detach logs it as an error
    var = getattr(token, "var", None)
    if isinstance(var, contextvars.ContextVar) and isinstance(token, contextvars.Token):
        with contextlib.suppress(ValueError):
            var.reset(token)
    else:
        otel_context.detach(token)  # type: ignore[arg-type]


def _metadata_carrier(pairs: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    return {key: value for key, value in pairs or () if isinstance(value, str)}


def _split_method(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class OtelTracing:
    """Component ``tracing`` with ``otlp``: the node's OpenTelemetry tracer, its server hooks and
    its client interceptors."""

    name = "tracing"
    requires: tuple[str, ...] = ()

    def __init__(self, settings: Tracing, service: str, ca: tuple[Path, bytes] | None = None) -> None:
        assert settings.otlp is not None
        self.settings = settings
        self.otlp = settings.otlp
        self.service = service
        self.ca = ca
        self.endpoint = redact(
            traces_url(self.otlp.endpoint) if self.otlp.protocol == "http" else self.otlp.endpoint
        )
        self.state = "new"
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._shim: opentracing.Tracer | None = None
        self._queue: SpanQueue | None = None

    @property
    def tracer(self) -> opentracing.Tracer:
        """An OpenTracing tracer over the node's OpenTelemetry tracer (while the node runs)."""
        if self._shim is None:
            raise NodeError("node.tracer exists while the node runs")
        return self._shim

    @property
    def otel_tracer(self) -> trace.Tracer:
        """The node's OpenTelemetry tracer (while the node runs)."""
        if self._tracer is None:
            raise NodeError("node.otel_tracer exists while the node runs")
        return self._tracer

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from opentelemetry.shim.opentracing_shim import create_tracer

        exporter = make_exporter(self.otlp, self.ca)
        queue = SpanQueue(exporter, self.endpoint)
        resource = Resource.create({"service.name": self.service, "host.name": socket.gethostname()})
        provider = TracerProvider(
            sampler=_sampler(self.settings.sample_ratio), resource=resource, shutdown_on_exit=False
        )
        provider.add_span_processor(queue)
        queue.start()
        self._queue = queue
        self._provider = provider
        self._tracer = provider.get_tracer("msuite")
        self._shim = create_tracer(provider)
        self.state = "running"

    async def stop(self, grace: float) -> None:
        queue = self._queue
        if queue is None:
            return
        self.state = "stopping"
        self._tracer = None  # spans starting from now on are not recorded
        self._shim = None
        budget = min(max(grace, 0.1), _FLUSH_LIMIT)
        if not await asyncio.to_thread(queue.close_and_join, budget):
            log.warning("tracing: spans not sent within %.1f s are dropped", budget)
        self._queue = None
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "state": self.state,
            "exporter": "otlp",
            "protocol": self.otlp.protocol,
            "endpoint": self.endpoint,
            "sample_ratio": self.settings.sample_ratio,
        }
        queue = self._queue
        if queue is not None:
            report["spans"] = {"sent": queue.sent, "dropped": queue.dropped, "failed": queue.failed}
        return report

    # ------------------------------------------------------------------ helpers

    def _parent(self, carrier: Mapping[str, str]) -> otel_context.Context:
        # the propagator ignores a malformed traceparent: the call starts a new trace
        return _propagator.extract(carrier, context=otel_context.Context())

    # ------------------------------------------------------------------ gRPC server hook

    def prepare(self, method: str, kind: str) -> Begin:
        """The gRPC call hook (see :class:`msuite.runtime.grpc.interceptors.CallHook`)."""
        service, name = _split_method(method)
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def begin(context: Context) -> End:
            tracer = self._tracer
            if tracer is None:
                return _ignore_end
            parent = self._parent(_metadata_carrier(context.invocation_metadata()))
            span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
            peer = context.peer()
            if peer:
                span.set_attribute("network.peer.address", peer)
            token = otel_context.attach(trace.set_span_in_context(span, parent))

            def end(code: grpc.StatusCode, elapsed: float) -> None:
                _end_rpc_span(span, code)
                _detach(token)

            return end

        return begin

    # ------------------------------------------------------------------ HTTP hook

    def begin(self, request: web.Request, route: str) -> Callable[[int, float], None]:
        """The HTTP hook (see :class:`msuite.runtime.http.app.HttpHook`)."""
        tracer = self._tracer
        if tracer is None:
            return _ignore_end
        headers = {key.lower(): value for key, value in request.headers.items()}
        parent = self._parent(headers)
        span = tracer.start_span(
            f"{request.method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path, "http.route": route},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))

        def end(status: int, elapsed: float) -> None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            _detach(token)

        return end

    # ------------------------------------------------------------------ gRPC client side

    def client_interceptors(self, target: str, peer: str | None = None) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for a channel to ``target`` (over libp2p: to ``peer``): a client span per
        call, its context sent along."""
        return [SpanInterceptor(lambda details: self.start_client_span(details, target, peer))]

    def start_client_span(
        self, details: grpc.aio.ClientCallDetails, target: str, peer: str | None
    ) -> tuple[ClientSpan | None, grpc.aio.ClientCallDetails]:
        tracer = self._tracer
        if tracer is None:
            return None, details
        method = call_method(details)
        service, name = _split_method(method)
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "server.address": target,
        }
        if peer is not None:
            attributes["msuite.peer_id"] = peer
        span = tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
        replaced: grpc.aio.ClientCallDetails = details._replace(metadata=metadata)  # type: ignore[attr-defined]
        return _OtelClientSpan(span), replaced


def _ignore_end(code: Any, elapsed: float) -> None:
    return None


def _end_rpc_span(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


class _OtelClientSpan:
    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def finish(self, code: grpc.StatusCode) -> None:
        _end_rpc_span(self.span, code)

    def fail(self, error: BaseException) -> None:
        self.span.record_exception(error)
        self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self.span.end()
