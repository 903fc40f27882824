"""cProfile of the event-loop thread, its stats read in a worker thread."""

from __future__ import annotations

import cProfile
import io
import marshal
import pstats
from typing import Final

SORTS: Final = {"cumulative": "cumulative time", "tottime": "internal time", "calls": "call count"}
"""The ``sort`` values of the text report, and how it names them."""


class Profiler(cProfile.Profile):
    """A cProfile whose stats can be read in a worker thread.

    ``Profile.create_stats`` (which ``pstats.Stats`` calls) disables the profiler first, and disabling
    clears the profile function of the thread it runs in: in a worker thread, that would be the wrong
    one. The loop thread disables it; reading the stats only takes the snapshot.
    """

    def create_stats(self) -> None:
        self.snapshot_stats()


def pstats_bytes(profiler: Profiler) -> bytes:
    profiler.snapshot_stats()
    return marshal.dumps(profiler.stats)  # what Profile.dump_stats writes


def pstats_text(profiler: Profiler, seconds: float, sort: str, limit: int) -> str:
    out = io.StringIO()
    out.write(
        f"cProfile of the event-loop thread for {seconds:g} s, "
        f"top {limit} functions by {SORTS[sort]} (file:line(function))\n"
    )
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(sort).print_stats(limit)
    return out.getvalue()
