"""Whether a TCP port can be listened on, asked before a server tries.

grpc's C core logs its own multi-line error when it cannot bind (before msuite
can say which manifest line names the port), and py-libp2p listens with
SO_REUSEPORT, so its bind succeeds on a port another server holds and the
kernel splits the connections. A plain bind first (SO_REUSEADDR only, as a
server that restarts uses) tells either case cleanly.
"""

from __future__ import annotations

import socket

__all__ = ["bind_error"]


def bind_error(host: str, port: int) -> OSError | None:
    """Why a TCP listener on ``host``:``port`` cannot be bound now; None when it can (or ``port`` is 0)."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None
