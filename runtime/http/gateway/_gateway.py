"""The gateway: a route table compiled once, then registered on an aiohttp router."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc.aio
from aiohttp import web
from google.protobuf import descriptor_pool

from msuite.runtime.errors import MsuiteError
from msuite.runtime.wiring import Route

from ._endpoint import Endpoint
from ._templates import aiohttp_path


class GatewayRouteError(MsuiteError, ValueError):
    """A gateway route that cannot work, found by :class:`Gateway` while it compiles its table.

    The message names the route: ``gateway route GET /v1/x (/pkg.Service/Method): <reason>``.
    ``service`` (the full proto service name, ``pkg.Service``) and ``full_method``
    (``/pkg.Service/Method``) locate it in the manifest; ``route`` is the route itself.
    """

    def __init__(self, route: Route, reason: str) -> None:
        super().__init__(f"gateway route {route.http_method} {route.path} ({route.full_method}): {reason}")
        self.route = route
        self.service = route.service
        self.full_method = route.full_method


class Gateway:
    """Serves gateway routes over a gRPC channel (see the package's docstring for the rules).

    ``__init__`` compiles every route (no I/O, and ``channel`` is not called:
    a route that cannot work is a :class:`GatewayRouteError` before anything
    is served). ``channel()`` is called on each request and must be cheap: it
    returns the cached channel to the node's own gRPC server. A route's
    multicallable is made on its first request, and again only when
    ``channel()`` returns a different channel. ``timeout`` (seconds) bounds
    every call.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        channel: Callable[[], grpc.aio.Channel],
        *,
        timeout: float | None = None,
    ) -> None:
        self.channel_factory = channel
        self.timeout = timeout
        pool = descriptor_pool.Default()
        endpoints: list[Endpoint] = []
        taken: dict[tuple[str, str], Route] = {}
        for route in routes:
            try:
                method = pool.FindServiceByName(route.service).methods_by_name[route.method]
            except KeyError:
                raise GatewayRouteError(
                    route,
                    f"{route.full_method} is not in the protobuf descriptor pool "
                    "(import the generated wiring module first)",
                ) from None
            kind = ("stream" if method.client_streaming else "unary") + (
                "_stream" if method.server_streaming else "_unary"
            )
            if kind != route.kind:
                raise GatewayRouteError(route, f"the route says {route.kind}, the proto says {kind}")
            try:
                endpoint = Endpoint(self, route, method)
            except ValueError as exc:
                raise GatewayRouteError(route, str(exc)) from None
            clash = taken.setdefault((route.http_method, endpoint.path), route)
            if clash is not route:
                other = f"{clash.http_method} {clash.path} ({clash.full_method})"
                raise GatewayRouteError(route, f"the same path as {other}")
            endpoints.append(endpoint)
        # grpc-gateway's rule: a last segment ending in `:verb` goes to the route with that verb
        # (same HTTP method) before any route whose last segment is a variable without a verb
        verbs: dict[str, set[str]] = {}
        for endpoint in endpoints:
            if endpoint.verb:
                verbs.setdefault(endpoint.route.http_method, set()).add(endpoint.verb)
        for endpoint in endpoints:
            endpoint.path = aiohttp_path(
                endpoint.pieces, endpoint.verb, sorted(verbs.get(endpoint.route.http_method, ()))
            )
        self._endpoints = tuple(endpoints)
        self._resources: dict[web.AbstractRoute, str] = {}

    def add_to(
        self, router: web.UrlDispatcher, templates: dict[web.AbstractRoute, str] | None = None
    ) -> None:
        """Register one aiohttp route per gateway route, in table order.

        ``templates`` receives each added route's path template as the proto
        declares it (``/v1/notes/{id}``), for metric labels and span names."""
        for endpoint in self._endpoints:
            added = router.add_route(endpoint.route.http_method, endpoint.path, endpoint.handle)
            self._resources[added] = endpoint.full_method
            if templates is not None:
                templates[added] = endpoint.route.path

    def resource_of(self, request: web.Request) -> str | None:
        """The gRPC full method (``/pkg.Service/Method``) a request was routed to, else None."""
        return self._resources.get(request.match_info.route)
