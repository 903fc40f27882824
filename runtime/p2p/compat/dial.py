"""Forgetting a failed dial: msuite, not py-libp2p, decides when to redial a peer."""

from __future__ import annotations

import logging
from typing import Any

from libp2p.abc import IHost
from libp2p.network import swarm as _swarm
from libp2p.peer.id import ID

from .gate import register

__all__ = ["forget_failed_dial"]

log = logging.getLogger("msuite.p2p")


def _missing_forget_failed_dial() -> list[str]:
    if hasattr(_swarm.Swarm, "unblock_peer") or hasattr(_swarm, "_NegativePeerCache"):
        return []
    return ["Swarm.unblock_peer"]


def forget_failed_dial(host: IHost, peer_id: ID) -> None:
    """Let ``host`` dial ``peer_id`` again at once: py-libp2p refuses for 60 s after a failed dial,
    msuite decides when to retry. Never raises."""
    network: Any = host.get_network()
    try:
        unblock = getattr(network, "unblock_peer", None)
        if unblock is not None:
            unblock(peer_id)
            return
        cache = getattr(network, "_negative_peer_cache", None)  # before unblock_peer existed
        if cache is not None:
            cache.evict(str(peer_id))
    except Exception:  # never fail a redial over it
        log.debug("could not clear py-libp2p's failed-dial cache", exc_info=True)


register("forget_failed_dial", _missing_forget_failed_dial, "a failed bootstrap peer is redialled after 60 s")
