"""The host's advertised addresses, built once per set of listening sockets, on msuite's host only.

py-libp2p 0.8.1's ``BasicHost.get_addrs`` builds its answer anew on every
call: a multiaddr from each listening socket's ``getsockname()``, then
``/p2p/<peer ID>`` parsed from text and appended to each, about 50 us. Its
pubsub calls it for every message it publishes or forwards (``GossipSub.publish``
asks ``env_to_send_in_RPC`` for the host's signed peer record, which compares
the record's addresses with ``get_addrs()`` each time): a sixth of a pubsub
node's CPU in a burst went to it.

msuite's host answers from a cache, rebuilt (by py-libp2p's own method)
whenever the key changes: the listeners, and each listening socket's address
(``getsockname()``, about 1 us each). The host listens on what the manifest
says and never learns observed addresses (identify address discovery is off),
so the answer depends on nothing else; a host with observed addresses or an
address factory is never cached. Each call returns a new list.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from libp2p.abc import IHost

from .gate import active, register

__all__ = ["cache_addrs"]


def _missing_addrs() -> list[str]:
    from libp2p.host.basic_host import BasicHost
    from libp2p.transport.tcp.tcp import TCPListener

    lacking = [f"BasicHost.{name}" for name in ("get_addrs", "get_network") if not hasattr(BasicHost, name)]
    # instance attributes, set in __init__: what the answer depends on besides the listeners
    assigned = BasicHost.__init__.__code__.co_names
    lacking += [
        f"BasicHost.{name}" for name in ("_observed_addr_manager", "_addrs_factory") if name not in assigned
    ]
    if "listeners" not in TCPListener.__init__.__code__.co_names:
        lacking.append("TCPListener.listeners")
    return lacking


def cache_addrs(host: IHost) -> bool:
    """Serve ``host.get_addrs()`` from a cache keyed on its listening sockets (this instance only).
    False (py-libp2p's own method) when the adjustment is not active."""
    if not active("host_addrs_cache"):
        return False
    built = host.get_addrs  # py-libp2p's, bound
    cached: list[Any] = [None, []]  # [key, addrs]

    def get_addrs() -> list[Any]:
        key = listening_key(host)
        if key is None:
            return list(built())
        if key != cached[0]:
            cached[1] = list(built())
            cached[0] = key
        return list(cached[1])

    host.get_addrs = get_addrs  # type: ignore[method-assign]
    return True


def listening_key(host: IHost) -> Hashable | None:
    """What ``host.get_addrs()`` depends on: each listener and its sockets' addresses. None when
    it depends on more (observed addresses, an address factory) or a listener is not TCP's."""
    if getattr(host, "_observed_addr_manager", None) is not None:
        return None
    if getattr(host, "_addrs_factory", None) is not None:
        return None
    key: list[Hashable] = []
    for name, transport in host.get_network().listeners.items():
        sockets = getattr(transport, "listeners", None)
        if sockets is None:
            return None
        key.append((name, id(transport)))
        for listener in sockets:
            socket = getattr(listener, "socket", None)
            getsockname: Callable[[], Any] | None = getattr(socket, "getsockname", None)
            if getsockname is None:
                return None
            try:
                key.append((socket.family, getsockname()))  # type: ignore[union-attr]
            except OSError:  # closed: let py-libp2p say what it says
                return None
    return tuple(key)


register(
    "host_addrs_cache",
    _missing_addrs,
    "every pubsub message published or forwarded rebuilds the host's addresses (about 50 us)",
    verified=("0.8.1",),
)
