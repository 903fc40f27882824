"""Prometheus metrics of one node (``diagnostics.metrics``; ``node.metrics``; ``GET /metrics``).

Every node owns a :class:`prometheus_client.CollectorRegistry`; nothing goes to
prometheus_client's global default registry, so two nodes in one process (tests,
embedded nodes) never clash and each ``/metrics`` shows only its own node.

What the registry holds:

======================================  =========  ===============================================
metric                                  type       labels
======================================  =========  ===============================================
``process_*``, ``python_*``             (standard) CPU seconds, memory, open fds, GC, version
``grpc_server_started_total``           counter    ``grpc_type``, ``grpc_service``, ``grpc_method``
``grpc_server_handled_total``           counter    the same and ``grpc_code`` (``OK``, ``NOT_FOUND``...)
``grpc_server_handling_seconds``        histogram  ``grpc_type``, ``grpc_service``, ``grpc_method``
                                                   (only with ``latency: true``)
``http_requests_total``                 counter    ``method``, ``route``, ``code``
``http_request_duration_seconds``       histogram  ``method``, ``route``
``msuite_tasks_workers``                gauge      (workers alive)
``msuite_tasks_busy_workers``           gauge      (workers running a task)
``msuite_tasks_max_workers``            gauge
``msuite_tasks``                        gauge      ``state`` (queued, running, restarting...)
======================================  =========  ===============================================

The gRPC names and labels are the ones Go's grpc-prometheus uses, so existing
dashboards work. ``grpc_type`` is ``unary``, ``client_stream``,
``server_stream`` or ``bidi_stream``. ``route`` is the aiohttp route's
template (``/v1/notes/{id}``), never the raw path, so the label set stays
bounded; a request no route matched counts under ``route="(unmatched)"``.

Label children are resolved once per gRPC method (when its interceptor chain is
built), so a call costs two counter increments (and one histogram observation
with ``latency: true``).

Your own metrics go on the same registry::

    hits = node.metrics.counter("notes_created", "Notes created.", ["kind"])
    hits.labels(kind="text").inc()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    import grpc
    from aiohttp import web

    from msuite.runtime.grpc.interceptors import Begin, Context, End
    from msuite.runtime.tasks import TaskManager
    from msuite.spec.models import Metrics

__all__ = ["CONTENT_TYPE", "NodeMetrics"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The content type of :meth:`NodeMetrics.render` (the Prometheus text format 0.0.4)."""


class NodeMetrics:
    """``node.metrics``: the node's registry, the server hooks, and factories for your metrics."""

    def __init__(self, settings: Metrics) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        """The node's own registry (pass it as ``registry=`` to any prometheus_client metric)."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        grpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        self._grpc_started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            grpc_labels,
            registry=self.registry,
        )
        self._grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status.",
            (*grpc_labels, "grpc_code"),
            registry=self.registry,
        )
        self._grpc_seconds = (
            Histogram(
                "grpc_server_handling_seconds",
                "Seconds from the start of an RPC to its end, on the server.",
                grpc_labels,
                registry=self.registry,
            )
            if settings.latency
            else None
        )
        self._http_requests = Counter(
            "http_requests",
            "HTTP requests answered, by route template and status code.",
            ("method", "route", "code"),
            registry=self.registry,
        )
        self._http_seconds = Histogram(
            "http_request_duration_seconds",
            "Seconds spent answering HTTP requests, by route template.",
            ("method", "route"),
            registry=self.registry,
        )
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._tasks = _TaskCollector()
        self.registry.register(self._tasks)

    # ------------------------------------------------------------------ users' metrics

    def counter(self, name: str, documentation: str, labels: Sequence[str] = (), **kwargs: Any) -> Counter:
        """A counter on the node's registry (``_total`` is added to ``name`` on export)."""
        return Counter(name, documentation, labels, registry=self.registry, **kwargs)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = (), **kwargs: Any) -> Gauge:
        """A gauge on the node's registry."""
        return Gauge(name, documentation, labels, registry=self.registry, **kwargs)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), **kwargs: Any
    ) -> Histogram:
        """A histogram on the node's registry (``buckets=`` to choose its buckets)."""
        return Histogram(name, documentation, labels, registry=self.registry, **kwargs)

    def summary(self, name: str, documentation: str, labels: Sequence[str] = (), **kwargs: Any) -> Summary:
        """A summary (count and sum) on the node's registry."""
        return Summary(name, documentation, labels, registry=self.registry, **kwargs)

    def register(self, collector: Collector) -> None:
        """Add a custom collector (an object with ``collect()``) to the node's registry."""
        self.registry.register(collector)

    # ------------------------------------------------------------------ export

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    async def serve(self, request: web.Request) -> web.Response:
        """The ``GET /metrics`` handler: the text format, or OpenMetrics when the scraper asks for it."""
        from aiohttp import web

        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

    # ------------------------------------------------------------------ wiring

    def watch_tasks(self, tasks: TaskManager) -> None:
        """Export the task manager's gauges."""
        self._tasks.manager = tasks

    def prepare(self, method: str, kind: str) -> Begin:
        """The gRPC call hook (see :class:`msuite.runtime.grpc.interceptors.CallHook`)."""
        service, _, name = method.lstrip("/").rpartition("/")
        labels = (kind, service, name)
        started = self._grpc_started.labels(*labels)
        handled = self._grpc_handled.labels
        seconds = self._grpc_seconds.labels(*labels) if self._grpc_seconds is not None else None
        by_code: dict[grpc.StatusCode, Counter] = {}

        def end(code: grpc.StatusCode, elapsed: float) -> None:
            counter = by_code.get(code)
            if counter is None:
                counter = by_code[code] = handled(*labels, code.name)
            counter.inc()
            if seconds is not None:
                seconds.observe(elapsed)

        def begin(context: Context) -> End:
            started.inc()
            return end

        return begin

    def begin(self, request: web.Request, route: str) -> Callable[[int, float], None]:
        """The HTTP hook (see :class:`msuite.runtime.http.app.HttpHook`)."""
        method = request.method

        def end(status: int, elapsed: float) -> None:
            children = self._http_children.get((method, route, status))
            if children is None:
                children = self._http_children[(method, route, status)] = (
                    self._http_requests.labels(method, route, str(status)),
                    self._http_seconds.labels(method, route),
                )
            children[0].inc()
            children[1].observe(elapsed)

        return end


class _TaskCollector(Collector):
    """Reads the task manager's counts at scrape time (no bookkeeping on the task path)."""

    def __init__(self) -> None:
        self.manager: TaskManager | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterable[Metric]:
        counts = self.manager.counts() if self.manager is not None else {}
        return list(self._families(counts))

    @staticmethod
    def _families(counts: dict[str, Any]) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "msuite_tasks_workers", "Task manager workers alive.", counts.get("workers", 0)
        )
        yield GaugeMetricFamily(
            "msuite_tasks_busy_workers", "Task manager workers running a task.", counts.get("busy", 0)
        )
        yield GaugeMetricFamily(
            "msuite_tasks_max_workers", "The task manager's worker limit.", counts.get("max_workers", 0)
        )
        by_state = GaugeMetricFamily("msuite_tasks", "Named tasks by state.", labels=["state"])
        for state, number in sorted(counts.get("states", {}).items()):
            by_state.add_metric([state], number)
        yield by_state
