"""Components ``clients`` (always; ``node.grpc``) and ``grpc`` (``grpc:``; ``node.grpc.server``).

- ``clients`` resolves service names to channels: ``discovery.static``, then
  the node's own services (the ``grpc`` component registers them at build),
  then peers over libp2p when the node has ``p2p``. Its channels carry the
  tracing interceptor when the node has ``tracing``.
- ``grpc`` is the server. Its ``impl`` classes are constructed at start with
  the node, so user code may reach any subsystem built before it: those are
  in its ``uses`` (:data:`USER_CODE_USES`), which puts them first in the start
  order. Its call hooks are ``metrics`` then ``tracing``; its auth step is the
  ``auth`` component's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import USER_CODE_USES, BuildContext, ComponentSpec, Extra
from msuite.runtime.errors import NodeError, NotConfigured, where

if TYPE_CHECKING:
    import grpc.aio

    from .clients import GrpcClients
    from .server import GrpcServer

__all__ = ["CLIENTS", "GRPC", "GrpcAccess"]

_GRPC_EXTRAS = tuple(
    Extra(module, "grpc", ("grpc",)) for module in ("grpc", "grpc_health", "grpc_reflection", "google")
)


class GrpcAccess:
    """``node.grpc``: channels to services by name, and the server when the node has one."""

    def __init__(self, clients: GrpcClients, server: GrpcServer | None) -> None:
        self._clients = clients
        self._server = server

    def client(self, service: str) -> grpc.aio.Channel:
        """A channel to ``service`` (static discovery, this node's own services, then p2p peers)."""
        return self._clients.channel(service)

    channel = client

    def target(self, service: str) -> str:
        """The grpc target ``service`` resolves to now (what :meth:`client` dials)."""
        return self._clients.resolve(service)

    @property
    def server(self) -> GrpcServer:
        """The node's gRPC server component (``grpc:``)."""
        if self._server is None:
            raise NotConfigured("grpc.server", "grpc")
        return self._server


def _build_clients(context: BuildContext) -> GrpcClients:
    from msuite.runtime.diagnostics.component import tracing_of

    from .clients import GrpcClients
    from .tls import client_tls

    manifest = context.manifest
    tracing = tracing_of(context)
    tls = client_tls(manifest, manifest.discovery.tls) if manifest.discovery.tls is not None else None
    p2p: Any = None
    if manifest.p2p is not None:  # libp2p is imported only by nodes that have it
        from msuite.runtime.p2p.host import P2PHost

        p2p = context.use("p2p", P2PHost)
    named: list[Any] = []
    outgoing = manifest.auth.outgoing if manifest.auth is not None else None
    if outgoing is not None:
        from msuite.runtime.auth.component import AuthComponent
        from msuite.runtime.auth.outgoing import Credential, OutgoingAuth

        auth = context.use("auth", AuthComponent)
        assert auth is not None  # auth.outgoing is part of auth:
        named.append(OutgoingAuth(Credential(outgoing, manifest.name, lambda: auth.current.jwt)))
    traced = None
    if tracing is not None:

        def traced(target: str) -> list[Any]:  # once per channel: a tunnel target reaches one peer
            return tracing.client_interceptors(target, p2p.dialer.peer_of(target) if p2p else None)

    return GrpcClients(
        manifest.discovery.static,
        base_dir=manifest.base_dir,
        traced=traced,
        named_interceptors=named,
        p2p=p2p.grpc_target if p2p is not None else None,
        tls=tls,
        requires=context.dependencies,
    )


def _grpc(component: GrpcClients, built: Mapping[str, Any]) -> GrpcAccess:
    return GrpcAccess(component, built.get("grpc"))


CLIENTS = ComponentSpec(
    "clients",
    _build_clients,
    uses=("tracing", "p2p", "auth"),
    accessors={"grpc": _grpc},
    extras=_GRPC_EXTRAS,
)


def _build_server(context: BuildContext) -> GrpcServer:
    from msuite.runtime.auth.component import AuthComponent
    from msuite.runtime.diagnostics.component import call_hooks

    from .clients import GrpcClients
    from .server import GrpcServer
    from .tls import server_tls

    manifest = context.manifest
    node = context.node
    assert manifest.grpc is not None
    tcp = manifest.grpc.tcp
    tls = server_tls(manifest, ("grpc", "tcp", "tls"), tcp.tls) if tcp is not None and tcp.tls else None
    bindings = context.bindings
    auth = context.use("auth", AuthComponent)

    from msuite.runtime.loading import construct, load_impl, user_frames

    # the impl classes are imported now (a bad `impl` is a build error), constructed at start
    classes = {
        binding.name: load_impl(manifest, binding.name)
        for binding in bindings
        if binding.name not in node.given_servicers
    }

    def make_servicers() -> dict[str, Any]:
        servicers: dict[str, Any] = {}
        for binding in bindings:
            given = node.given_servicers.get(binding.name)
            if given is not None:
                servicers[binding.name] = given
                continue
            cls = classes[binding.name]
            try:
                servicers[binding.name] = construct(cls, node)
            except Exception as exc:
                frames = user_frames(manifest, exc)  # where in the user's code it went wrong
                raise NodeError(
                    f"{where(manifest, 'services', binding.name, 'impl')}: "
                    f"{manifest.services[binding.name].impl}(...) raised {type(exc).__name__}: {exc}"
                    + (f"\n{frames}" if frames else "")
                ) from exc
        return servicers

    server = GrpcServer(
        manifest,
        bindings,
        make_servicers=make_servicers,
        auth=(lambda: auth.current) if auth is not None else None,
        tls=tls,
        requires=context.dependencies,
    )
    server.hooks.extend(call_hooks(context))
    context.require("clients", GrpcClients).serve_locally(manifest.services, lambda: server.local_target)
    if manifest.p2p is not None:  # the node is unhealthy while its p2p host or a p2p service is down
        from msuite.runtime.p2p.host import P2PHost

        p2p = context.use("p2p", P2PHost)
        if p2p is not None:
            p2p.on_health(lambda problem: server.set_problem("p2p", problem))
    return server


GRPC = ComponentSpec(
    "grpc",
    _build_server,
    enabled=lambda m: m.grpc is not None,
    key=("grpc",),
    requires=("clients",),
    uses=USER_CODE_USES,
    extras=_GRPC_EXTRAS,
)
