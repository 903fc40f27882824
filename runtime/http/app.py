"""The node's HTTP server (component ``http``, ``node.http``): users' handlers, gateway, status.

The request pipeline is one aiohttp middleware composed once at start (each
extra aiohttp middleware layer costs time on every request). Its steps,
outermost first, fixed:

1. **Access log**: one line per request on logger ``msuite.http.access``
   (method, path, status, milliseconds), when ``http.access_log`` is on.
2. **Recovery**: an exception escaping a handler becomes a 500 with
   ``{"code": 13, "message": "internal error"}``; the stack is logged, never sent.
3. **Call hooks** (metrics and tracing, filled in by diagnostics).
4. **CORS** (``http.cors``): preflight requests are answered here, before
   authentication; every response to an allowed origin carries its headers.
5. **Authentication and ACL** on the request path (no query string): a
   present but invalid token is 401, too low a role 403, both as JSON.

With ``http.tls`` the server speaks HTTPS only (TLS 1.2 at least); with its
``client_ca``, a client without a certificate from those CAs is refused at
the handshake, before any of the pipeline runs.

Routes: ``GET /metrics`` (``diagnostics.metrics``) and the ``/debug/`` pages
(``diagnostics.profiling``), users' own (``node.http.router``, added before
start), ``GET /status`` (``diagnostics.status``), then the gateway's (``http.gateway``),
whose calls go through the gRPC server and its interceptors, so a gateway call
is also checked against the gRPC method it reaches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from msuite.runtime.auth import AuthError, SeveralCredentials, set_principal
from msuite.spec import Manifest

from ..codes import GrpcCode
from ..components import HookList
from ..errors import NodeError, where
from .connections import Connections, guard, open_files_cap
from .errors import error_response
from .limits import header_limit

if TYPE_CHECKING:
    import grpc.aio

    from msuite.runtime.auth import Auth
    from msuite.runtime.grpc.tls import ServerMaterial
    from msuite.runtime.wiring import Route

    from .gateway import Gateway

__all__ = ["ROUTE_TEMPLATES", "UNMATCHED", "HttpHook", "HttpServer", "route_of"]

log = logging.getLogger("msuite.http")
access_log = logging.getLogger("msuite.http.access")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


ROUTE_TEMPLATES = web.AppKey("msuite_route_templates", dict)
"""Route -> the template to show for it, where it differs from aiohttp's (the gateway's)."""

UNMATCHED = "(unmatched)"
"""The route of a request no route matched (a 404 or 405)."""


def route_of(request: web.Request) -> str:
    """The route template ``request`` matched (bounded, unlike its path), for labels and span names."""
    route = request.match_info.route
    templates: dict[Any, str] | None = request.app.get(ROUTE_TEMPLATES)
    if templates:
        template = templates.get(route)
        if template is not None:
            return template
    resource = route.resource
    return resource.canonical if resource is not None else UNMATCHED


_KEPT_ERROR_HEADERS = frozenset({"allow", "retry-after", "www-authenticate"})
"""Headers of an aiohttp error kept on its JSON answer (``Allow`` on a 405...)."""


def _message(error: web.HTTPException) -> str:
    """A handler's own text (``web.HTTPBadRequest(text=...)``), else the status's reason."""
    text = error.text
    if text and text != f"{error.status}: {error.reason}":
        return text
    return error.reason.lower()


class HttpHook(Protocol):
    """Observes every request (metrics, tracing): ``begin`` returns the callback for its end.

    ``route`` is the request's route template (:func:`route_of`), found once per
    request for all hooks."""

    def begin(self, request: web.Request, route: str) -> Callable[[int, float], None]: ...


class HttpServer:
    """Component ``http``: an aiohttp server bound to ``http.host``:``http.port``."""

    name = "http"

    def __init__(
        self,
        manifest: Manifest,
        *,
        auth: Callable[[], Auth] | None = None,
        status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        routes: Sequence[Route] = (),
        channel: Callable[[], grpc.aio.Channel] | None = None,
        tls: ServerMaterial | None = None,
        requires: tuple[str, ...] = (),
    ) -> None:
        """``auth`` returns the started auth (called once, at start); ``routes`` are the gateway's,
        compiled here (a bad one raises :class:`NodeError` at its service's manifest line) and
        served through ``channel()``, the node's channel to its own gRPC server; ``tls`` is
        ``http.tls``'s material, read and checked at build."""
        assert manifest.http is not None
        self.manifest = manifest
        self.settings = manifest.http
        self.requires = requires
        self.app = web.Application(client_max_size=self.settings.max_body_size)
        self.app[ROUTE_TEMPLATES] = {}
        self.hooks: HookList[HttpHook] = HookList("HTTP request hooks")
        self.state = "new"
        self.address: str | None = None
        self.port: int | None = None
        self._auth = auth
        self._tls = tls
        self._status = status
        self._gateway = self._compile_gateway(routes, channel) if self.settings.gateway else None
        self._runner: web.AppRunner | None = None
        self.connections: Connections | None = None
        """The open connections, their timeouts and cap (:mod:`.connections`), once started."""

    def _compile_gateway(
        self, routes: Sequence[Route], channel: Callable[[], grpc.aio.Channel] | None
    ) -> Gateway | None:
        if not routes or channel is None:
            return None
        from .gateway import Gateway

        try:
            return Gateway(routes, channel)
        except ValueError as exc:
            service = getattr(exc, "service", None)
            at = ("services", service) if isinstance(service, str) else ("http", "gateway")
            raise NodeError(f"{where(self.manifest, *at)}: {exc}") from None

    @property
    def router(self) -> web.UrlDispatcher:
        """Add your own handlers here before the node starts."""
        return self.app.router

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._status is not None:
            self.router.add_get("/status", self._serve_status)
        if self._gateway is not None:  # after the users' routes, which win a clash
            self._gateway.add_to(self.router, self.app[ROUTE_TEMPLATES])
        self.hooks.freeze()
        self.app.middlewares.append(self._pipeline())
        grace = self.manifest.shutdown.grace.total_seconds()
        limit = header_limit(self.manifest)
        settings = self.settings
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=grace,
            max_line_size=limit,
            max_field_size=limit,
            # a backstop only: the connection table closes idle and unfinished connections first
            keepalive_timeout=(settings.keepalive_timeout + settings.header_timeout).total_seconds(),
        )
        await runner.setup()
        assert runner.server is not None
        cap = open_files_cap(settings.max_connections)
        if cap < settings.max_connections:
            log.debug(
                "http.max_connections lowered from %d to %d (half the open-files limit)",
                settings.max_connections,
                cap,
            )
        connections = Connections(settings, cap=cap)
        # timeouts, the cap, and a request over the limits answered in JSON (431), nothing repeated
        guard(runner.server, connections)
        host, port = self.settings.host, self.settings.port
        ssl_context = self._tls.context if self._tls is not None else None
        site = web.TCPSite(runner, host, port, reuse_port=False, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise NodeError(
                f"{where(self.manifest, 'http', 'port')}: cannot listen on "
                f"{f'[{host}]' if ':' in host else host}:{port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        self.connections = connections
        connections.start()
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self._tls is not None else "http"
        self.address = f"{scheme}://{shown}:{self.port}"
        self.state = "serving"

    async def draining(self) -> None:
        self.state = "draining"

    async def stop(self, grace: float) -> None:
        """Close the listener, let in-flight requests finish (``shutdown.grace``), then close."""
        if self._runner is None:
            return
        self.state = "stopping"
        runner, self._runner = self._runner, None
        await runner.cleanup()
        if self.connections is not None:
            await self.connections.stop()
        self.state = "stopped"

    def addresses(self) -> list[tuple[str, str]]:
        """``("http", url)`` once listening (readiness lines); with TLS the URL is ``https://...``
        followed by `` (tls)`` or `` (mtls)``."""
        if self.address is None:
            return []
        return [("http", self.address + (f" ({self._tls.mode})" if self._tls is not None else ""))]

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "state": self.state,
            "address": self.address,
            "gateway": self.settings.gateway,
        }
        if self._tls is not None:
            report["tls"] = self._tls.mode
        if self.connections is not None:
            report["connections"] = self.connections.status()
        return report

    # ------------------------------------------------------------------ handlers

    async def _serve_status(self, request: web.Request) -> web.Response:
        assert self._status is not None
        report = await self._status()
        return web.json_response(report, dumps=lambda v: json.dumps(v, default=str, indent=2))

    # ------------------------------------------------------------------ the pipeline

    def _pipeline(self) -> Middleware:
        """The one middleware: access log, recovery, hooks, CORS, auth/ACL (in that order)."""
        auth = self._auth() if self._auth is not None else None
        hooks = tuple(self.hooks)
        log_access = self.settings.access_log
        origins = frozenset(self.settings.cors)
        any_origin = "*" in origins

        def cors_headers(request: web.Request) -> dict[str, str] | None:
            origin = request.headers.get("Origin")
            if origin is None or not origins:
                return None
            if any_origin:
                return {"Access-Control-Allow-Origin": "*"}
            if origin in origins:
                return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
            return None

        async def inner(request: web.Request, handler: Handler) -> web.StreamResponse:
            cors = cors_headers(request) if origins else None
            if cors is not None and request.method == "OPTIONS":
                wanted = request.headers.get("Access-Control-Request-Method")
                if wanted is not None:
                    cors.update(
                        {
                            "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                            "Access-Control-Allow-Headers": request.headers.get(
                                "Access-Control-Request-Headers", "Authorization, Content-Type"
                            ),
                            "Access-Control-Max-Age": "600",
                        }
                    )
                    return web.Response(status=204, headers=cors)
            if auth is not None:
                try:
                    credentials = request.headers.getall("Authorization", ())
                    if len(credentials) > 1:
                        raise SeveralCredentials()
                    set_principal(auth.authorize(request.path, credentials[0] if credentials else None))
                except AuthError as exc:
                    headers = dict(cors or {})
                    if exc.http_status == 401:
                        headers["WWW-Authenticate"] = "Bearer"
                    return error_response(exc.http_status, exc.grpc_number, str(exc), headers)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status >= 400:  # an unknown route, a wrong method, a handler's refusal: JSON
                    headers = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_ERROR_HEADERS}
                    headers.update(cors or {})
                    return error_response(
                        exc.status, GrpcCode.for_http_status(exc.status), _message(exc), headers
                    )
                if cors is not None:
                    exc.headers.update(cors)
                raise
            if cors is not None:
                response.headers.update(cors)
            return response

        @web.middleware
        async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            ends: list[Callable[[int, float], None]] = []
            try:
                if hooks:
                    route = route_of(request)
                    for hook in hooks:
                        ends.append(hook.begin(request, route))
                response = await inner(request, handler)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = 499
                raise
            except Exception as exc:
                log.error("%s %s raised %s", request.method, request.path, type(exc).__name__, exc_info=exc)
                return error_response(500, GrpcCode.INTERNAL, "internal error")
            finally:
                elapsed = time.perf_counter() - started
                for end in ends:
                    try:
                        end(status, elapsed)
                    except Exception:
                        log.exception("an HTTP hook failed")
                if log_access and access_log.isEnabledFor(logging.INFO):
                    access_log.info(
                        "%s %s %d %.1fms",
                        request.method,
                        request.path,
                        status,
                        elapsed * 1000,
                        extra={"remote": request.remote, "status": status},
                    )

        return pipeline
