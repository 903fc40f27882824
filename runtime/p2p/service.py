"""The one shape of a service on the libp2p host (mesher, pubsub, protocols, mDNS, DHT, gRPC dialer).

A service is added to :class:`~msuite.runtime.p2p.host.P2PHost` before the
node starts (``host.add_service(service)``); the host runs every service in
its trio thread, in the order they were added, once its listener is up::

    class Service(Protocol):
        name: str
        async def run(self, host, bridge, *, task_status) -> None: ...
        def status(self) -> Any: ...

Rules:

- ``run`` serves until cancelled: it sets its stream handlers, calls
  ``task_status.started()`` once it serves, and never returns early on its
  own. The host starts the next service only after that call, so a service
  may rely on those added before it. On stop the host cancels every service
  at once; cleanup that must happen goes in ``finally`` (shielded, bounded).
- ``host`` is the py-libp2p host and ``bridge`` the
  :class:`~msuite.runtime.p2p.bridge.Bridge`: every crossing to the asyncio
  loop goes through the bridge.
- ``peer_connected(peer_id)`` and ``peer_disconnected(peer_id)``, when a
  service has them, are called synchronously in the trio thread as peers come
  and go (base58 peer IDs); they must not block.
- A ``run`` that raises before ``started()`` fails the host's start; one
  that raises (or returns) after is logged and listed in the host's
  ``failed`` (and ``/status``: the node is unhealthy, gRPC health
  NOT_SERVING), and the host and the other services go on. The host runs it
  again after 0.5 s, then 1, 2, ... up to 30 s between tries (back to 0.5 s
  after a run of a minute or more); once it has started again it leaves
  ``failed``. A service that cannot be run again on the same host sets
  ``restartable = False``: it stays failed and the node stays unhealthy.
- ``status()`` is read from the asyncio side for ``/status``: return a
  snapshot built from values replaced as a whole, never iterate state the
  trio thread mutates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from .bridge import Bridge

__all__ = ["P2PService"]


@runtime_checkable
class P2PService(Protocol):
    """A service run by the libp2p host in its trio thread (see the module's rules)."""

    name: str

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        """Serve until cancelled; ``task_status.started()`` once serving."""

    def status(self) -> Any:
        """A JSON-able snapshot for ``/status``."""
