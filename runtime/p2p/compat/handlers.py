"""A guard around every stream handler of msuite's host: one peer's stream never takes the host down.

In py-libp2p 0.8.1 an inbound stream's handler (protocol negotiation, then the
handler set for the protocol) runs in its connection's nursery, and whatever
it raises propagates from there to the swarm and ends ``host.run``: one
handler's unexpected exception, from one peer's stream, stopped every
service of the node. py-libp2p's own negotiation even raises
``StreamFailure`` on purpose when no protocol was agreed. msuite wraps the
network's one entry for inbound streams (``Swarm.common_stream_handler``,
set through ``INetwork.set_stream_handler``) on its own host: an exception is
reported (``on_fault``), the stream is reset, and nothing else happens. A
handler that did not catch its stream ending (the peer closed, reset or left)
is not reported: the stream is reset quietly. Cancellation passes through
untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.swarm import Swarm

from .gate import active, missing_attributes, register

__all__ = ["guard_stream_handlers"]

log = logging.getLogger("msuite.p2p")


def _missing_guard() -> list[str]:
    return missing_attributes(Swarm, ("common_stream_handler", "set_stream_handler"))


def guard_stream_handlers(host: IHost, on_fault: Callable[[str, str, BaseException], None]) -> bool:
    """Make an exception from any inbound stream's handler on ``host`` reset that stream and call
    ``on_fault(peer_id, protocol, exception)`` instead of ending the host. Call it before the host
    runs; twice changes nothing. False when the adjustment is not active."""
    if not active("stream_guard"):
        return False
    network: Any = host.get_network()
    inner = network.common_stream_handler
    if getattr(inner, "msuite_guard", False):
        return True

    from libp2p.io.exceptions import IOException
    from libp2p.network.stream.exceptions import StreamError
    from libp2p.stream_muxer.exceptions import MuxedStreamError

    gone = (StreamError, MuxedStreamError, IOException)  # the peer closed, reset or left: no fault

    async def guarded(stream: INetStream) -> None:
        try:
            await inner(stream)
        except Exception as exc:
            with trio.move_on_after(2):
                try:
                    await stream.reset()
                except Exception:
                    log.debug("resetting a failed stream failed", exc_info=True)
            peer = getattr(getattr(stream, "muxed_conn", None), "peer_id", "?")
            protocol = str(stream.get_protocol() or "")
            if isinstance(exc, gone):
                log.debug("a %s stream of %s ended in its handler: %r", protocol, peer, exc)
            else:
                on_fault(str(peer), protocol, exc)

    guarded.msuite_guard = True  # type: ignore[attr-defined]
    network.set_stream_handler(guarded)
    return True


register(
    "stream_guard",
    _missing_guard,
    "an exception in any inbound stream's handler takes the whole p2p host down",
    verified=("0.8.1",),
)
