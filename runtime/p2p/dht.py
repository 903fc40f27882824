"""The Kademlia DHT (``discovery.dht``): service names advertised and looked up.

py-libp2p's KadDHT in server mode (``/ipfs/kad/1.0.0``, so other libp2p
implementations share it), run in the host's trio nursery. Each gRPC
service the node serves over libp2p is advertised as a provider record under
the sha256 multihash of ``msuite/service/<name>``: at start, soon after new
peers connect (once a second at most), and every 10 minutes after, well
before records expire. Content (file sharing's roots) is advertised the same
way under its own multihash, as IPFS nodes do: :meth:`Dht.provide_key`.
Every DHT call is bounded (10 s): py-libp2p's can stall for ~20 s after a
peer leaves.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from .bridge import Bridge

__all__ = ["ADVERTISE_EVERY", "CALL_TIMEOUT", "Dht", "service_key"]

log = logging.getLogger("msuite.p2p.dht")

ADVERTISE_EVERY = 600.0
CALL_TIMEOUT = 10.0

IDENTIFY_WAIT = 5.0
"""Longest a new peer's identify is waited for before deciding whether it speaks the DHT."""


def service_key(service: str) -> str:
    """The DHT key of a service name: a sha256 multihash, in hex."""
    return "1220" + hashlib.sha256(f"msuite/service/{service}".encode()).hexdigest()


class Dht:
    """P2P service ``dht``: the Kademlia DHT and the node's advertisements (trio side)."""

    name = "dht"

    def __init__(self, services: Callable[[], Sequence[str]]) -> None:
        self._services = services
        """The services to advertise (those the node serves over libp2p now)."""
        self.advertised = 0
        """Completed advertisement rounds."""
        self.skipped = 0
        """Peers left out of the routing table: they do not speak the DHT protocol."""
        self._dht: Any = None
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._content: dict[str, None] = {}
        """Content keys (multihashes in hex) to advertise, in the order given."""

    @property
    def services(self) -> list[str]:
        return list(self._services())

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.tools.anyio_service import background_trio_service

        dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
        async with background_trio_service(dht), trio.open_nursery() as nursery:
            self._dht, self._nursery, self._host = dht, nursery, host
            task_status.started()
            try:
                await self._advertise_forever()
            finally:
                self._dht = self._nursery = None

    def peer_connected(self, peer_id: str) -> None:
        """Add the peer to the routing table and advertise soon (trio side)."""
        if self._nursery is None:
            return
        from libp2p.peer.id import ID

        self._nursery.start_soon(self._add, ID.from_base58(peer_id))
        self._wake.set()

    def provide_key(self, key: str) -> None:
        """Advertise this node as a provider of ``key`` (a multihash in hex) soon and every
        round after (trio side)."""
        if key not in self._content:
            self._content = {**self._content, key: None}
            self._wake.set()

    def wake(self) -> None:
        """Advertise soon (the services changed; trio side)."""
        self._wake.set()

    async def _add(self, peer_id: Any) -> None:
        """Add the peer to the routing table if it speaks the DHT protocol (identify tells; a peer
        without a DHT, such as a js-libp2p node without one, would only fail every lookup)."""
        from libp2p.kad_dht.common import PROTOCOL_ID

        dht = self._dht
        if dht is None:
            return
        with trio.move_on_after(IDENTIFY_WAIT):
            while True:
                try:
                    protocols = self._host.get_peerstore().get_protocols(peer_id) if self._host else []
                except Exception:  # not identified yet
                    protocols = []
                if protocols:
                    break
                await trio.sleep(0.05)
        if PROTOCOL_ID not in protocols:
            log.debug("DHT: %s does not speak %s; not in the routing table", peer_id, PROTOCOL_ID)
            self.skipped += 1
            return
        with trio.move_on_after(CALL_TIMEOUT):
            try:
                await dht.add_peer(peer_id)
            except Exception as exc:
                log.debug("DHT: could not add %s: %s", peer_id, exc)

    async def _advertise_forever(self) -> None:
        while True:
            # a fresh event before the round: a peer connecting during it wakes the next one
            self._wake = trio.Event()
            keys = [(service, service_key(service)) for service in self.services]
            keys += [(f"block {key}", key) for key in self._content]
            if keys:
                await trio.sleep(1.0)  # peers connecting together cost one round
                for what, key in keys:
                    with trio.move_on_after(CALL_TIMEOUT) as scope:
                        try:
                            await self._dht.provide(key)
                        except Exception as exc:
                            log.info("DHT: advertising %s failed: %s", what, exc)
                    if scope.cancelled_caught:
                        log.info("DHT: advertising %s took over %.0f s", what, CALL_TIMEOUT)
                self.advertised += 1
            with trio.move_on_after(ADVERTISE_EVERY):
                await self._wake.wait()

    async def find(self, service: str, timeout: float) -> list[Any]:
        """Providers of ``service`` (py-libp2p PeerInfos), within ``timeout``."""
        return await self.find_key(service_key(service), timeout)

    async def find_key(self, key: str, timeout: float) -> list[Any]:
        """Providers of ``key`` (a multihash in hex; py-libp2p PeerInfos), within ``timeout``."""
        providers: list[Any] = []
        if self._dht is not None:
            with trio.move_on_after(min(timeout, CALL_TIMEOUT)):
                providers = await self._dht.find_providers(key)
        return providers

    def status(self) -> dict[str, Any]:
        dht = self._dht
        return {
            "routing_table": dht.get_routing_table_size() if dht is not None else 0,
            "advertised": list(self.services),
            "content_keys": len(self._content),
            "rounds": self.advertised,
            "skipped_peers": self.skipped,
        }
