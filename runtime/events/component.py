"""Component ``events`` (``events:``, with ``p2p:``; ``node.events``).

It requires ``p2p`` (its topics live on the host's GossipSub) and uses
``metrics`` when the manifest enables it (its counters are read at scrape
time). It starts after the host and before the servers, whose user code may
register handlers (``events`` is in ``USER_CODE_USES``), and stops before the
host: it leaves its topics, then gives queued events the shutdown grace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec

if TYPE_CHECKING:
    from .bus import Events

__all__ = ["EVENTS"]


def _build(context: BuildContext) -> Events:
    from msuite.runtime.p2p.host import P2PHost

    from .bus import Events

    events = Events(context.manifest, context.require("p2p", P2PHost), context.dependencies)
    if context.manifest.diagnostics.metrics is not None:
        from msuite.runtime.diagnostics.component import MetricsComponent

        from .metrics import EventsCollector

        metrics = context.use("metrics", MetricsComponent)
        if metrics is not None:
            metrics.metrics.register(EventsCollector(events))
    return events


def _events(component: Events, built: Mapping[str, Any]) -> Events:
    return component


EVENTS = ComponentSpec(
    "events",
    _build,
    enabled=lambda m: bool(m.events) and m.p2p is not None,
    key=("events",),
    requires=("p2p",),
    uses=("metrics",),
    accessors={"events": _events},
)
