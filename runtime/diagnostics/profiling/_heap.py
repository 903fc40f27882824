"""tracemalloc summaries: the statistics of a snapshot, as text or JSON."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import dataclass, field
from typing import Final

# tracemalloc's own frames and the import machinery's are noise in a heap summary
_HEAP_FILTERS: Final = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "*/importlib/_bootstrap*.py"),
    tracemalloc.Filter(False, "<unknown>"),
)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass
class HeapReport:
    group: str
    limit: int
    started_here: bool
    window: float
    traceback_limit: int
    current: int
    peak: int
    statistics: list[tracemalloc.Statistic] = field(default_factory=list)

    def total(self) -> tuple[int, int]:
        return sum(stat.size for stat in self.statistics), sum(stat.count for stat in self.statistics)

    def top(self) -> list[tracemalloc.Statistic]:
        return self.statistics[: self.limit]

    def location(self, stat: tracemalloc.Statistic) -> str:
        frame = stat.traceback[0]
        return frame.filename if self.group == "filename" else f"{frame.filename}:{frame.lineno}"

    def text(self) -> str:
        size, count = self.total()
        if self.started_here:
            scope = (
                f"blocks allocated during the {self.window:g} s window and still alive at its end "
                f"(tracing started and stopped by this request, "
                f"{self.traceback_limit} frame(s) per traceback)"
            )
        else:
            scope = (
                "every live traced block (tracemalloc was already tracing, "
                f"{self.traceback_limit} frame(s) per traceback)"
            )
        top = self.top()
        lines = [
            f"tracemalloc heap summary: {scope}",
            f"traced memory (before filters): current {_size(self.current)}, peak {_size(self.peak)}",
            f"total (after filters): {_size(size)} in {count} blocks",
            f"top {len(top)} of {len(self.statistics)} by size, grouped by {self.group}:",
            "",
        ]
        for stat in top:
            if self.group == "traceback":
                lines.append(
                    f"{_size(stat.size):>12} {stat.count:>9} blocks, allocated at (most recent last):"
                )
                lines.extend("    " + line for line in stat.traceback.format())
            else:
                lines.append(f"{_size(stat.size):>12} {stat.count:>9} blocks  {self.location(stat)}")
        lines.append("")
        return "\n".join(lines)

    def json(self) -> str:
        size, count = self.total()
        body = {
            "started_tracing": self.started_here,
            "window_seconds": self.window if self.started_here else 0,
            "traceback_limit": self.traceback_limit,
            "group": self.group,
            "traced_memory": {"current": self.current, "peak": self.peak},
            "total_size": size,
            "total_count": count,
            "statistics_count": len(self.statistics),
            "statistics": [
                {
                    "size": stat.size,
                    "count": stat.count,
                    "traceback": [
                        {"file": frame.filename, "line": frame.lineno if self.group != "filename" else None}
                        for frame in stat.traceback
                    ],
                }
                for stat in self.top()
            ],
        }
        return json.dumps(body, indent=1)


def heap_statistics(snapshot: tracemalloc.Snapshot, group: str) -> list[tracemalloc.Statistic]:
    return snapshot.filter_traces(_HEAP_FILTERS).statistics(group)
