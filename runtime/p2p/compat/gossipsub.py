"""msuite's GossipSub router: py-libp2p's, with go-libp2p's flood publish and IDONTWANT threshold.

**Flood publish** (``gossipsub_flood_publish``): py-libp2p 0.8.1 sends a
message this node publishes to its mesh peers of the topic only. A subscribed
peer outside the mesh (the mesh not formed yet after a join, a peer backed off
after a PRUNE, a degree limit) gets it only if gossip repairs it later, and a
peer restarted within the unsubscribe back-off (10 s) lost every event for up
to a minute. go-libp2p floods its own publishes to every peer subscribed to the
topic (``floodPublish``, on by default); msuite's router does the same for the
messages it originates. Forwarded messages still go to the mesh only, so the
network's load grows with the publisher's peer count only.

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


def _missing_flood() -> list[str]:
    return missing_attributes(GossipSub, ("_get_peers_to_send", "peer_protocol", "pubsub"))


def gossipsub(**kwargs: Any) -> GossipSub:
    """py-libp2p's ``GossipSub(**kwargs)``, with flood publish and the IDONTWANT threshold where
    they are active."""
    flood, threshold = active("gossipsub_flood_publish"), active("gossipsub_idontwant_threshold")
    if not flood and not threshold:
        return GossipSub(**kwargs)
    return MsuiteGossipSub(flood_publish=flood, idontwant_threshold=threshold, **kwargs)


class MsuiteGossipSub(GossipSub):
    """py-libp2p's GossipSub flooding its own publishes to every subscribed peer and sending
    IDONTWANT only for messages of :data:`IDONTWANT_THRESHOLD` bytes or more (each on or off).
    Build it with :func:`gossipsub`."""

    def __init__(
        self, *, flood_publish: bool = True, idontwant_threshold: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.flood_publish = flood_publish
        self.idontwant_threshold = idontwant_threshold
        self._small: set[bytes] = set()
        """Ids of the small messages being published or forwarded right now."""
        self.outbound_drops: dict[str, int] = {}
        """Messages per topic a peer's full outbound queue dropped (replaced whole, for readers in
        other threads): py-libp2p logs them at DEBUG only."""

    def _handle_dropped_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, reason: str) -> None:
        if rpc.publish:
            drops = dict(self.outbound_drops)
            for message in rpc.publish:
                for topic in message.topicIDs:
                    drops[topic] = drops.get(topic, 0) + 1
            self.outbound_drops = drops
        super()._handle_dropped_rpc(peer_id, rpc, reason)

    def _get_peers_to_send(
        self, topic_ids: Any, msg_forwarder: ID, origin: ID, msg_id: bytes | None = None
    ) -> Any:
        chosen = set(super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id))
        pubsub = self.pubsub
        if not self.flood_publish or pubsub is None or origin != pubsub.my_id:
            yield from chosen
            return
        scorer = getattr(self, "scorer", None)
        for topic in topic_ids:
            for peer in pubsub.peer_topics.get(topic, ()):
                if peer in chosen or peer == msg_forwarder or peer not in self.peer_protocol:
                    continue
                if scorer is not None and scorer.is_graylisted(peer, [topic]):
                    continue
                chosen.add(peer)
        yield from chosen

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        if (
            not self.idontwant_threshold
            or pubsub_msg.ByteSize() >= IDONTWANT_THRESHOLD
            or self.pubsub is None
        ):
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
    "gossipsub_flood_publish",
    _missing_flood,
    "a message this node publishes reaches its mesh peers only: a subscribed peer outside the mesh "
    "(joining, backed off) misses it",
    verified=("0.8.1",),
)
register(
    "gossipsub_idontwant_threshold",
    _missing_idontwant,
    "every message published or forwarded, however small, costs one more RPC per mesh peer (IDONTWANT)",
    verified=("0.8.1",),
)
