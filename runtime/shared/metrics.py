"""The shared store's figures in ``/metrics``: read from :class:`~.shared.Shared` at scrape time.

- gauges ``msuite_shared_heads``, ``msuite_shared_height`` (the highest head's),
  ``msuite_shared_pending_writes`` (local writes not yet in a delta),
  ``msuite_shared_pending_fetches`` (deltas being fetched now);
- counters ``msuite_shared_deltas_applied_total`` (since start, local and remote),
  ``msuite_shared_deltas_fetched_total``, ``msuite_shared_conflicts_total`` (writes that met
  a concurrent write of the same key), ``msuite_shared_bad_messages_total``,
  ``msuite_shared_bad_deltas_total``, ``msuite_shared_walk_failures_total``;
- per peer (label ``peer``): ``msuite_shared_last_sync_timestamp_seconds``, when every head
  the peer announced was last applied here.

Every family has the label ``channel``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client import Metric

    from .shared import Shared

__all__ = ["SharedCollector"]


class SharedCollector(Collector):
    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def describe(self) -> Iterable[Metric]:
        return []  # families come from collect(); their label values are only known then

    def collect(self) -> Iterable[Metric]:
        shared = self.shared
        replica = shared._replica
        if replica is None:
            return
        channel = [shared.channel]
        counters = shared.counters

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"msuite_shared_{name}", text, labels=["channel"])
            family.add_metric(channel, value)
            return family

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"msuite_shared_{name}", text, labels=["channel"])
            family.add_metric(channel, value)
            return family

        yield gauge("heads", "Heads of the channel's DAG here.", len(replica.heads))
        yield gauge("height", "Height of the highest head.", replica.height)
        yield gauge("pending_writes", "Local writes not yet in a delta.", len(replica.pending))
        yield gauge("pending_fetches", "Deltas being fetched now.", shared.pending_fetches())
        yield counter("deltas_applied", "Deltas applied since start (local and remote).", replica.applied)
        yield counter("deltas_fetched", "Deltas fetched from peers.", counters.deltas_fetched)
        yield counter("conflicts", "Writes that met a concurrent write of the same key.", replica.conflicts)
        yield counter("bad_messages", "Head announcements that did not decode.", counters.bad_messages)
        yield counter(
            "bad_deltas", "Deltas refused (undecodable, wrong height, bad writes).", counters.bad_deltas
        )
        yield counter(
            "walk_failures", "Catch-up rounds that failed (a delta nobody served).", counters.walk_failures
        )
        synced = GaugeMetricFamily(
            "msuite_shared_last_sync_timestamp_seconds",
            "When every head the peer announced was last applied here (Unix time).",
            labels=["channel", "peer"],
        )
        for peer, sync in sorted(counters.by_peer.items()):
            if sync.synced:
                synced.add_metric([shared.channel, peer], sync.synced)
        yield synced
