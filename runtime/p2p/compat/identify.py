"""Identify with msuite's agent version, on msuite's host only.

py-libp2p 0.8.1 answers identify with the module global ``AGENT_VERSION``
(``py-libp2p/<version>``) for every host of the process; rewriting that global
would rename every other py-libp2p user's hosts too. msuite sets its own
identify handler on its own host (``/ipfs/id/1.0.0``): py-libp2p's message,
built by py-libp2p (``_mk_identify_protobuf``), with ``agent_version``
replaced, written as py-libp2p writes it (length-prefixed). Identify-push,
which py-libp2p sends only when the host's listen addresses change (at start,
before any peer is connected), still carries py-libp2p's agent version.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio
from libp2p.abc import IHost, INetStream

from .gate import active, register

__all__ = ["set_agent_version"]

log = logging.getLogger("msuite.p2p")


def _missing_identify() -> list[str]:
    from libp2p.identity.identify import identify

    names = ("ID", "_mk_identify_protobuf", "_remote_address_to_multiaddr")
    return [f"libp2p.identity.identify.identify.{name}" for name in names if not hasattr(identify, name)]


def set_agent_version(host: IHost, agent_version: str) -> bool:
    """Answer identify on ``host`` with ``agent_version``. False (py-libp2p's own answer) when the
    adjustment is not active."""
    if not active("identify_agent"):
        return False
    from libp2p.identity.identify import identify

    host.set_stream_handler(identify.ID, _handler(host, agent_version))
    return True


def _handler(host: IHost, agent_version: str) -> Any:
    from libp2p.identity.identify import identify
    from libp2p.utils.varint import encode_uvarint

    async def handle_identify(stream: INetStream) -> None:
        try:
            observed = identify._remote_address_to_multiaddr(stream.get_remote_address())
        except Exception:
            observed = None
        message = identify._mk_identify_protobuf(host, observed)
        message.agent_version = agent_version
        payload = message.SerializeToString()
        try:
            await stream.write(encode_uvarint(len(payload)) + payload)
        except Exception as exc:
            log.debug("identify: no answer sent to %s: %r", stream.muxed_conn.peer_id, exc)
            with trio.move_on_after(2):
                with contextlib.suppress(Exception):
                    await stream.reset()
            return
        with trio.move_on_after(2):
            with contextlib.suppress(Exception):
                await stream.close()

    return handle_identify


register(
    "identify_agent",
    _missing_identify,
    "peers see the agent version py-libp2p/<version> instead of msuite/<version>",
    verified=("0.8.1",),
)
