"""msuite's adjustments to py-libp2p, in one place: the only package that touches its private names.

One module per adjustment (or per pair that shares what it touches); :mod:`.gate`
decides which are active. The older ones were written for the py-libp2p 0.8
series (``pyproject.toml`` pins ``libp2p==0.8.*``) and are used wherever
py-libp2p still has what they touch; the newer ones name the exact versions
they were verified on and are left out, with one warning, on any other.
:func:`apply` runs the checks, :func:`status` says which are active.

None of them changes py-libp2p for another user in the same process: each is
scoped to what msuite builds (only log routing is process-wide, because
py-libp2p's loggers are).

================================= ======== ===================== ===========================
adjustment                        verified scope                 entry point
================================= ======== ===================== ===========================
``yamux_credit``                  0.8.x    msuite's host streams :func:`adjust_streams`
``yamux_whole_writes``            0.8.1    msuite's host streams :func:`adjust_streams`
``pubsub_subscription_channel``   0.8.x    msuite's Pubsub       :func:`sized_pubsub`
``pubsub_outbound_queue``         0.8.x    msuite's Pubsub       :func:`sized_pubsub`
``pubsub_bad_frames``             0.8.1    msuite's Pubsub       :func:`sized_pubsub`
``pubsub_seqno``                  0.8.1    msuite's Pubsub       :func:`sized_pubsub`
``pubsub_coalesced_writes``       0.8.1    msuite's Pubsub       :func:`sized_pubsub`
``pubsub_ordered_handling``       0.8.1    msuite's Pubsub       :func:`sized_pubsub`
``gossipsub_flood_publish``       0.8.1    msuite's GossipSub    :func:`gossipsub`
``gossipsub_record_once``         0.8.1    msuite's GossipSub    :func:`gossipsub`
``gossipsub_idontwant_threshold`` 0.8.1    msuite's GossipSub    :func:`gossipsub`
``stream_guard``                  0.8.1    the host passed in    :func:`guard_stream_handlers`
``host_addrs_cache``              0.8.1    the host passed in    :func:`cache_addrs`
``identify_agent``                0.8.1    the host passed in    :func:`set_agent_version`
``forget_failed_dial``            0.8.x    the host passed in    :func:`forget_failed_dial`
``log_routing``                   0.8.x    ``logging`` (global)  :func:`route_logs`
================================= ======== ===================== ===========================

The lean yamux :func:`read` and :func:`write` of the gRPC pipe live here too
(in :mod:`.streams`: they read yamux internals); each checks what it needs on
every call and falls back to py-libp2p's own ``read`` or ``write``.
"""

from __future__ import annotations

from .addrs import cache_addrs
from .dial import forget_failed_dial

# importing each module registers its adjustments with the gate
from .gate import WRITTEN_FOR, apply, in_range, installed_version, status
from .gate import missing_attributes as _missing_attributes
from .gossipsub import IDONTWANT_THRESHOLD, MsuiteGossipSub, gossipsub
from .handlers import guard_stream_handlers
from .identify import set_agent_version
from .logs import route_logs
from .pubsub import FaultHandler, MsuitePubsub, SizedPubsub, sized_pubsub
from .streams import (
    FRAME_PAYLOAD,
    BatchedCreditStream,
    MsuiteStream,
    WholeWriteStream,
    adjust_streams,
    batch_yamux_credit,
    read,
    write,
)

__all__ = [
    "FRAME_PAYLOAD",
    "IDONTWANT_THRESHOLD",
    "WRITTEN_FOR",
    "BatchedCreditStream",
    "FaultHandler",
    "MsuiteGossipSub",
    "MsuitePubsub",
    "MsuiteStream",
    "SizedPubsub",
    "WholeWriteStream",
    "_missing_attributes",
    "adjust_streams",
    "apply",
    "batch_yamux_credit",
    "cache_addrs",
    "forget_failed_dial",
    "gossipsub",
    "guard_stream_handlers",
    "in_range",
    "installed_version",
    "read",
    "route_logs",
    "set_agent_version",
    "sized_pubsub",
    "status",
    "write",
]
