"""The node: a manifest turned into running components.

``Node(manifest)`` builds nothing until :meth:`Node.start` (or ``async with
node:``). Start builds the components the manifest enables, then starts them
in this fixed order (requirements first, then the order below), and stops them
in exact reverse:

=========  ============================================  =====================
start      component                                     present when
=========  ============================================  =====================
1          ``repo`` (repository, key-value store)        always
2          ``auth`` (JWT, ACL kept in the repo)          ``auth:``
3          ``tasks`` (task manager)                      always
4          ``locker`` (distributed locks)                ``locker:``
5          ``tracing`` (tracer, span reporter thread)    ``diagnostics.tracing``
6          ``p2p`` (libp2p host in its trio thread,      ``p2p:``
           bootstrap, protocols)
7          ``clients`` (channels by service name)        always
8          ``grpc`` (server; ``impl`` classes built)     ``grpc:``
9          ``http`` (handlers, status, metrics, debug,   ``http:``
           gateway)
=========  ============================================  =====================

Observers are attached when the node is built, before anything starts: the
gRPC server's call hooks and the HTTP server's request hooks run metrics, then
tracing (``diagnostics.metrics``, ``diagnostics.tracing``); the node's gRPC
channels carry the tracing client interceptor.

So transports stop accepting first (``http``, then ``grpc``, each draining
in-flight calls within what is left of ``shutdown.grace``), then shared
resources close, and the repository closes very last. Before any component
stops, every started one is told the node is draining (gRPC health turns
NOT_SERVING at once). If a component fails to start, those already started
are stopped in reverse and :class:`StartError` names the failing one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import msuite
from msuite.spec import Manifest

from .components import Component, start_order
from .errors import NodeError, NotConfigured, NotSupported, StartError, where

if TYPE_CHECKING:
    import grpc.aio
    import opentracing

    from .auth import Auth
    from .diagnostics.metrics import NodeMetrics
    from .diagnostics.tracing import NodeTracing
    from .grpc.clients import GrpcClients
    from .grpc.server import GrpcServer
    from .http.app import HttpServer
    from .locks import Locker
    from .p2p.host import P2PHost
    from .p2p.protocols import Protocols
    from .repo import Repo
    from .store import Store
    from .tasks import TaskManager
    from .wiring import ServiceBinding

__all__ = ["Node", "StatusBoard"]

log = logging.getLogger("msuite.node")

# manifest keys that enable subsystems this version does not build yet, in manifest order
_NOT_BUILT = (
    (("storage", "shared"), lambda m: m.storage.shared is not None, "the shared CRDT store"),
    (("files",), lambda m: m.files, "file sharing"),
    (("events",), lambda m: bool(m.events), "events"),
)


class StatusBoard:
    """``node.status``: the sections of ``GET /status``; add your own with :meth:`add`."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._sections: dict[str, Callable[[], Any]] = {}

    def add(self, name: str, fn: Callable[[], Any]) -> None:
        """Add section ``name``: ``fn()`` (sync or async) returns its JSON-able content."""
        if name in self._sections or name in _CORE_SECTIONS:
            raise ValueError(f"status section {name!r} exists already")
        self._sections[name] = fn

    async def report(self) -> dict[str, Any]:
        """The whole status document."""
        node = self._node
        report: dict[str, Any] = {
            "node": node.name,
            "version": msuite.__version__,
            "state": node.state,
            "uptime_s": round(time.monotonic() - node._started_at, 3) if node._started_at else 0.0,
            "services": node._services_status(),
        }
        for component in node._started:
            if component.name == "repo":
                report["repo"] = await asyncio.to_thread(component.status)
            else:
                report[component.name] = component.status()
        for name, fn in self._sections.items():
            try:
                value = fn()
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                log.exception("status section %s failed", name)
                value = {"error": f"{type(exc).__name__}: {exc}"}
            report[name] = value
        return report


# the report's own keys and the component names: users' sections take other names
_CORE_SECTIONS = frozenset(
    {"node", "version", "state", "uptime_s", "services"}
    | {"repo", "auth", "tasks", "locker", "tracing", "p2p", "clients", "grpc", "http"}
)


