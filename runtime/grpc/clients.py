"""Channels to services by name (component ``clients``, ``node.grpc.client(name)``).

A full proto service name resolves, in this order:

1. ``discovery.static``: ``host:port``, ``[::1]:port``, ``unix:/path`` or
   ``unix-abstract:NAME``;
2. the services this node serves itself (over its Unix socket when it has
   one, else its TCP port);
3. with ``p2p:``, connected peers that serve it over libp2p (``grpc.p2p``),
   the first by peer ID (``node.p2p.find_service(name)`` waits for one).

With ``discovery.tls``, the ``host:port`` addresses of ``discovery.static``
are dialled over TLS (trusting its ``ca``, presenting its ``cert`` when set);
Unix sockets, the node's own server and p2p peers are dialled as before.

A name that resolves nowhere raises :class:`ServiceNotFound` naming what was
tried. Channels are cached per target and closed when the node stops. Calls
made through them carry the caller's metadata, plus the trace context when
``diagnostics.tracing`` is on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NodeError

if TYPE_CHECKING:
    import grpc.aio

    from .tls import ClientMaterial

__all__ = ["GrpcClients", "ServiceNotFound", "target_of"]


class ServiceNotFound(NodeError, LookupError):
    """No address is known for a service name."""


def target_of(address: str, base_dir: Path | None = None) -> str:
    """The grpc target for a ``discovery.static`` address (relative socket paths from ``base_dir``)."""
    if address.startswith("unix:") and not address.startswith("unix://"):
        path = Path(address[len("unix:") :])
        if not path.is_absolute() and base_dir is not None:
            return f"unix:{base_dir / path}"
    return address  # host:port, [v6]:port and unix-abstract:NAME are grpc targets as they are


class GrpcClients:
    """Component ``clients``: resolves service names to cached grpc.aio channels."""

    name = "clients"

    def __init__(
        self,
        static: Mapping[str, str],
        *,
        own_services: Collection[str] = (),
        own_target: Callable[[], str] | None = None,
        options: list[tuple[str, Any]] | None = None,
        base_dir: Path | None = None,
        traced: Callable[[str], Sequence[grpc.aio.ClientInterceptor]] | None = None,
        named_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        p2p: Callable[[str], str | None] | None = None,
        tls: ClientMaterial | None = None,
        requires: tuple[str, ...] = (),
    ) -> None:
        """``tls`` (``discovery.tls``, checked at build) secures the channels to the static
        ``host:port`` addresses. ``traced(target)`` gives the tracing interceptors of the
        channel to ``target`` (every channel). ``named_interceptors`` run after them on the
        channels of calls by name only (the node's own credential), never on
        :meth:`own_channel`'s."""
        self.requires = requires
        self._static = {name: target_of(address, base_dir) for name, address in static.items()}
        self._tls = tls
        self._secure = frozenset(
            target for target in self._static.values() if tls is not None and not target.startswith("unix")
        )
        self._own_services = frozenset(own_services)
        self._own_target = own_target
        self._options = options or []
        self._traced = traced
        self._named_interceptors = list(named_interceptors)
        self._p2p = p2p
        self._channels: dict[tuple[str, bool], grpc.aio.Channel] = {}
        self._closed = False

    def serve_locally(self, services: Collection[str], target: Callable[[], str]) -> None:
        """This node serves ``services`` at ``target()`` (the gRPC server says so at build)."""
        self._own_services = frozenset(services)
        self._own_target = target

    def resolve(self, service: str) -> str:
        """The target ``service`` is reached at; :class:`ServiceNotFound` when none."""
        address = self._static.get(service)
        if address is not None:
            return address
        if service in self._own_services and self._own_target is not None:
            return self._own_target()
        if self._p2p is not None:
            target = self._p2p(service)
            if target is not None:
                return target
        tried = ["discovery.static (" + (", ".join(sorted(self._static)) or "empty") + ")"]
        tried.append("this node's services (" + (", ".join(sorted(self._own_services)) or "none") + ")")
        if self._p2p is not None:
            tried.append("connected p2p peers (none serves it)")
        raise ServiceNotFound(f"no address for service {service!r}: tried " + "; ".join(tried))

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to ``service`` (cached; closed with the node); its calls carry the node's
        credential (``auth.outgoing``) when they carry no ``authorization`` of their own."""
        return self.channel_to(self.resolve(service), named=True)

    client = channel

    def channel_to(self, target: str, *, named: bool = False) -> grpc.aio.Channel:
        """A cached channel to a grpc target (``named``: with the node's credential)."""
        if self._closed:
            raise NodeError("the node's clients are closed")
        channel = self._channels.get((target, named))
        if channel is None:
            import grpc.aio  # here, not at import: a node that never dials needs no grpc

            interceptors = [*self._traced(target)] if self._traced is not None else []
            if named:
                interceptors += self._named_interceptors
            if self._tls is not None and target in self._secure:
                channel = grpc.aio.secure_channel(
                    target,
                    self._tls.grpc_credentials(),
                    options=self._options,
                    interceptors=interceptors or None,
                )
            else:
                channel = grpc.aio.insecure_channel(
                    target, options=self._options, interceptors=interceptors or None
                )
            self._channels[(target, named)] = channel
        return channel

    def own_channel(self) -> grpc.aio.Channel:
        """A channel to this node's own gRPC server (the gateway's)."""
        if self._own_target is None:
            raise NodeError("this node has no gRPC server")
        return self.channel_to(self._own_target())

    async def start(self) -> None:
        self._closed = False

    async def stop(self, grace: float) -> None:
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)

    def status(self) -> dict[str, Any]:
        return {
            "static": dict(self._static),
            "tls": sorted(self._secure),
            "open_channels": sorted({target for target, _named in self._channels}),
        }
