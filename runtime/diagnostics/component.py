"""Components ``metrics``, ``tracing`` and ``profiling`` (``diagnostics:``).

- ``metrics`` (``diagnostics.metrics``; ``node.metrics``): the node's own
  Prometheus registry; it counts the task manager's workers and tasks. The
  gRPC and HTTP servers use it as a call hook, and ``http`` serves it on
  ``GET /metrics``.
- ``tracing`` (``diagnostics.tracing``; ``node.tracer``): the tracer and its
  span reporter thread; a call hook on both servers and an interceptor on the
  node's channels.
- ``profiling`` (``diagnostics.profiling``, with ``http:``): the ``/debug/``
  pages, registered on the HTTP router at build; they start after ``http``,
  so they are told the node is draining first and end running profiles then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec, Extra
from msuite.runtime.errors import NotConfigured

if TYPE_CHECKING:
    import opentracing
    from opentelemetry import trace as otel_trace

    from msuite.runtime.http.app import HttpServer

    from .metrics import NodeMetrics
    from .otel import OtelTracing
    from .profiling import Profiling
    from .tracing import NodeTracing

__all__ = [
    "METRICS",
    "PROFILING",
    "TRACING",
    "MetricsComponent",
    "ProfilingComponent",
    "call_hooks",
    "tracing_of",
]


def tracing_of(context: BuildContext) -> NodeTracing | OtelTracing | None:
    """The ``tracing`` component, for a factory whose spec uses it (its module imported only then)."""
    settings = context.manifest.diagnostics.tracing
    if settings is None:
        return None
    if settings.otlp is not None:
        from .otel import OtelTracing

        return context.use("tracing", OtelTracing)
    from .tracing import NodeTracing

    return context.use("tracing", NodeTracing)


def call_hooks(context: BuildContext) -> list[Any]:
    """The servers' call hooks, in their fixed order: metrics, then tracing."""
    hooks: list[Any] = []
    if context.manifest.diagnostics.metrics is not None:
        metrics = context.use("metrics", MetricsComponent)
        if metrics is not None:
            hooks.append(metrics.metrics)
    tracing = tracing_of(context)
    if tracing is not None:
        hooks.append(tracing)
    return hooks


class MetricsComponent:
    name = "metrics"

    def __init__(self, metrics: NodeMetrics, requires: tuple[str, ...]) -> None:
        self.metrics = metrics
        self.requires = requires

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"latency": self.metrics.settings.latency}


def _build_metrics(context: BuildContext) -> MetricsComponent:
    from msuite.runtime.tasks.component import TasksComponent

    from .metrics import NodeMetrics

    settings = context.manifest.diagnostics.metrics
    assert settings is not None
    metrics = NodeMetrics(settings)
    metrics.watch_tasks(context.require("tasks", TasksComponent).manager)
    return MetricsComponent(metrics, context.dependencies)


def _metrics(component: MetricsComponent, built: Mapping[str, Any]) -> NodeMetrics:
    return component.metrics


METRICS = ComponentSpec(
    "metrics",
    _build_metrics,
    enabled=lambda m: m.diagnostics.metrics is not None,
    key=("diagnostics", "metrics"),
    requires=("tasks",),
    accessors={"metrics": _metrics},
    extras=(Extra("prometheus_client", "metrics", ("diagnostics", "metrics")),),
)


def _build_tracing(context: BuildContext) -> NodeTracing | OtelTracing:
    settings = context.manifest.diagnostics.tracing
    assert settings is not None
    if settings.otlp is not None:
        from .otel import OtelTracing

        ca = None
        if settings.otlp.ca is not None:  # checked here, so a bad file stops the start at its line
            from msuite.runtime.grpc.tls import read_ca

            ca = read_ca(context.manifest, ("diagnostics", "tracing", "otlp"), "ca", settings.otlp.ca)
        return OtelTracing(settings, context.manifest.name, ca)
    from .tracing import NodeTracing

    return NodeTracing(settings, context.manifest.name)


def _tracer(component: NodeTracing | OtelTracing, built: Mapping[str, Any]) -> opentracing.Tracer:
    return component.tracer


def _otel_tracer(component: NodeTracing | OtelTracing, built: Mapping[str, Any]) -> otel_trace.Tracer:
    if not hasattr(component, "otel_tracer"):
        raise NotConfigured("otel_tracer", "diagnostics.tracing.otlp")
    tracer: otel_trace.Tracer = component.otel_tracer
    return tracer


_TRACING_KEY = ("diagnostics", "tracing")

TRACING = ComponentSpec(
    "tracing",
    _build_tracing,
    enabled=lambda m: m.diagnostics.tracing is not None,
    key=_TRACING_KEY,
    accessors={"tracer": _tracer, "otel_tracer": _otel_tracer},
    extras=(
        Extra("jaeger_client", "tracing", _TRACING_KEY),
        Extra("opentracing", "tracing", _TRACING_KEY),
        Extra("thrift", "tracing", _TRACING_KEY),
        Extra("opentelemetry", "tracing", _TRACING_KEY),
    ),
)


class ProfilingComponent:
    """The ``/debug/`` pages; draining ends the profiles that run."""

    name = "profiling"
    requires: tuple[str, ...] = ("http",)

    def __init__(self, profiling: Profiling) -> None:
        self.profiling = profiling
        self.state = "ready"

    async def start(self) -> None:
        self.state = "serving"

    async def draining(self) -> None:
        self.state = "closed"
        await self.profiling.close()

    async def stop(self, grace: float) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "prefix": "/debug"}


def _build_profiling(context: BuildContext) -> ProfilingComponent:
    from msuite.runtime.http.app import HttpServer

    from .profiling import Profiling

    http: HttpServer = context.require("http", HttpServer)
    profiling = Profiling(max_seconds=300.0)
    profiling.add_to(http.router, prefix="/debug")
    return ProfilingComponent(profiling)


PROFILING = ComponentSpec(
    "profiling",
    _build_profiling,
    enabled=lambda m: m.diagnostics.profiling and m.http is not None,
    key=("diagnostics", "profiling"),
    requires=("http",),
)
