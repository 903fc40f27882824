"""The node's libp2p host (component ``p2p``; ``node.p2p``).

The host runs in the bridge's trio thread (see :mod:`.bridge`). It is
configured for what other libp2p implementations speak by default, and
nothing weaker:

- TCP only, listening on ``p2p.host``:``p2p.port`` (loopback by default) and
  advertising only the addresses it listens on;
- Noise only (a peer offering plaintext or secio is refused), yamux only;
- one connection per peer (py-libp2p otherwise waits 250 ms on every dial);
- identify, identify-push and ping as py-libp2p provides them;
- no auto-connector: py-libp2p's redials every peer it ever saw, ~70 s after
  it left; msuite redials the bootstrap peers itself, and the mesher
  introduces the rest.

The key comes from the repository (``keys/node.key``, created once) or
``p2p.key``: Ed25519 (default) or secp256k1, so the peer ID is stable across
restarts. A key file that cannot be read is an error naming the file, never
a silent new identity.

Bootstrap peers (``p2p.bootstrap``) are dialled at start and redialled every
15 s while they are not connected; an unreachable one is a warning (once,
until it connects), never a failed start.

Stop: background work is cancelled, every connection is closed at the same
time (py-libp2p closes them one by one, ~200 ms each), the host is closed
while its network service still runs (closing it after leaks sockets), and
the trio thread is joined, all within the shutdown grace.

Failures: an inbound stream whose handler raises (a peer's garbage) is reset
and counted (``stream_errors`` in ``/status``), never the end of the host. A
service that fails after it started is restarted with backoff (0.5 s doubling
to 30 s), except pubsub, which cannot be restarted in place; while a service
is down, and for good if pubsub or the host itself fails, the node is
unhealthy: :meth:`P2PHost.health` says why, ``/status`` shows it
(``health``, ``failed_services``) and gRPC health answers NOT_SERVING.

Peer data the asyncio side reads (``peers()``, ``addrs``, ``/status``) is a
snapshot the trio thread replaces as a whole on every change, so reading it
needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.abc import INotifee

import msuite
from msuite.runtime.components import FrozenError
from msuite.runtime.errors import NodeError, where
from msuite.runtime.ports import bind_error

from . import compat
from .bridge import Bridge, BridgeClosed
from .faults import StreamFaults
from .grpc_tunnel import PROTOCOL as GRPC_PROTOCOL
from .grpc_tunnel import TunnelDialer, TunnelServer
from .mesher import Mesher
from .protocols import Protocols
from .pubsub import PubSub
from .service import P2PService

if TYPE_CHECKING:
    from libp2p.abc import IHost

    from msuite.runtime.repo.component import RepoComponent
    from msuite.spec import Manifest

    from .dht import Dht

__all__ = ["AGENT_VERSION", "BOOTSTRAP_INTERVAL", "P2PHost", "PeerInfo"]

log = logging.getLogger("msuite.p2p")

BOOTSTRAP_INTERVAL = 15.0
"""Seconds between redials of bootstrap peers that are not connected."""

DIAL_TIMEOUT = 10.0
"""Seconds one dial may take."""

AGENT_VERSION = f"msuite/{msuite.__version__}"
"""What the node tells peers it is (identify's agent version)."""

RESTART_FIRST = 0.5
"""Seconds before a failed service's first restart; doubled after each failure..."""

RESTART_MAX = 30.0
"""...up to this."""

HEALTHY_RUN = 60.0
"""A service that ran this long before it failed restarts after RESTART_FIRST again."""


class PeerInfo(dict[str, Any]):
    """A connected peer: ``{"id": ..., "addrs": [...], "since": unix time}``."""


def listen_multiaddr(host: str, port: int) -> multiaddr.Multiaddr:
    """``/ip4/H/tcp/P``, ``/ip6/H/tcp/P`` or ``/dns/H/tcp/P`` for a listen host and port."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return multiaddr.Multiaddr(f"/dns/{host}/tcp/{port}")
    return multiaddr.Multiaddr(f"/ip{version}/{host}/tcp/{port}")


def key_pair(key_type: int, secret: bytes) -> Any:
    """A py-libp2p KeyPair from ``(libp2p key type, 32-byte secret)``."""
    if key_type == 1:
        from libp2p.crypto.ed25519 import create_new_key_pair as ed25519

        return ed25519(secret)
    if key_type == 2:
        from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1

        return secp256k1(secret)
    raise ValueError(f"unsupported key type {key_type}")


def build_host(keys: Any, on_fault: Callable[[str, str, BaseException], None] | None = None) -> IHost:
    """A py-libp2p host: TCP, Noise, yamux, one connection per peer, nothing discovered on its own.

    msuite's adjustments apply to it (see :mod:`.compat`): its streams grant credit in batches
    and write whole, an inbound stream whose handler raises is reset and reported to
    ``on_fault(peer, protocol, error)`` (logged when None), identify answers ``msuite/<version>``."""
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as x25519
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as Noise
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
    from libp2p.stream_muxer.yamux.yamux import Yamux
    from libp2p.transport.tcp.tcp import TCP

    host = new_host(
        key_pair=keys,
        sec_opt={TProtocol(NOISE): Noise(keys, noise_privkey=x25519().private_key)},
        muxer_opt={TProtocol(YAMUX): Yamux},
        transports=[TCP()],
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        enable_mDNS=False,
        enable_upnp=False,
        enable_autotls=False,
        enable_quic=False,
        bootstrap=None,
        disable_identify_address_discovery=True,
    )
    compat.adjust_streams(host)  # msuite's streams only: credit in batches, whole writes
    compat.guard_stream_handlers(host, on_fault or StreamFaults().record)
    compat.set_agent_version(host, AGENT_VERSION)
    compat.cache_addrs(host)  # pubsub asks for them on every message
    return host


class P2PHost:
    """Component ``p2p``: the libp2p host in the bridge's trio thread, its services, and ``node.p2p``.

    Services (see :mod:`.service`) run in the order they were added: the
    mesher, protocols, pubsub and the gRPC dialer, which every host has, then
    those the node adds (DHT, mDNS). Add services before start; after, it
    raises :class:`~msuite.runtime.components.FrozenError`.
    """

    name = "p2p"
    requires: tuple[str, ...] = ("repo",)

    def __init__(self, manifest: Manifest, repo: RepoComponent) -> None:
        assert manifest.p2p is not None
        self.manifest = manifest
        self.settings = manifest.p2p
        self._repo = repo
        self.bridge = Bridge(name=f"msuite-p2p-{manifest.name}")
        self.state = "new"
        self.peer_id = ""
        """This node's peer ID (base58), once started."""
        self.addrs: list[str] = []
        """The multiaddrs this node listens on, each ending in ``/p2p/<peer ID>``."""
        self._peers: dict[str, PeerInfo] = {}
        self._bootstrap: dict[str, bool] = {}
        self._host: IHost | None = None
        self._stop: trio.Event | None = None
        self._stopped: trio.Event | None = None
        self._on_peer: list[Callable[[str, bool], Awaitable[None] | None]] = []
        self._services: list[P2PService] = []
        self._frozen = False
        self.failed: dict[str, str] = {}
        """What is down now, with why: services that failed and are not running again yet, and
        ``"host"`` once the host itself failed (replaced as a whole)."""
        self.restarts: dict[str, dict[str, Any]] = {}
        """Per service that failed: ``{"count": restarts, "last_error": why}`` (replaced as a whole)."""
        self.faults = StreamFaults()
        """Inbound streams reset because of what a peer sent (``stream_errors`` in ``/status``)."""
        self._on_health: list[Callable[[str | None], Awaitable[None] | None]] = []
        self._nursery: trio.Nursery | None = None
        self.mesher = Mesher(self._announced)
        limits = self.settings.protocols
        self.protocols = Protocols(
            max_message=limits.max_message,
            deadline=limits.timeout.total_seconds(),
            inbound_limit=limits.inbound_limit,
        )
        """Request/response protocols (``node.protocols``)."""
        self.pubsub = PubSub(on_fault=self.faults.record, down=self.health)
        """Topics shared with every peer (GossipSub): ``publish``, ``subscribe``."""
        self.dialer = TunnelDialer(manifest.name)
        for service in (self.mesher, self.protocols, self.pubsub, self.dialer):
            self.add_service(service)

    def add_service(self, service: P2PService) -> None:
        """Run ``service`` in the host's trio thread (after those added before it); before start only."""
        if self._frozen:
            raise FrozenError(f"p2p service {service.name!r} added after the host started: add it before")
        if self.service(service.name) is not None:
            raise ValueError(f"a p2p service named {service.name!r} is added already")
        self._services.append(service)

    def service(self, name: str) -> P2PService | None:
        """The service named ``name``, or None."""
        return next((s for s in self._services if s.name == name), None)

    @property
    def services(self) -> list[str]:
        """Names of the services, in the order they run."""
        return [s.name for s in self._services]

    # ------------------------------------------------------------------ asyncio side

    def peers(self) -> list[PeerInfo]:
        """The peers connected now (a snapshot)."""
        return list(self._peers.values())

    def on_peer(self, callback: Callable[[str, bool], Awaitable[None] | None]) -> None:
        """Call ``callback(peer_id, connected)`` (on the asyncio loop) when a peer comes or goes."""
        self._on_peer.append(callback)

    def health(self) -> str | None:
        """None while the host and every service run; otherwise why not (the node is unhealthy)."""
        failed = self.failed
        if not failed:
            return None
        if "host" in failed:
            return f"the p2p host failed: {failed['host']}"
        return "; ".join(
            f"p2p service {name} failed: {why}" + (" (restarting)" if self._restartable(name) else "")
            for name, why in failed.items()
        )

    def _restartable(self, name: str) -> bool:
        return bool(getattr(self.service(name), "restartable", True))

    def on_health(self, callback: Callable[[str | None], Awaitable[None] | None]) -> None:
        """Call ``callback(health())`` (on the asyncio loop) whenever :meth:`health` changes."""
        self._on_health.append(callback)

    def _set_failed(self, failed: dict[str, str]) -> None:  # any thread
        before = self.health()
        self.failed = failed
        now = self.health()
        if now != before:
            for callback in self._on_health:
                with contextlib.suppress(BridgeClosed):  # the node is gone: nobody left to tell
                    self.bridge.to_asyncio_soon(_call, callback, now)

    async def connect(self, address: str, timeout: float = DIAL_TIMEOUT) -> str:
        """Dial ``address`` (a multiaddr ending in ``/p2p/<peer ID>``); return the peer ID."""
        from libp2p.peer.peerinfo import info_from_p2p_addr

        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:
            raise ValueError(f"{address!r} is not a multiaddr with a /p2p/ peer ID: {exc}") from None
        await self.bridge.run(self._dial, info, timeout)
        return str(info.peer_id)

    async def disconnect(self, peer_id: str) -> None:
        """Close the connection to ``peer_id`` (nothing when not connected)."""
        from libp2p.peer.id import ID

        host = self._running_host()
        await self.bridge.run(host.disconnect, ID.from_base58(peer_id))

    # ------------------------------------------------------------------ services over libp2p

    def providers(self, service: str) -> list[str]:
        """Connected peers that announced ``service`` (gRPC over libp2p), sorted by peer ID."""
        connected = self._peers
        return sorted(
            peer for peer, names in self.mesher.directory.items() if service in names and peer in connected
        )

    def grpc_target(self, service: str) -> str | None:
        """A local grpc target reaching a peer that serves ``service``, or None when none does."""
        providers = self.providers(service)
        if not providers or self._host is None:
            return None
        return self.dialer.target_for(providers[0])

    async def serve_grpc(self, target: str, services: Sequence[str]) -> None:
        """Serve gRPC over libp2p into the local server at ``target`` and announce ``services``.

        Called by component ``grpc_p2p`` once the gRPC server is bound, never before:
        a peer learns of a service only when a call to it can be served."""
        server = TunnelServer(target)

        async def begin() -> None:
            from libp2p.custom_types import TProtocol

            host = self._running_host()
            host.set_stream_handler(TProtocol(GRPC_PROTOCOL), server.serve_stream)
            self._announce(tuple(services))

        await self.bridge.run(begin)

    async def withdraw_grpc(self) -> None:
        """Stop taking gRPC streams from peers and tell them (in-flight calls go on)."""

        async def end() -> None:
            from libp2p.custom_types import TProtocol

            if self._host is not None:
                self._host.remove_stream_handler(TProtocol(GRPC_PROTOCOL))
                self._announce(())

        if self.bridge.running:
            await self.bridge.run(end)

    def _announce(self, services: tuple[str, ...]) -> None:  # trio side
        self.mesher.announce(services)
        dht = self._dht()
        if dht is not None:
            dht.wake()

    def _dht(self) -> Dht | None:
        from .dht import Dht

        found = self.service("dht")
        return found if isinstance(found, Dht) else None

    async def find_service(self, service: str, timeout: float = 5.0) -> str:
        """Wait until a connected peer serves ``service`` over libp2p; return its peer ID.

        With ``discovery.dht``, a service no connected peer serves is looked up in
        the DHT and its providers are dialled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        asked_dht = self._dht() is None
        while True:
            providers = self.providers(service)
            if providers:
                return providers[0]
            if not asked_dht:
                asked_dht = True
                for address in await self.find_providers(service, timeout=max(deadline - loop.time(), 0.1)):
                    with contextlib.suppress(Exception):
                        await self.connect(address, timeout=max(min(deadline - loop.time(), 5.0), 0.1))
            if loop.time() >= deadline:
                raise TimeoutError(f"no connected peer serves {service} over libp2p after {timeout:g} s")
            await asyncio.sleep(0.02)

    async def find_providers(self, service: str, timeout: float = 10.0) -> list[str]:
        """Providers of ``service`` found in the DHT (``discovery.dht``), as dialable multiaddrs."""
        dht = self._dht()
        if dht is None:
            raise NodeError(f"{where(self.manifest, 'discovery')}: the DHT is off (discovery.dht)")
        infos = await self.bridge.run(dht.find, service, timeout)
        found = []
        for info in infos:
            peer = str(info.peer_id)
            if peer == self.peer_id:
                continue
            for addr in info.addrs:
                text = str(addr)
                found.append(text if "/p2p/" in text else f"{text}/p2p/{peer}")
                break
        return found

    @property
    def libp2p(self) -> IHost:
        """The py-libp2p host while the node runs, for code in the trio thread (``bridge.run``)."""
        return self._running_host()

    def _running_host(self) -> IHost:
        if self._host is None:
            raise NodeError("the p2p host is not running")
        return self._host

    async def start(self) -> None:
        compat.apply()
        compat.route_logs()
        self.state = "starting"
        self._frozen = True
        self._check_port()
        key_type, secret = await asyncio.to_thread(self._repo.opened().node_key)
        keys = key_pair(key_type, secret)
        try:
            await self.bridge.start()
            await self.bridge.start_service(self._serve, keys)
        except BaseException:
            await self.bridge.close(5.0)
            self.state = "failed"
            raise
        self.state = "running"

    def _check_port(self) -> None:
        """Refuse a port another server listens on (py-libp2p's own bind, with SO_REUSEPORT,
        would succeed and split the connections with it; see :mod:`msuite.runtime.ports`)."""
        host, port = self.settings.host, self.settings.port
        refused = bind_error(host, port)
        if refused is not None:
            shown = f"[{host}]" if ":" in host else host
            raise NodeError(
                f"{where(self.manifest, 'p2p', 'port')}: cannot listen on {shown}:{port}: "
                f"{refused.strerror or refused}"
            )

    async def draining(self) -> None:
        self.state = "draining"

    async def stop(self, grace: float) -> None:
        if self._stop is None:
            await self.bridge.close(max(grace, 1.0))
            return
        self.state = "stopping"
        token_stop, stopped = self._stop, self._stopped
        assert stopped is not None

        async def stop_and_wait() -> None:
            token_stop.set()
            with trio.move_on_after(max(grace, 0.5)):
                await stopped.wait()

        await self.pubsub.close()
        try:
            await self.bridge.run(stop_and_wait)
        except Exception:
            log.exception("the p2p host did not stop cleanly")
        if not await self.bridge.close(max(grace, 1.0)):
            log.warning("the p2p thread did not end within the shutdown grace")
        self._host = None
        self._peers = {}
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        mdns, dht = self.service("mdns"), self.service("dht")
        return {
            "state": self.state,
            "peer_id": self.peer_id,
            "addrs": list(self.addrs),
            "peers": self.peers(),
            "bootstrap": [{"addr": a, "connected": c} for a, c in self._bootstrap.items()],
            "protocols": self.protocols.registered(),
            **self.mesher.status(),
            "pubsub": self.pubsub.status(),
            "mdns": mdns.status() if mdns is not None else None,
            "dht": dht.status() if dht is not None else None,
            "health": self.health(),
            "failed_services": dict(self.failed),
            "service_restarts": dict(self.restarts),
            "stream_errors": self.faults.status(),
            "libp2p": compat.status(),
        }

    def addresses(self) -> list[tuple[str, str]]:
        """``("p2p", multiaddr)`` for each address this node listens on (readiness lines)."""
        return [("p2p", address) for address in self.addrs]

    # ------------------------------------------------------------------ trio side

    async def _serve(self, keys: Any, *, task_status: Any) -> None:
        start = _Start(task_status.started)
        try:
            await self._run_host(keys, start)
        except Exception as exc:
            if not start.up:
                raise
            self._host_failed(exc)

    def _host_failed(self, exc: BaseException) -> None:
        """The host ended on its own after it started: nothing of p2p runs; the node is unhealthy."""
        reason = _describe(exc)
        log.error(
            "the p2p host failed: %s; nothing of p2p runs any more and the node is unhealthy "
            "(gRPC health NOT_SERVING) until it is restarted",
            reason,
            exc_info=exc,
        )
        self.state = "failed"
        self._host = None
        self._peers = {}
        self._set_failed({**self.failed, "host": reason})

    async def _run_host(self, keys: Any, task_status: Any) -> None:
        settings = self.settings
        host = build_host(keys, self.faults.record)
        self._stop, self._stopped = trio.Event(), trio.Event()
        listen = listen_multiaddr(settings.host, settings.port)
        try:
            async with host.run(listen_addrs=[listen]):
                try:
                    if not host.get_transport_addrs():
                        raise NodeError(
                            f"{where(self.manifest, 'p2p', 'port')}: cannot listen on {listen} "
                            "(address in use, or not an address of this machine)"
                        )
                    auto_connector = getattr(host.get_network(), "auto_connector", None)
                    if auto_connector is not None:
                        await auto_connector.stop()
                    self._host = host
                    self.peer_id = str(host.get_id())
                    self.addrs = [str(addr) for addr in host.get_addrs()]
                    host.get_network().register_notifee(_Notifee(self))
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        for service in self._services:  # in order: each may rely on those before it
                            await nursery.start(self._run_service, service, host)
                        nursery.start_soon(self._keep_bootstrap, host)
                        task_status.started()
                        await self._stop.wait()
                        nursery.cancel_scope.cancel()
                finally:
                    self._nursery = None
                    await _close(host)
        finally:
            self._stopped.set()

    async def _run_service(self, service: P2PService, host: IHost, *, task_status: Any) -> None:
        """Run ``service``, and run it again with backoff each time it fails after it started.

        A failure before its first ``started()`` fails the host's start. After that, a failure
        (or a ``run`` that returns on its own) is logged, listed in ``failed`` (the node is
        unhealthy) until the service has started again, and counted in ``restarts``. A service
        whose ``restartable`` is False (pubsub) stays failed: the node is unhealthy for good."""
        ever_up = False
        delay = RESTART_FIRST
        while True:
            began = trio.current_time()
            start = _Start(task_status.started if not ever_up else partial(self._running_again, service.name))
            try:
                await service.run(host, self.bridge, task_status=start)
            except Exception as exc:
                if not (ever_up or start.up):
                    raise
                error: BaseException | None = exc
                reason = _describe(exc)
            else:
                if not (ever_up or start.up):  # returned without ever starting: a failed start
                    raise RuntimeError(f"p2p service {service.name} returned before it started")
                error, reason = None, "its run returned on its own"
            ever_up = True
            if not getattr(service, "restartable", True):
                log.error(
                    "p2p service %s failed: %s; it cannot be restarted in place, so the node is "
                    "unhealthy (gRPC health NOT_SERVING) until it is restarted",
                    service.name,
                    reason,
                    exc_info=error,
                )
                self._set_failed({**self.failed, service.name: reason})
                return
            if start.up and trio.current_time() - began >= HEALTHY_RUN:
                delay = RESTART_FIRST
            count = self.restarts.get(service.name, {}).get("count", 0) + 1
            self.restarts = {**self.restarts, service.name: {"count": count, "last_error": reason}}
            log.error(
                "p2p service %s failed: %s; restarting it in %.1f s (restart %d), the node is "
                "unhealthy until it runs again",
                service.name,
                reason,
                delay,
                count,
            )
            if error is not None:
                log.debug("p2p service %s failure", service.name, exc_info=error)
            self._set_failed({**self.failed, service.name: reason})
            await trio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)

    def _running_again(self, name: str, value: Any = None) -> None:
        if name in self.failed:
            log.warning("p2p service %s runs again", name)
            self._set_failed({k: v for k, v in self.failed.items() if k != name})

    async def _dial(self, info: Any, timeout: float) -> None:
        host = self._running_host()
        with trio.fail_after(timeout):
            await host.connect(info)

    async def _keep_bootstrap(self, host: IHost) -> None:
        from libp2p.peer.peerinfo import info_from_p2p_addr

        infos = [
            (str(address), info_from_p2p_addr(multiaddr.Multiaddr(str(address))))
            for address in self.settings.bootstrap
        ]
        self._bootstrap = {address: False for address, _ in infos}
        warned: set[str] = set()
        while True:
            for address, info in infos:
                if host.get_network().get_connections(info.peer_id):
                    self._bootstrap = {**self._bootstrap, address: True}
                    continue
                compat.forget_failed_dial(host, info.peer_id)
                try:
                    with trio.fail_after(DIAL_TIMEOUT):
                        await host.connect(info)
                except Exception as exc:
                    self._bootstrap = {**self._bootstrap, address: False}
                    level = logging.DEBUG if address in warned else logging.WARNING
                    warned.add(address)
                    log.log(
                        level,
                        "bootstrap peer %s unreachable (retrying every %.0f s): %s",
                        address,
                        BOOTSTRAP_INTERVAL,
                        _reason(exc),
                    )
                else:
                    warned.discard(address)
                    self._bootstrap = {**self._bootstrap, address: True}
                    log.info("connected to bootstrap peer %s", address)
            await trio.sleep(BOOTSTRAP_INTERVAL)

    # called by the mesher, in the trio thread
    def _announced(self, peer_id: str, addrs: list[str]) -> None:
        """A peer told us the addresses it listens on: show those (an inbound connection's are ephemeral)."""
        current = self._peers.get(peer_id)
        if current is not None and current.get("addrs") != addrs:
            self._peers = {**self._peers, peer_id: PeerInfo(current, addrs=list(addrs))}

    # called by the notifee, in the trio thread
    def _peer_changed(self, peer_id: str, addrs: list[str], connected: bool) -> None:
        if peer_id == self.peer_id:  # another node holds this node's key: not a peer
            if connected:
                log.error(
                    "a node at %s has this node's own peer id %s: two nodes share one key (a copied "
                    "repository, or the same p2p.key); give each node its own repository",
                    ", ".join(addrs) or "an unknown address",
                    peer_id,
                )
            return
        peers = dict(self._peers)
        if connected:
            peers[peer_id] = PeerInfo(id=peer_id, addrs=addrs, since=time.time())
        else:
            peers.pop(peer_id, None)
        if any(address.endswith(f"/p2p/{peer_id}") for address in self._bootstrap):
            # both ways here, as the peer list changes: the bootstrap loop sets it only once its
            # dial returns, which under load came after the peer was listed as connected
            self._bootstrap = {
                address: connected if address.endswith(f"/p2p/{peer_id}") else up
                for address, up in self._bootstrap.items()
            }
        self._peers = peers
        log.info("peer %s %s", peer_id, "connected" if connected else "disconnected")
        for service in self._services:
            tell = getattr(service, "peer_connected" if connected else "peer_disconnected", None)
            if tell is not None:
                try:
                    tell(peer_id)
                except Exception:  # one service's bug must not keep the peer from the others
                    log.exception("p2p service %s failed on a peer change", service.name)
        for callback in self._on_peer:
            self.bridge.to_asyncio_soon(_call, callback, peer_id, connected)


async def _call(callback: Callable[..., Awaitable[None] | None], *args: Any) -> None:
    result = callback(*args)
    if result is not None:
        await result


class _Start:
    """A ``task_status`` that remembers whether ``started()`` was called and passes the first call on."""

    def __init__(self, forward: Callable[[Any], None]) -> None:
        self.up = False
        self._forward: Callable[[Any], None] | None = forward

    def started(self, value: Any = None) -> None:
        self.up = True
        forward, self._forward = self._forward, None
        if forward is not None:
            forward(value)


def _describe(exc: BaseException) -> str:
    """``Type: first line`` of ``exc``, looking into exception groups of one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"no answer within {DIAL_TIMEOUT:.0f} s"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


async def _close(host: IHost) -> None:
    """Close every connection at once, then the host, while its network service still runs."""
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            for peer in list(host.get_connected_peers()):
                nursery.start_soon(host.disconnect, peer)
        await host.close()
    if scope.cancelled_caught:
        log.warning("the p2p host took more than 5 s to close")


class _Notifee(INotifee):
    """py-libp2p's network notifications: keeps the peer snapshot and tells the node."""

    def __init__(self, owner: P2PHost) -> None:
        self.owner = owner

    async def connected(self, network: Any, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id
        if str(peer) in self.owner._peers:  # a second connection (both sides dialled, or a restarted peer
            self.owner.mesher.peer_connected(str(peer))  # before its old one closed): introduce again
            return
        host = self.owner._host
        try:
            addrs = [str(a) for a in host.get_peerstore().addrs(peer)] if host is not None else []
        except Exception:  # no address known yet (an inbound connection before identify)
            addrs = []
        self.owner._peer_changed(str(peer), addrs, True)

    async def disconnected(self, network: Any, conn: Any) -> None:
        peer = conn.muxed_conn.peer_id
        if not network.get_connections(peer):
            self.owner._peer_changed(str(peer), [], False)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        return None

    async def closed_stream(self, network: Any, stream: Any) -> None:
        return None

    async def listen(self, network: Any, multiaddr: Any) -> None:
        return None

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        return None
