"""msuite's GossipSub router: py-libp2p's, sending IDONTWANT only for messages worth it.

**IDONTWANT** (``gossipsub_idontwant_threshold``): GossipSub 1.2 lets a node
tell its mesh peers "I have message X, don't send it to me" so a large message
is not sent to it again by every other mesh peer. py-libp2p 0.8.1 sends that
control message to every 1.2 mesh peer for *every* message it publishes or
forwards, whatever its size: one more RPC per peer per message, each carrying
the host's signed peer record, which the receiver verifies again. For small
messages that doubles the writes and the signature checks of a burst while
saving nothing. go-libp2p sends IDONTWANT only for messages of at least
``IDontWantMessageThreshold`` (1 KiB by default); msuite's router does the
same. Peers still honour the IDONTWANTs others send (py-libp2p's own
handling is untouched), and a peer that gets no IDONTWANT only receives a
duplicate it drops by message id: nothing about delivery changes.
"""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2

from .gate import active, missing_attributes, register

__all__ = ["IDONTWANT_THRESHOLD", "MsuiteGossipSub", "gossipsub"]

IDONTWANT_THRESHOLD = 1024
"""Smallest message, in bytes, a node sends IDONTWANT for (go-libp2p's default)."""


def _missing_idontwant() -> list[str]:
    return missing_attributes(GossipSub, ("publish", "_emit_idontwant_for_message"))


def gossipsub(**kwargs: Any) -> GossipSub:
    """py-libp2p's ``GossipSub(**kwargs)``, with the IDONTWANT threshold where it is active."""
    if not active("gossipsub_idontwant_threshold"):
        return GossipSub(**kwargs)
    return MsuiteGossipSub(**kwargs)


class MsuiteGossipSub(GossipSub):
    """py-libp2p's GossipSub sending IDONTWANT only for messages of :data:`IDONTWANT_THRESHOLD`
    bytes or more. Build it with :func:`gossipsub`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._small: set[bytes] = set()
        """Ids of the small messages being published or forwarded right now."""

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        if pubsub_msg.ByteSize() >= IDONTWANT_THRESHOLD or self.pubsub is None:
            await super().publish(msg_forwarder, pubsub_msg)
            return
        msg_id = self.pubsub.get_message_id(pubsub_msg)
        self._small.add(msg_id)
        try:
            await super().publish(msg_forwarder, pubsub_msg)
        finally:
            self._small.discard(msg_id)

    async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Any) -> None:
        if msg_id in self._small:
            return
        await super()._emit_idontwant_for_message(msg_id, topic_ids)


register(
    "gossipsub_idontwant_threshold",
    _missing_idontwant,
    "every message published or forwarded, however small, costs one more RPC per mesh peer (IDONTWANT)",
    verified=("0.8.1",),
)
