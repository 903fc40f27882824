"""mDNS discovery (``discovery.mdns``): peers on the local network found and dialled.

The node announces itself as libp2p's mDNS specification says (service
``_p2p._udp.local.``, its listen addresses as ``dnsaddr`` TXT records), with
py-libp2p's broadcaster and listener, and **dials** every peer it discovers
(py-libp2p only fills its peer store, from zeroconf's thread).

mDNS runs only on the interface of ``p2p.host`` (all interfaces when it is
``0.0.0.0`` or ``::``), so a node listening on loopback never multicasts on
the machine's real network. Loopback carries multicast only where it is
enabled (``ip link set lo multicast on`` and a route for 224.0.0.0/4, as the
tests do inside a network namespace of their own). If mDNS cannot start, the
node logs a warning and runs without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from .bridge import Bridge

__all__ = ["SERVICE_TYPE", "Mdns"]

log = logging.getLogger("msuite.p2p.mdns")

SERVICE_TYPE = "_p2p._udp.local."
DIAL_TIMEOUT = 5.0


class Mdns:
    """P2P service ``mdns``: announces the host and dials what it discovers (trio side;
    zeroconf runs its own thread)."""

    name = "mdns"

    def __init__(self, listen_host: str) -> None:
        self.listen_host = listen_host
        self.seen: frozenset[str] = frozenset()
        """Peer IDs mDNS has found (this node's own excepted; replaced as a whole)."""
        self._zeroconf: Any = None
        self._broadcaster: Any = None
        self._listener: Any = None
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._settled = trio.Event()

    async def run(self, host: IHost, bridge: Bridge, *, task_status: Any) -> None:
        """Announce and listen in the background (zeroconf's name probe takes ~1.5 s); stop when cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.start, host, nursery)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                await self.stop()

    def status(self) -> dict[str, Any]:
        return {"discovered": sorted(self.seen)}

    async def start(self, host: IHost, nursery: trio.Nursery) -> None:
        """Announce and listen (zeroconf's name probe takes ~1.5 s: run it in the background)."""
        try:
            await self._start(host, nursery)
        finally:
            self._settled.set()

    async def _start(self, host: IHost, nursery: trio.Nursery) -> None:
        from libp2p.discovery.events.peerDiscovery import peerDiscovery
        from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
        from libp2p.discovery.mdns.listener import PeerListener
        from zeroconf import InterfaceChoice, Zeroconf

        self._host, self._nursery = host, nursery
        self._token = trio.lowlevel.current_trio_token()
        wildcard = self.listen_host in ("0.0.0.0", "::")
        interfaces: Any = InterfaceChoice.All if wildcard else [self.listen_host]
        peer_id = str(host.get_id())
        # the specification asks for a random-looking instance name: derived from the peer ID, so stable
        name = f"{hashlib.sha256(peer_id.encode()).hexdigest()[:32]}.{SERVICE_TYPE}"
        port = int(host.get_transport_addrs()[0].value_for_protocol("tcp"))
        addrs = [str(addr) for addr in host.get_addrs()]

        def begin() -> None:
            self._zeroconf = Zeroconf(interfaces=interfaces)
            self._broadcaster = PeerBroadcaster(
                zeroconf=self._zeroconf,
                service_type=SERVICE_TYPE,
                service_name=name,
                peer_id=peer_id,
                port=port,
                listen_addrs=addrs,
            )
            self._broadcaster.register()
            self._listener = PeerListener(
                zeroconf=self._zeroconf,
                peerstore=host.get_peerstore(),
                service_type=SERVICE_TYPE,
                service_name=name,
            )

        # registered first: the listener reports peers as soon as it exists
        peerDiscovery.register_peer_discovered_handler(self._discovered)
        try:
            await trio.to_thread.run_sync(begin)
        except Exception as exc:
            log.warning("mDNS could not start on %s: %s; running without it", self.listen_host, exc)
            await self._close()
            return
        log.info("mDNS announcing %s on %s", peer_id, "every interface" if wildcard else self.listen_host)

    def _discovered(self, info: Any) -> None:  # zeroconf's thread
        token, nursery = self._token, self._nursery
        if token is None or nursery is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(nursery.start_soon, self._dial, info)

    async def _dial(self, info: Any) -> None:
        host = self._host
        if host is None or info.peer_id == host.get_id():
            return
        self.seen = self.seen | {str(info.peer_id)}
        if host.get_network().get_connections(info.peer_id):
            return
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                await host.connect(info)
        except Exception as exc:
            log.info("mDNS: could not dial %s: %s", info.peer_id, exc)
        else:
            log.info("mDNS: connected to %s", info.peer_id)

    async def stop(self) -> None:
        """Stop announcing and listening (waits for a start in progress to settle first)."""
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self._settled.wait()
        await self._close()

    async def _close(self) -> None:
        from libp2p.discovery.events.peerDiscovery import peerDiscovery

        peerDiscovery.unregister_peer_discovered_handler(self._discovered)
        self._token = None
        zeroconf, broadcaster, listener = self._zeroconf, self._broadcaster, self._listener
        self._zeroconf = self._broadcaster = self._listener = None

        def end() -> None:
            for step in (
                broadcaster.unregister if broadcaster else None,
                listener.stop if listener else None,
                zeroconf.close if zeroconf else None,
            ):
                if step is not None:
                    try:
                        step()
                    except Exception:
                        log.debug("mDNS: a shutdown step failed", exc_info=True)

        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await trio.to_thread.run_sync(end)
