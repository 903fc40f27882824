"""Streams a peer broke: counted for ``/status``, logged at most once per peer per minute.

The host resets an inbound stream whose handler raised (a frame that does not
parse, a handler's bug on what the peer sent) instead of letting the error end
the host; pubsub does the same for a bad frame on ``/meshsub/*``. Each such
reset is recorded here, from the trio thread. A peer sending garbage in a loop
costs one WARNING line a minute; the count shows the rest.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["LOG_EVERY", "PeerLogLimit", "StreamFaults"]

log = logging.getLogger("msuite.p2p")

LOG_EVERY = 60.0
"""Seconds between two log lines about one peer's faults."""

RECENT = 16
"""How many of the last faults ``/status`` shows."""

_REMEMBERED = 1024
"""Peers whose last log line is remembered (older entries are dropped beyond this)."""


class PeerLogLimit:
    """At most one log line per peer per :data:`LOG_EVERY` seconds; the lines held back are counted
    and told with the next one."""

    def __init__(self) -> None:
        self._logged: dict[str, tuple[float, int]] = {}
        """peer -> (when its last line was logged, lines held back since then)."""

    def allow(self, peer: str) -> int | None:
        """None: hold this line back; else log it, with the number held back since the last one."""
        now = time.monotonic()
        last, unlogged = self._logged.get(peer, (None, 0))
        if last is not None and now - last < LOG_EVERY:
            self._logged[peer] = (last, unlogged + 1)
            return None
        if len(self._logged) >= _REMEMBERED:
            self._logged = {p: v for p, v in self._logged.items() if now - v[0] < LOG_EVERY}
        self._logged[peer] = (now, 0)
        return unlogged


class StreamFaults:
    """Streams reset because of what a peer sent; ``record`` is called in the trio thread."""

    def __init__(self) -> None:
        self.count = 0
        self.by_protocol: dict[str, int] = {}
        self.recent: list[dict[str, Any]] = []
        self._limit = PeerLogLimit()

    def record(self, peer: str, protocol: str, error: BaseException) -> None:
        protocol = protocol or "(none negotiated)"
        reason = f"{type(error).__name__}: {error}"[:300]
        self.count += 1
        self.by_protocol = {**self.by_protocol, protocol: self.by_protocol.get(protocol, 0) + 1}
        entry = {"peer": peer, "protocol": protocol, "error": reason, "at": round(time.time(), 3)}
        self.recent = [*self.recent[-(RECENT - 1) :], entry]
        unlogged = self._limit.allow(peer)
        if unlogged is None:
            return
        more = f" ({unlogged} more from this peer in the last minute)" if unlogged else ""
        log.warning("reset a %s stream from %s: %s%s", protocol, peer, reason, more)
        log.debug("the stream's error", exc_info=error)

    def status(self) -> dict[str, Any]:
        return {"count": self.count, "by_protocol": dict(self.by_protocol), "recent": list(self.recent)}