class _RepoComponent:
    name = "repo"
    requires: tuple[str, ...] = ()

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.repo: Repo | None = None

    async def start(self) -> None:
        from .repo import Repo, RepoError

        try:
            self.repo = await asyncio.to_thread(Repo.for_manifest, self.manifest)
        except RepoError as exc:
            raise NodeError(f"{where(self.manifest, 'repo')}: {exc}") from None

    async def stop(self, grace: float) -> None:
        if self.repo is not None:
            repo, self.repo = self.repo, None
            await asyncio.to_thread(repo.close)

    def status(self) -> dict[str, Any]:
        return self.repo.status() if self.repo is not None else {"state": "closed"}


class _Wrapped:
    """A subsystem object with start/stop/status under a component name."""

    def __init__(
        self,
        name: str,
        target: Any,
        *,
        requires: tuple[str, ...] = (),
        start: Callable[[], Awaitable[None]] | None = None,
        stop: Callable[[float], Awaitable[None]],
    ) -> None:
        self.name = name
        self.requires = requires
        self.target = target
        self._start = start
        self._stop = stop

    async def start(self) -> None:
        if self._start is not None:
            await self._start()

    async def stop(self, grace: float) -> None:
        await self._stop(grace)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.target.status()
        return result


class _AuthComponent:
    """Component ``auth``: JWT and the ACL, whose entries live in the repo's ``acl`` space."""

    name = "auth"
    requires: tuple[str, ...] = ("repo",)

    def __init__(self, node: Node) -> None:
        self.node = node

    async def start(self) -> None:
        from .auth import Auth

        node = self.node
        assert node.manifest.auth is not None
        auth = Auth(node.manifest.auth, kv=node.repo.space("acl"))
        await auth.start()
        node._auth = auth
        if node._grpc is not None:
            node._grpc.set_auth(auth)
        if node._http is not None:
            node._http.set_auth(auth)

    async def stop(self, grace: float) -> None:
        if self.node._auth is not None:
            await self.node._auth.stop()

    def status(self) -> dict[str, Any]:
        return self.node._auth.status() if self.node._auth is not None else {"state": "stopped"}


