"""The node: a manifest turned into running components.

``Node(manifest)`` builds nothing until it is asked for a subsystem
(``node.http``, ``node.p2p``...) or started (:meth:`Node.start`, ``async
with node:``). Building walks the component table
(:data:`msuite.runtime.registry.COMPONENTS`, whose docstring lists it) in
order and builds each component the manifest enables, handing it the
components it declared (see :mod:`msuite.runtime.components`); every
configuration error is raised then, at its manifest position, before any
port is bound. Start then starts the components in the computed order
(requirements first, then table order) and stops them in exact reverse.

So transports stop accepting first (gRPC over libp2p is withdrawn from
peers, then ``http`` and ``grpc`` drain in-flight calls within what is left
of ``shutdown.grace``), then shared resources close, and the repository
closes very last. Before any component stops, every started one is told the
node is draining (gRPC health turns NOT_SERVING at once). If a component
fails to start, those already started are stopped in reverse and
:class:`StartError` names the failing one. Hooks added after start raise
:class:`~msuite.runtime.components.FrozenError` instead of never running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType, ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from msuite.spec import Manifest

from .components import BuildContext, Component, ComponentError, ComponentSpec, missing_extra, start_order
from .diagnostics.status import StatusBoard
from .errors import NodeError, NotConfigured, StartError
from .loading import load_bindings
from .registry import COMPONENTS, planned_key, refuse_planned

if TYPE_CHECKING:
    import opentracing
    from opentelemetry import trace as otel_trace

    from .auth import Auth
    from .diagnostics.metrics import NodeMetrics
    from .events.bus import Events
    from .grpc.component import GrpcAccess
    from .http.app import HttpServer
    from .locks import Locker
    from .p2p.host import P2PHost
    from .p2p.protocols import Protocols
    from .repo import Repo
    from .shared.shared import OnChange, SharedStore
    from .store import Store
    from .tasks import TaskManager

__all__ = ["Node", "StatusBoard"]

log = logging.getLogger("msuite.node")


class Node:
    """A node assembled from a manifest. ``async with Node(manifest) as node: ...``."""

    if TYPE_CHECKING:
        # accessors, served by __getattr__ from the component table (see each component.py)
        repo: Repo
        """The repository (``repo:``); open while the node runs."""
        store: Store
        """The item store in the repository; open while the node runs."""
        tasks: TaskManager
        """The task manager (always present)."""
        auth: Auth
        """JWT and ACLs (``auth:``), once started."""
        locker: Locker
        """Distributed locks (``locker:``)."""
        metrics: NodeMetrics
        """The node's Prometheus registry and metric factories (``diagnostics.metrics``)."""
        tracer: opentracing.Tracer
        """The node's OpenTracing tracer (``diagnostics.tracing``), while the node runs; with
        ``otlp``, OpenTelemetry's OpenTracing shim over :attr:`otel_tracer`."""
        otel_tracer: otel_trace.Tracer
        """The node's OpenTelemetry tracer (``diagnostics.tracing.otlp``), while the node runs."""
        p2p: P2PHost
        """The libp2p host (``p2p:``): ``peer_id``, ``addrs``, ``peers()``, ``connect(addr)``."""
        protocols: Protocols
        """Request/response protocols between peers (``p2p:``)."""
        grpc: GrpcAccess
        """Channels to services by name, and the gRPC server (``grpc:``)."""
        http: HttpServer
        """The HTTP server (``http:``): add handlers to ``node.http.router`` before start."""
        events: Events
        """Typed events between the nodes of the channel (``events:``, with ``p2p:``)."""
        files: Any

    def __init__(
        self,
        manifest: Manifest,
        *,
        wiring: ModuleType | None = None,
        servicers: Mapping[str, Any] | None = None,
        components: Sequence[ComponentSpec] | None = None,
    ) -> None:
        """``wiring``: the generated ``gen.wiring`` module (default: imported from
        ``codegen.out`` beside the manifest). ``servicers``: instances by service
        name, used instead of constructing the manifest's ``impl`` classes.
        ``components``: the table to build from (default: :data:`~msuite.runtime.registry.COMPONENTS`)."""
        if components is None:
            components = COMPONENTS
        self.manifest = manifest
        self.state = "new"
        self.started_in: float | None = None
        """Seconds from the start call until the last component started."""
        self._table = tuple(components)
        self._accessors = {name: spec for spec in self._table for name in spec.accessors}
        self._wiring = wiring
        self._given_servicers = MappingProxyType(dict(servicers or {}))
        self._built: dict[str, Component] = {}
        self._is_built = False
        self._building = False
        self._started: list[Component] = []
        self._started_at = 0.0
        self._lock = asyncio.Lock()
        self.status = StatusBoard(
            manifest.name,
            state=lambda: self.state,
            uptime=lambda: time.monotonic() - self._started_at if self._started_at else 0.0,
            services=self._services_status,
            components=lambda: list(self._started),
            reserved=[spec.name for spec in self._table],
        )
        """``node.status``: the sections of ``GET /status``; add your own with ``add``."""

    # ------------------------------------------------------------------ what the manifest says

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def config(self) -> dict[str, Any]:
        """The manifest's ``config:`` section (the application's own settings)."""
        return self.manifest.config

    @property
    def wiring(self) -> ModuleType | None:
        """The generated ``wiring`` module once built (None for a node without services)."""
        return self._wiring

    @property
    def given_servicers(self) -> Mapping[str, Any]:
        """Servicer instances passed to the constructor, by service name (read-only)."""
        return self._given_servicers

    # ------------------------------------------------------------------ accessors

    def __getattr__(self, name: str) -> Any:
        """``node.<accessor>``: what the component table says, building the node first."""
        if name.startswith("_"):
            raise AttributeError(name)
        spec = self.__dict__.get("_accessors", {}).get(name)
        if spec is None:
            planned = planned_key(name)
            if planned is not None:
                raise NotConfigured(name, planned)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if not spec.enabled(self.manifest):
            raise NotConfigured(name, ".".join(spec.key))
        self.build()
        built = self._built
        return spec.accessors[name](built[spec.name], MappingProxyType(built))

    def shared(self, namespace: str, on_change: OnChange | None = None) -> SharedStore:
        """Namespace ``namespace`` of the store shared by the nodes of the channel
        (``storage.shared``; see ``docs/storage.md``): the item store's API, replicated.

        The same object on every call for one namespace; ``on_change(key, value, origin)`` is
        added to its callbacks. Works while the node runs (and in user code's constructors)."""
        from .shared.shared import Shared

        if self.manifest.storage.shared is None or self.manifest.p2p is None:
            raise NotConfigured("shared", "storage.shared")
        component = self.component("shared")
        assert isinstance(component, Shared)
        return component.namespace(namespace, on_change)

    def component(self, name: str) -> Component:
        """The built component ``name`` (building the node first); :class:`NotConfigured` when absent."""
        self.build()
        found = self._built.get(name)
        if found is None:
            spec = next((s for s in self._table if s.name == name), None)
            if spec is None:
                raise KeyError(f"no component is named {name!r}")
            raise NotConfigured(name, ".".join(spec.key))
        return found

    # ------------------------------------------------------------------ building

    def build(self) -> None:
        """Build the components the manifest enables (nothing starts; once only).

        Every configuration error is raised here, at its manifest position."""
        if self._is_built:
            return
        if self._building:
            raise ComponentError(
                "a component factory used the node while it is being built: take what it needs "
                "with context.require(...) or context.use(...)"
            )
        if self.state != "new":
            raise NodeError(f"node {self.name} is {self.state}: it cannot be built again")
        refuse_planned(self.manifest)
        built: dict[str, Component] = {}
        self._building = True
        try:
            self._wiring, bindings = load_bindings(self.manifest, self._wiring)
            for spec in self._table:
                if not spec.enabled(self.manifest):
                    continue
                context = BuildContext(
                    self.manifest, self, built, spec, bindings=bindings, wiring=self._wiring
                )
                component = spec.build(context)
                if component.name != spec.name or tuple(component.requires) != context.dependencies:
                    raise ComponentError(
                        f"component {spec.name!r} was built as {component.name!r} requiring "
                        f"{tuple(component.requires)}; its spec says {context.dependencies}"
                    )
                built[spec.name] = component
            start_order(list(built.values()))  # refuse a bad graph before anything starts
        except ModuleNotFoundError as exc:
            raise missing_extra(self.manifest, self._table, exc) from exc
        finally:
            self._building = False
        self._built = built
        self._is_built = True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Build and start every component, in the documented order."""
        async with self._lock:
            if self.state != "new":
                raise NodeError(f"node {self.name} was started already (state: {self.state})")
            began = time.perf_counter()
            try:
                self.build()
            except BaseException:
                self.state = "failed"
                raise
            self.state = "starting"
            for component in start_order(list(self._built.values())):
                try:
                    await component.start()
                except BaseException as exc:
                    log.debug("component %s failed to start", component.name, exc_info=True)
                    self.state = "failed"
                    await self._stop_started(self.manifest.shutdown.grace.total_seconds())
                    if isinstance(exc, ModuleNotFoundError):
                        exc = missing_extra(self.manifest, self._table, exc)
                    if isinstance(exc, Exception):
                        raise StartError(component.name, exc) from exc
                    raise
                self._started.append(component)
            self.state = "running"
            self._started_at = time.monotonic()
            self.started_in = time.perf_counter() - began
            log.info("node %s running (%.0f ms)", self.name, self.started_in * 1000)

    async def stop(self) -> None:
        """Drain and stop every started component in reverse order (within ``shutdown.grace``)."""
        async with self._lock:
            if self.state in ("stopped", "new"):
                self.state = "stopped"
                return
            self.state = "draining"
            errors = await self._stop_started(self.manifest.shutdown.grace.total_seconds())
            self.state = "stopped"
            if errors:
                raise ExceptionGroup(f"node {self.name} did not stop cleanly", errors)

    async def _stop_started(self, grace: float) -> list[Exception]:
        """Tell every started component the node drains, then stop each (reverse start order),
        collecting every error instead of stopping at the first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        errors: list[Exception] = []
        started = list(reversed(self._started))
        for component in started:
            draining = getattr(component, "draining", None)
            if draining is not None:
                try:
                    await draining()
                except Exception as exc:
                    errors.append(exc)
        for component in started:
            try:
                await component.stop(max(0.0, deadline - loop.time()))
            except Exception as exc:
                log.error("component %s failed to stop", component.name, exc_info=exc)
                errors.append(exc)
            self._started.remove(component)
        return errors

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ introspection

    def _services_status(self) -> dict[str, Any]:
        """Each declared service: its proto, impl, and the addresses it is served on."""
        server = self._built.get("grpc")
        served_on = [listener.address for listener in getattr(server, "listeners", ())]
        return {
            name: {"proto": service.proto, "impl": service.impl, "served_on": served_on}
            for name, service in self.manifest.services.items()
        }

    @property
    def components(self) -> list[str]:
        """Names of the started components, in start order."""
        return [c.name for c in self._started]

    def listeners(self) -> list[tuple[str, str]]:
        """``(listener, address)`` of every bound listener, for readiness lines: each component's
        ``addresses()``, in start order."""
        return [found for component in self._started for found in _addresses_of(component)]


def _addresses_of(component: Component) -> list[tuple[str, str]]:
    addresses: Callable[[], list[tuple[str, str]]] | None = getattr(component, "addresses", None)
    return addresses() if addresses is not None else []
