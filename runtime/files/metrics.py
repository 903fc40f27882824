"""The file sharing figures in ``/metrics``: read from :class:`~.files.Files` at scrape time.

- gauges ``msuite_files_blocks``, ``msuite_files_bytes`` (the blockstore), ``msuite_files_pins``,
  ``msuite_files_wants`` (blocks this node is fetching now);
- counters ``msuite_files_corrupt_blocks_total`` (blocks that failed verification on a read and
  were removed), ``msuite_files_duplicate_blocks_total`` (received again after another peer's
  copy), ``msuite_files_fetch_timeouts_total``;
- per peer (label ``peer``): ``msuite_files_blocks_sent_total``, ``msuite_files_bytes_sent_total``,
  ``msuite_files_blocks_received_total``, ``msuite_files_bytes_received_total``,
  ``msuite_files_rejected_blocks_total`` (bytes matching no wanted CID),
  ``msuite_files_bad_messages_total`` (streams reset for a malformed message).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client import Metric

    from .files import Files

__all__ = ["FilesCollector"]

PER_PEER = (
    ("blocks_sent", "Blocks sent to the peer."),
    ("bytes_sent", "Bytes of blocks sent to the peer."),
    ("blocks_received", "Blocks received from the peer and kept."),
    ("bytes_received", "Bytes of blocks received from the peer and kept."),
    ("rejected", "Blocks from the peer matching no wanted CID, dropped."),
    ("bad_messages", "Bitswap streams from the peer reset for a malformed message."),
)


class FilesCollector(Collector):
    def __init__(self, files: Files) -> None:
        self.files = files

    def describe(self) -> Iterable[Metric]:
        return []  # families come from collect(); their label values are only known then

    def collect(self) -> Iterable[Metric]:
        files = self.files
        status = files.status()
        if status.get("state") != "running":
            return
        bitswap = files.bitswap
        yield GaugeMetricFamily("msuite_files_blocks", "Blocks in the blockstore.", value=status["blocks"])
        yield GaugeMetricFamily(
            "msuite_files_bytes", "Bytes of blocks in the blockstore.", value=status["bytes"]
        )
        yield GaugeMetricFamily("msuite_files_pins", "Pinned CIDs.", value=status["pins"])
        yield GaugeMetricFamily(
            "msuite_files_wants", "Blocks being fetched now.", value=len(bitswap.wanted())
        )
        yield CounterMetricFamily(
            "msuite_files_corrupt_blocks",
            "Blocks that failed verification on a read and were removed.",
            value=status["corrupt_blocks"],
        )
        yield CounterMetricFamily(
            "msuite_files_duplicate_blocks", "Blocks received after another copy.", value=bitswap.duplicates
        )
        yield CounterMetricFamily(
            "msuite_files_fetch_timeouts", "Fetches no peer completed in time.", value=bitswap.timeouts
        )
        families = {
            name: CounterMetricFamily(f"msuite_files_{name}", text, labels=["peer"])
            for name, text in PER_PEER
        }
        for peer, stats in list(bitswap.stats.items()):
            snapshot = stats.snapshot()
            for name, family in families.items():
                family.add_metric([peer], snapshot[name])
        yield from families.values()
