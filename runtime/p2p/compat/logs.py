"""py-libp2p's log records routed to standard logging (its loggers are process-wide, so this is too)."""

from __future__ import annotations

import logging

from .gate import register

__all__ = ["route_logs"]

_NOISY = (
    "libp2p.host.basic_host",
    "libp2p.protocol_muxer.multiselect_client",
    "libp2p.transport.tcp.tcp",
    "libp2p.network.swarm",
)


class _Demote(logging.Filter):
    """py-libp2p logs a failed stream open at ERROR, with a multi-line dump, although the caller
    gets the exception and msuite reports it where it matters (``PeerUnreachable``, the mesher's
    DEBUG lines): such records become DEBUG records."""

    PREFIXES = (
        "Failed to open stream",
        "MultiselectClient handshake",
        "Failed to open TCP stream",
        "Failed to dial",
        "fail to upgrade",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self.PREFIXES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("libp2p").isEnabledFor(logging.DEBUG)
        return True


def route_logs() -> None:
    """py-libp2p sends its records to raw stderr (no handler, no propagation): route them to ours.

    Loggers are process-wide, so this is: it touches ``logging`` only. Call it again after
    more of py-libp2p is imported (each module makes its logger on import); twice is once."""
    root = logging.getLogger("libp2p")
    root.handlers.clear()
    root.propagate = True
    root.setLevel(logging.WARNING)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("libp2p.") and isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
    for name in _NOISY:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Demote) for f in logger.filters):
            logger.addFilter(_Demote())


register("log_routing", lambda: [], "")
