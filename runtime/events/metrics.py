"""The events counters in ``/metrics``: read from :class:`~.bus.Events` at scrape time.

Families (every counter also by ``type``, the event type name):

- ``msuite_events_published_total``, ``msuite_events_publish_errors_total``;
- ``msuite_events_received_total`` (from peers, accepted), ``msuite_events_unhandled_total``
  (received on a type this node has no handler for);
- ``msuite_events_dropped_total{reason}`` (:data:`~.bus.DROP_REASONS`);
- ``msuite_events_missed_total``: events a publisher's sequence says were sent and never arrived;
- per handler (label ``handler``): ``msuite_events_delivered_total``,
  ``msuite_events_handler_errors_total``, ``msuite_events_queued`` and the histogram
  ``msuite_events_handler_latency_seconds`` (arrival to the handler's return).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .bus import BUCKETS

if TYPE_CHECKING:
    from prometheus_client import Metric

    from .bus import Events

__all__ = ["EventsCollector"]


class EventsCollector(Collector):
    def __init__(self, events: Events) -> None:
        self.events = events

    def describe(self) -> Iterable[Metric]:
        return []  # families come from collect(); their label values are only known then

    def collect(self) -> Iterable[Metric]:
        counts = self.events.counts()
        per_type = {
            name: CounterMetricFamily(f"msuite_events_{name}", text, labels=["type"])
            for name, text in (
                ("published", "Events this node published."),
                ("publish_errors", "Events this node failed to publish."),
                ("received", "Events received from peers and accepted."),
                ("unhandled", "Events received on a type this node has no handler for."),
                ("missed", "Events a publisher's sequence shows were sent but never arrived."),
            )
        }
        dropped = CounterMetricFamily(
            "msuite_events_dropped", "Events dropped, by reason.", labels=["type", "reason"]
        )
        delivered = CounterMetricFamily(
            "msuite_events_delivered", "Events a handler returned from.", labels=["type", "handler"]
        )
        errors = CounterMetricFamily(
            "msuite_events_handler_errors", "Events a handler raised on.", labels=["type", "handler"]
        )
        queued = GaugeMetricFamily(
            "msuite_events_queued", "Events waiting in a handler's queue.", labels=["type", "handler"]
        )
        latency = HistogramMetricFamily(
            "msuite_events_handler_latency_seconds",
            "Seconds from an event's arrival (or publish) to its handler's return.",
            labels=["type", "handler"],
        )
        for type_name, report in counts.items():
            for name, family in per_type.items():
                family.add_metric([type_name], report[name])
            for reason, number in sorted(report["dropped"].items()):
                dropped.add_metric([type_name, reason], number)
            for slot in report["handlers"]:
                labels = [type_name, slot.name]
                delivered.add_metric(labels, slot.delivered)
                errors.add_metric(labels, slot.errors)
                queued.add_metric(labels, slot.queued)
                cumulative, buckets = 0, []
                for bound, number in zip((*BUCKETS, float("inf")), slot.latency.counts, strict=True):
                    cumulative += number
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                latency.add_metric(labels, buckets, slot.latency.sum)
        yield from per_type.values()
        yield from (dropped, delivered, errors, queued, latency)
