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

jaeger-client's reporter runs on a tornado IOLoop; the node runs it in a thread
of its own (``msuite-jaeger``) so the node's asyncio loop never waits on it.
Stopping the node flushes the queued spans (within the shutdown grace), closes
the UDP socket and joins that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio
import opentracing
import tornado.ioloop
from jaeger_client.local_agent_net import LocalAgentSender
from jaeger_client.reporter import Reporter
from jaeger_client.sampler import ConstSampler, ProbabilisticSampler, Sampler
from jaeger_client.span import Span
from jaeger_client.span_context import SpanContext
from jaeger_client.tracer import Tracer
from opentracing import Format
from opentracing.ext import tags as ext
from opentracing.scope_managers.contextvars import ContextVarsScopeManager

from msuite.runtime.errors import NodeError

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


class _ReporterLoop:
    """A thread running the tornado IOLoop jaeger-client's reporter needs."""

    def __init__(self) -> None:
        self.io_loop: tornado.ioloop.IOLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="msuite-jaeger", daemon=True)

    def start(self) -> tornado.ioloop.IOLoop:
        self._thread.start()
        self._ready.wait()
        assert self.io_loop is not None
        return self.io_loop

    def _run(self) -> None:
        io_loop = tornado.ioloop.IOLoop(make_current=False)
        self.io_loop = io_loop
        io_loop.add_callback(self._ready.set)
        try:
            io_loop.start()
        finally:
            io_loop.close()

    def run(self, work: Callable[[], Any]) -> concurrent.futures.Future[None]:
        """Run coroutine function ``work`` on the IOLoop; the future completes with it."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def call() -> None:
            try:
                await work()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        assert self.io_loop is not None
        self.io_loop.add_callback(call)
        return done

    def stop(self, timeout: float) -> None:
        if self.io_loop is not None and self._thread.is_alive():
            self.io_loop.add_callback(self.io_loop.stop)
            self._thread.join(timeout)


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
        self._loop: _ReporterLoop | None = None
        self._sender: LocalAgentSender | None = None
        self._reporter: Reporter | None = None

    @property
    def tracer(self) -> opentracing.Tracer:
        """The node's OpenTracing tracer (while the node runs)."""
        if self._tracer is None:
            raise NodeError("node.tracer exists while the node runs")
        return self._tracer

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        host, port = _agent(self.agent)
        loop = _ReporterLoop()
        io_loop = await asyncio.to_thread(loop.start)
        self._loop = loop
        try:
            # the sampling port is never contacted: the sampler is local, not remote-controlled
            sender = LocalAgentSender(host, 5778, port, io_loop=io_loop)  # type: ignore[no-untyped-call]
            reporter = Reporter(channel=sender, flush_interval=1.0, queue_capacity=1000, batch_size=10)
        except Exception:
            loop.stop(1.0)
            raise
        self._sender, self._reporter = sender, reporter
        self._tracer = Tracer(
            self.service,
            reporter,
            _sampler(self.settings.sample_ratio),
            tags=_process_tags(),
            scope_manager=ContextVarsScopeManager(),
        )
        self.state = "running"

    async def stop(self, grace: float) -> None:
        tracer, loop = self._tracer, self._loop
        if tracer is None or loop is None:
            return
        self.state = "stopping"
        budget = min(max(grace, 0.1), _FLUSH_LIMIT)
        reporter = self._reporter
        assert reporter is not None
        try:
            await asyncio.wait_for(asyncio.wrap_future(loop.run(reporter._flush)), budget)
        except TimeoutError:
            log.warning("tracing: spans not flushed within %.1f s are dropped", budget)
        finally:
            self._tracer = None
            loop.run(self._close_sender)
            await asyncio.to_thread(loop.stop, budget)
            self._loop = None
            self.state = "stopped"

    async def _close_sender(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "agent": self.agent, "sample_ratio": self.settings.sample_ratio}

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
        tags = {ext.SPAN_KIND: ext.SPAN_KIND_RPC_SERVER, ext.COMPONENT: "grpc", "grpc.kind": kind}

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

    def begin(self, request: web.Request) -> Callable[[int, float], None]:
        """The HTTP hook (see :class:`msuite.runtime.http.app.HttpHook`)."""
        tracer = self._tracer
        if tracer is None:
            return _ignore_end
        from msuite.runtime.http.app import route_of

        route = route_of(request)
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

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Interceptors for the node's channels: a client span per call, its context sent along."""
        return [_ClientTracing(self)]

    def start_client_span(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[opentracing.Span | None, grpc.aio.ClientCallDetails]:
        tracer = self._tracer
        if tracer is None:
            return None, details
        raw: Any = details.method
        method = raw.decode() if isinstance(raw, bytes) else str(raw)
        span = tracer.start_span(
            method,
            child_of=cast("Span | None", tracer.active_span),
            tags={ext.SPAN_KIND: ext.SPAN_KIND_RPC_CLIENT, ext.COMPONENT: "grpc"},
        )
        carrier: dict[str, str] = {}
        tracer.inject(span, Format.TEXT_MAP, carrier)
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
        replaced: grpc.aio.ClientCallDetails = details._replace(metadata=metadata)  # type: ignore[attr-defined]
        return span, replaced


def _ignore_end(code: Any, elapsed: float) -> None:
    return None


def _close(scope: opentracing.Scope) -> None:
    # ValueError: ended in another context than it began (a generator closed elsewhere)
    with contextlib.suppress(ValueError):
        scope.close()


async def _finish_client_span(span: opentracing.Span, call: grpc.aio.Call) -> None:
    try:
        code = await call.code()
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
    span.set_tag("grpc.status_code", code.name)
    if code is not grpc.StatusCode.OK:
        span.set_tag(ext.ERROR, True)
    span.finish()


class _ClientTracing(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """One client span per call; its context goes out in the call's metadata."""

    def __init__(self, tracing: NodeTracing) -> None:
        self._tracing = tracing
        self._pending: set[asyncio.Task[None]] = set()

    def _watch(self, span: opentracing.Span | None, call: Any) -> Any:
        if span is not None:

            def done(finished: Any) -> None:
                task = asyncio.get_running_loop().create_task(_finish_client_span(span, finished))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

            call.add_done_callback(done)
        return call

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        span, details = self._tracing.start_client_span(client_call_details)
        return self._watch(span, await continuation(details, request))

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        span, details = self._tracing.start_client_span(client_call_details)
        return self._watch(span, await continuation(details, request))

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        span, details = self._tracing.start_client_span(client_call_details)
        return self._watch(span, await continuation(details, request_iterator))

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        span, details = self._tracing.start_client_span(client_call_details)
        return self._watch(span, await continuation(details, request_iterator))