class GrpcAccess:
    """``node.grpc``: channels to services by name, and the server when the node has one."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def client(self, service: str) -> grpc.aio.Channel:
        """A channel to ``service`` (static discovery, then this node's own services)."""
        return self._node._clients_component().channel(service)

    channel = client

    @property
    def server(self) -> GrpcServer:
        """The node's gRPC server component (``grpc:``)."""
        if self._node.manifest.grpc is None:
            raise NotConfigured("grpc.server", "grpc")
        if self._node._grpc is None:
            self._node._build()
        assert self._node._grpc is not None
        return self._node._grpc


class Node:
    """A node assembled from a manifest. ``async with Node(manifest) as node: ...``."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        wiring: ModuleType | None = None,
        servicers: Mapping[str, Any] | None = None,
    ) -> None:
        """``wiring``: the generated ``gen.wiring`` module (default: imported from
        ``codegen.out`` beside the manifest). ``servicers``: instances by service
        name, used instead of constructing the manifest's ``impl`` classes."""
        self.manifest = manifest
        self.status = StatusBoard(self)
        self.state = "new"
        self.started_in: float | None = None
        """Seconds from the start call until the last component started."""
        self._wiring = wiring
        self._given_servicers = dict(servicers or {})
        self._service_bindings: list[ServiceBinding] = []
        self._components: list[Component] = []
        self._started: list[Component] = []
        self._started_at = 0.0
        self._repo: _RepoComponent | None = None
        self._auth: Auth | None = None
        self._tasks: TaskManager | None = None
        self._locker: Locker | None = None
        self._clients: GrpcClients | None = None
        self._grpc: GrpcServer | None = None
        self._http: HttpServer | None = None
        self._metrics: NodeMetrics | None = None
        self._tracing: NodeTracing | None = None
        self._p2p: P2PHost | None = None
        self._protocols: Protocols | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ what the manifest says

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def config(self) -> dict[str, Any]:
        """The manifest's ``config:`` section (the application's own settings)."""
        return self.manifest.config

    # ------------------------------------------------------------------ accessors

    @property
    def repo(self) -> Repo:
        """The repository (``repo:``); open while the node runs."""
        if self._repo is None or self._repo.repo is None:
            raise NodeError("node.repo is open only while the node runs")
        return self._repo.repo

    @property
    def store(self) -> Store:
        """The item store in the repository."""
        return self.repo.store

    @property
    def tasks(self) -> TaskManager:
        """The task manager (``tasks:``; always present)."""
        if self._tasks is None:
            raise NodeError("node.tasks exists once the node has started")
        return self._tasks

    @property
    def auth(self) -> Auth:
        """JWT and ACLs (``auth:``)."""
        if self.manifest.auth is None:
            raise NotConfigured("auth", "auth")
        if self._auth is None:
            raise NodeError("node.auth exists once the node has started")
        return self._auth

    @property
    def locker(self) -> Locker:
        """Distributed locks (``locker:``)."""
        if self.manifest.locker is None:
            raise NotConfigured("locker", "locker")
        if self._locker is None:
            raise NodeError("node.locker exists once the node has started")
        return self._locker

    @property
    def grpc(self) -> GrpcAccess:
        """Clients by service name (always) and the gRPC server (``grpc:``)."""
        return GrpcAccess(self)

    @property
    def http(self) -> HttpServer:
        """The HTTP server (``http:``): add handlers to ``node.http.router`` before start."""
        if self.manifest.http is None:
            raise NotConfigured("http", "http")
        if self._http is None:
            self._build()
        assert self._http is not None
        return self._http

    @property
    def p2p(self) -> P2PHost:
        """The libp2p host (``p2p:``): ``peer_id``, ``addrs``, ``peers()``, ``connect(addr)``."""
        if self.manifest.p2p is None:
            raise NotConfigured("p2p", "p2p")
        if self._p2p is None:
            self._build()
        assert self._p2p is not None
        return self._p2p

    @property
    def events(self) -> Any:
        raise NotConfigured("events", "events")

    @property
    def protocols(self) -> Protocols:
        """Request/response protocols between peers (``p2p:``); register handlers before or after start."""
        if self.manifest.p2p is None:
            raise NotConfigured("protocols", "p2p")
        if self._protocols is None:
            self._build()
        assert self._protocols is not None
        return self._protocols

    @property
    def files(self) -> Any:
        raise NotConfigured("files", "files")

    def shared(self, namespace: str, on_change: Callable[..., Any] | None = None) -> Any:
        raise NotConfigured("shared", "storage.shared")

    @property
    def tracer(self) -> opentracing.Tracer:
        """The node's OpenTracing tracer (``diagnostics.tracing``), while the node runs."""
        if self.manifest.diagnostics.tracing is None:
            raise NotConfigured("tracer", "diagnostics.tracing")
        if self._tracing is None:
            raise NodeError("node.tracer exists once the node has started")
        return self._tracing.tracer

    @property
    def metrics(self) -> NodeMetrics:
        """The node's Prometheus registry and metric factories (``diagnostics.metrics``)."""
        if self.manifest.diagnostics.metrics is None:
            raise NotConfigured("metrics", "diagnostics.metrics")
        if self._metrics is None:
            self._build()
        assert self._metrics is not None
        return self._metrics

    def _clients_component(self) -> GrpcClients:
        if self._clients is None:
            raise NodeError("node.grpc clients exist once the node has started")
        return self._clients

    # ------------------------------------------------------------------ building

    def _refuse_unbuilt(self) -> None:
        problems = [
            f"{where(self.manifest, *path, prefer_key=True)}: {what} is not built by msuite "
            f"{msuite.__version__} yet; remove this key to run the node"
            for path, present, what in _NOT_BUILT
            if present(self.manifest)
        ]
        if problems:
            raise NotSupported("\n".join(problems))

    def _bindings(self) -> list[ServiceBinding]:
        if not self.manifest.services:
            return []
        if self._wiring is None:
            from .loading import load_wiring

            self._wiring = load_wiring(self.manifest)
        bindings: list[ServiceBinding] = list(self._wiring.SERVICES)
        generated = [b.name for b in bindings]
        if generated != list(self.manifest.services):
            raise NodeError(
                f"{where(self.manifest, 'services', prefer_key=True)}: the generated code serves "
                f"{', '.join(generated) or 'nothing'}, the manifest declares "
                f"{', '.join(self.manifest.services)}; run `msuite generate`"
            )
        return bindings

    def _build(self) -> None:
        """Create the components the manifest enables (nothing starts here)."""
        if self._components:
            return
        self._refuse_unbuilt()
        try:
            self._build_components()
        except ModuleNotFoundError as exc:
            raise _missing_extra(self.manifest, exc) from exc

    def _build_components(self) -> None:
        m = self.manifest
        bindings = self._bindings()
        routes = tuple(getattr(self._wiring, "ROUTES", ())) if bindings else ()
        components: list[Component] = []

        self._repo = _RepoComponent(m)
        components.append(self._repo)

        if m.auth is not None:
            components.append(_AuthComponent(self))

        from .tasks import TaskManager

        tasks = TaskManager.for_manifest(m)
        self._tasks = tasks
        components.append(_Wrapped("tasks", tasks, start=tasks.start, stop=tasks.stop))

        if m.locker is not None:
            locker = _make_locker(m)
            self._locker = locker

            async def close_locker(grace: float) -> None:
                await locker.close()

            components.append(_Wrapped("locker", locker, stop=close_locker))

        metrics = tracing = None
        if m.diagnostics.metrics is not None:
            from .diagnostics.metrics import NodeMetrics

            metrics = self._metrics = NodeMetrics(m.diagnostics.metrics)
            metrics.watch_tasks(tasks)
        if m.diagnostics.tracing is not None:
            from .diagnostics.tracing import NodeTracing

            tracing = self._tracing = NodeTracing(m.diagnostics.tracing, m.name)
            components.append(tracing)
        observers = [o for o in (metrics, tracing) if o is not None]

        if m.p2p is not None:
            from .p2p.host import P2PHost
            from .p2p.protocols import Protocols

            self._protocols = Protocols()
            self._p2p = P2PHost(self, self._protocols)
            components.append(self._p2p)

        from .grpc.clients import GrpcClients

        own_target = None
        if m.grpc is not None:

            def own_target() -> str:
                assert self._grpc is not None
                return self._grpc.local_target

        self._clients = GrpcClients(
            m.discovery.static,
            own_services=list(m.services),
            own_target=own_target,
            base_dir=m.base_dir,
            interceptors=tracing.client_interceptors() if tracing is not None else (),
            p2p=self._p2p.grpc_target if self._p2p is not None else None,
        )
        components.append(self._clients)

        resources = tuple(c.name for c in components)
        if m.grpc is not None:
            from .grpc.server import GrpcServer

            self._grpc = GrpcServer(m, bindings, make_servicers=self._make_servicers, requires=resources)
            self._grpc.hooks.extend(observers)
            components.append(self._grpc)

        if m.http is not None:
            from .http.app import HttpServer

            self._http = HttpServer(
                m,
                status=self.status.report if m.diagnostics.status else None,
                routes=routes,
                channel=self._clients.own_channel if m.grpc is not None else None,
                requires=resources + (("grpc",) if m.grpc is not None else ()),
            )
            self._http.hooks.extend(observers)
            if metrics is not None:
                self._http.router.add_get("/metrics", metrics.serve)
            if m.diagnostics.profiling:
                from .diagnostics.profiling import Profiling

                profiling = Profiling(max_seconds=300.0)
                profiling.add_to(self._http.router, prefix="/debug")
                self._http.on_draining.append(profiling.close)
            components.append(self._http)
        start_order(components)  # refuse a bad graph before anything starts
        self._components = components
        self._service_bindings = bindings

    def _make_servicers(self) -> dict[str, Any]:
        from .loading import construct, load_impl

        servicers: dict[str, Any] = {}
        for binding in self._service_bindings:
            given = self._given_servicers.get(binding.name)
            if given is not None:
                servicers[binding.name] = given
                continue
            cls = load_impl(self.manifest, binding.name)
            try:
                servicers[binding.name] = construct(cls, self)
            except Exception as exc:
                raise NodeError(
                    f"{where(self.manifest, 'services', binding.name, 'impl')}: "
                    f"{self.manifest.services[binding.name].impl}(...) raised {type(exc).__name__}: {exc}"
                ) from exc
        return servicers

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Build and start every component, in the documented order."""
        async with self._lock:
            if self.state != "new":
                raise NodeError(f"node {self.name} was started already (state: {self.state})")
            began = time.perf_counter()
            self.state = "starting"
            try:
                self._build()
            except BaseException:
                self.state = "failed"
                raise
            order = start_order(self._components)
            for component in order:
                try:
                    await component.start()
                except BaseException as exc:
                    log.debug("component %s failed to start", component.name, exc_info=True)
                    self.state = "failed"
                    await self._stop_started(self.manifest.shutdown.grace.total_seconds())
                    if isinstance(exc, ModuleNotFoundError):
                        exc = _missing_extra(self.manifest, exc)
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
        served_on = [listener.address for listener in self._grpc.listeners] if self._grpc is not None else []
        return {
            name: {"proto": service.proto, "impl": service.impl, "served_on": served_on}
            for name, service in self.manifest.services.items()
        }

    @property
    def components(self) -> list[str]:
        """Names of the started components, in start order."""
        return [c.name for c in self._started]

    def listeners(self) -> list[tuple[str, str]]:
        """``(listener, address)`` of every bound listener, for readiness lines."""
        found: list[tuple[str, str]] = []
        if self._grpc is not None:
            found += [
                (f"grpc.{listener.kind}", listener.address)
                for listener in self._grpc.listeners
                if listener.kind != "private"  # reached through p2p, not by users
            ]
        if self._http is not None and self._http.address is not None:
            found.append(("http", self._http.address))
        if self._p2p is not None:
            found += [("p2p", address) for address in self._p2p.addrs]
        return found


# top-level module -> (the extra installing it, the manifest key needing it)
_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grpc": ("grpc", ("grpc",)),
    "grpc_health": ("grpc", ("grpc",)),
    "grpc_reflection": ("grpc", ("grpc",)),
    "google": ("grpc", ("grpc",)),
    "aiohttp": ("http", ("http",)),
    "jose": ("auth", ("auth",)),
    "plyvel": ("leveldb", ("storage", "kv")),
    "redis": ("redis", ("locker", "backend")),
    "aiozk": ("zookeeper", ("locker", "backend")),
    "prometheus_client": ("metrics", ("diagnostics", "metrics")),
    "jaeger_client": ("tracing", ("diagnostics", "tracing")),
    "opentracing": ("tracing", ("diagnostics", "tracing")),
    "thrift": ("tracing", ("diagnostics", "tracing")),
    "libp2p": ("p2p", ("p2p",)),
    "trio": ("p2p", ("p2p",)),
    "multiaddr": ("p2p", ("p2p",)),
}


def _missing_extra(manifest: Manifest, exc: ModuleNotFoundError) -> Exception:
    """A located error naming the extra to install, for a third-party module not installed."""
    module = (exc.name or "").partition(".")[0]
    known = _EXTRAS.get(module)
    if known is None:
        return exc
    extra, path = known
    return NodeError(
        f"{where(manifest, *path, prefer_key=True)}: needs the {extra} extra, which is not installed "
        f"(no module named {module!r}): pip install 'msuite[{extra}]'"
    )


def _make_locker(manifest: Manifest) -> Locker:
    settings = manifest.locker
    assert settings is not None
    if settings.backend == "redis":
        from .locks.redis import RedisLocker

        return RedisLocker.from_settings(settings, manifest.base_dir)
    if settings.backend == "zookeeper":
        from .locks.zookeeper import ZooKeeperLocker

        return ZooKeeperLocker.from_settings(settings)
    from .locks import MemoryLocker

    return MemoryLocker()
