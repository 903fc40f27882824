"""msuite's GossipSub router: py-libp2p's, with go-libp2p's flood publish and IDONTWANT threshold,
and its signed peer record sent once per peer.

**Flood publish** (``gossipsub_flood_publish``): py-libp2p 0.8.1 sends a
message this node publishes to its mesh peers of the topic only. A subscribed
peer outside the mesh (the mesh not formed yet after a join, a peer backed off
after a PRUNE, a degree limit) gets it only if gossip repairs it later, and a
peer restarted within the unsubscribe back-off (10 s) lost every event for up
to a minute. go-libp2p floods its own publishes to every peer subscribed to the
topic (``floodPublish``, on by default); msuite's router does the same for the
messages it originates. Forwarded messages still go to the mesh only, so the
network's load grows with the publisher's peer count only.

**The signed peer record once per peer** (``gossipsub_record_once``): py-libp2p
0.8.1 attaches this host's signed peer record (its addresses, signed) to
every RPC it sends, and the receiver parses it and checks its signature on
every RPC: about a fifth of a receiver's p2p thread in a burst. msuite's
router attaches it to the first RPC to each peer (and again when the record
changes or the peer reconnects); the receiver has it from then on. Neither
go-libp2p nor js-libp2p sends it at all; a py-libp2p receiver takes an RPC
without it as it is.

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


def _missing_record() -> list[str]:
    return missing_attributes(GossipSub, ("send_rpc", "remove_peer"))


def gossipsub(**kwargs: Any) -> GossipSub:
    """py-libp2p's ``GossipSub(**kwargs)``, with flood publish, the signed record once per peer and
    the IDONTWANT threshold where they are active."""
    flood, threshold = active("gossipsub_flood_publish"), active("gossipsub_idontwant_threshold")
    once = active("gossipsub_record_once")
    if not flood and not threshold and not once:
        return GossipSub(**kwargs)
    return MsuiteGossipSub(flood_publish=flood, idontwant_threshold=threshold, record_once=once, **kwargs)


class MsuiteGossipSub(GossipSub):
    """py-libp2p's GossipSub flooding its own publishes to every subscribed peer and sending
    IDONTWANT only for messages of :data:`IDONTWANT_THRESHOLD` bytes or more (each on or off).
    Build it with :func:`gossipsub`."""

    def __init__(
        self,
        *,
        flood_publish: bool = True,
        idontwant_threshold: bool = True,
        record_once: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flood_publish = flood_publish
        self.idontwant_threshold = idontwant_threshold
        self.record_once = record_once
        self._records_sent: dict[ID, bytes] = {}
        """The signed record each peer was last sent."""
        self._small: set[bytes] = set()
        """Ids of the small messages being published or forwarded right now."""
        self.outbound_drops: dict[str, int] = {}
        """Messages per topic a peer's full outbound queue dropped (replaced whole, for readers in
        other threads): py-libp2p logs them at DEBUG only."""

    def send_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        if self.record_once and rpc.HasField("senderRecord"):
            if self._records_sent.get(peer_id) == rpc.senderRecord:
                stripped = rpc_pb2.RPC()
                stripped.CopyFrom(rpc)
                stripped.ClearField("senderRecord")
                rpc = stripped
            else:
                self._records_sent[peer_id] = rpc.senderRecord
        super().send_rpc(peer_id, rpc, priority)

    def remove_peer(self, peer_id: ID) -> None:
        self._records_sent.pop(peer_id, None)  # a peer that comes back is sent the record again
        super().remove_peer(peer_id)

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
    "gossipsub_record_once",
    _missing_record,
    "every pubsub RPC carries this host's signed peer record, and peers check its signature each time",
    verified=("0.8.1",),
)
register(
    "gossipsub_idontwant_threshold",
    _missing_idontwant,
    "every message published or forwarded, however small, costs one more RPC per mesh peer (IDONTWANT)",
    verified=("0.8.1",),
)
