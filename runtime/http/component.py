"""Component ``http`` (``http:``; ``node.http``): the aiohttp server.

Built with everything that can fail on configuration: ``http.tls``'s files
are read and checked, the gateway's routes are compiled (a bad template is
reported at its service's manifest line before any port is bound), ``GET
/metrics`` is registered when the node has ``metrics``, the file routes
(``/ipfs``) when it has ``files``. Users add their
handlers to ``node.http.router`` between build and start; at start
``/status`` and the gateway's routes are added after them, the hooks are
frozen and the pipeline is composed. Handlers are user code, so ``http``
uses every subsystem user code may use, and ``grpc`` (the gateway's calls go
through it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import USER_CODE_USES, BuildContext, ComponentSpec, Extra

if TYPE_CHECKING:
    from .app import HttpServer

__all__ = ["HTTP"]


def _build(context: BuildContext) -> HttpServer:
    from msuite.runtime.auth.component import AuthComponent
    from msuite.runtime.diagnostics.component import MetricsComponent, call_hooks
    from msuite.runtime.grpc.clients import GrpcClients
    from msuite.runtime.grpc.tls import server_tls

    from .app import HttpServer

    manifest = context.manifest
    assert manifest.http is not None
    tls = server_tls(manifest, ("http", "tls"), manifest.http.tls) if manifest.http.tls is not None else None
    auth = context.use("auth", AuthComponent)
    clients = context.use("clients", GrpcClients)
    routes = tuple(getattr(context.wiring, "ROUTES", ())) if context.bindings else ()
    server = HttpServer(
        manifest,
        auth=(lambda: auth.current) if auth is not None else None,
        status=context.node.status.report if manifest.diagnostics.status else None,
        routes=routes,
        channel=clients.own_channel if clients is not None and manifest.grpc is not None else None,
        tls=tls,
        requires=context.dependencies,
    )
    server.hooks.extend(call_hooks(context))
    metrics = context.use("metrics", MetricsComponent)
    if metrics is not None:
        server.router.add_get("/metrics", metrics.metrics.serve)
    if manifest.files is not None and manifest.p2p is not None:
        from msuite.runtime.files.files import Files
        from msuite.runtime.files.gateway import add_routes

        files = context.use("files", Files)
        if files is not None:
            add_routes(server.router, files, max_body_size=manifest.http.max_body_size)
    return server


def _http(component: HttpServer, built: Mapping[str, Any]) -> HttpServer:
    return component


HTTP = ComponentSpec(
    "http",
    _build,
    enabled=lambda m: m.http is not None,
    key=("http",),
    uses=(*USER_CODE_USES, "grpc"),
    accessors={"http": _http},
    extras=(Extra("aiohttp", "http", ("http",)),),
)
