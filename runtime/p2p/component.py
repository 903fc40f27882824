"""Components ``p2p`` (``p2p:``; ``node.p2p``, ``node.protocols``) and ``grpc_p2p`` (``grpc.p2p``).

- ``p2p`` is the libp2p host (:class:`~msuite.runtime.p2p.host.P2PHost`) with
  its services: the mesher, protocols, pubsub and the gRPC dialer always, the
  DHT with ``discovery.dht`` and mDNS with ``discovery.mdns``.
- ``grpc_p2p`` serves the node's gRPC server over libp2p. It requires
  ``grpc`` and ``p2p``, so it starts once the server is bound: only then is
  the stream handler set and are the services announced to peers (the
  mesher's directory, the DHT's provider records). It is the last line of
  the table, so it is the first told the node drains: it withdraws the
  services from peers before any server stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec, Extra

if TYPE_CHECKING:
    from msuite.runtime.grpc.server import GrpcServer

    from .host import P2PHost
    from .protocols import Protocols

__all__ = ["GRPC_P2P", "P2P", "WITHDRAW_TIMEOUT", "GrpcOverP2P"]

log = logging.getLogger("msuite.p2p.grpc")

WITHDRAW_TIMEOUT = 5.0
"""Longest the drain waits for the services to be withdrawn from peers, in seconds."""


def _build_host(context: BuildContext) -> P2PHost:
    from msuite.runtime.repo.component import RepoComponent

    from .host import P2PHost

    manifest = context.manifest
    assert manifest.p2p is not None
    host = P2PHost(manifest, context.require("repo", RepoComponent))
    if manifest.discovery.dht:
        from .dht import Dht

        host.add_service(Dht(lambda: host.mesher.services))
    if manifest.discovery.mdns:
        from .mdns import Mdns

        host.add_service(Mdns(manifest.p2p.host))
    return host


def _p2p(component: P2PHost, built: Mapping[str, Any]) -> P2PHost:
    return component


def _protocols(component: P2PHost, built: Mapping[str, Any]) -> Protocols:
    return component.protocols


P2P = ComponentSpec(
    "p2p",
    _build_host,
    enabled=lambda m: m.p2p is not None,
    key=("p2p",),
    requires=("repo",),
    accessors={"p2p": _p2p, "protocols": _protocols},
    extras=tuple(Extra(module, "p2p", ("p2p",)) for module in ("libp2p", "trio", "multiaddr")),
)


class GrpcOverP2P:
    """Component ``grpc_p2p``: the node's gRPC server, reachable by peers over libp2p."""

    name = "grpc_p2p"
    requires: tuple[str, ...] = ("grpc", "p2p")

    def __init__(self, server: GrpcServer, host: P2PHost, services: tuple[str, ...]) -> None:
        self.server = server
        self.host = host
        self.services = services
        self.state = "new"

    async def start(self) -> None:
        await self.host.serve_grpc(self.server.local_target, self.services)
        self.state = "serving"

    async def draining(self) -> None:
        await self._withdraw()

    async def stop(self, grace: float) -> None:
        await self._withdraw()

    async def _withdraw(self) -> None:
        if self.state == "serving":
            self.state = "withdrawn"
            try:  # bounded: a stuck trio thread must not hold up the rest of the drain
                await asyncio.wait_for(self.host.withdraw_grpc(), WITHDRAW_TIMEOUT)
            except TimeoutError:
                log.warning("withdrawing gRPC over libp2p took over %.0f s; going on", WITHDRAW_TIMEOUT)

    def status(self) -> dict[str, Any]:
        from .grpc_tunnel import PROTOCOL

        return {"state": self.state, "protocol": PROTOCOL, "services": list(self.services)}


def _build_grpc_p2p(context: BuildContext) -> GrpcOverP2P:
    from msuite.runtime.grpc.server import GrpcServer

    from .host import P2PHost

    return GrpcOverP2P(
        context.require("grpc", GrpcServer),
        context.require("p2p", P2PHost),
        tuple(context.manifest.services),
    )


GRPC_P2P = ComponentSpec(
    "grpc_p2p",
    _build_grpc_p2p,
    enabled=lambda m: m.grpc is not None and m.grpc.p2p and m.p2p is not None,
    key=("grpc", "p2p"),
    requires=("grpc", "p2p"),
)
