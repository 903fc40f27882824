"""The lean yamux read and write of the gRPC pipe: :func:`read`, :func:`write`, :data:`FRAME_PAYLOAD`.

They read py-libp2p's yamux internals, so they live in :mod:`.compat` with
msuite's other adjustments to py-libp2p (see ``compat/_yamux.py`` for what
they do and what they measured); this module keeps the names the pipe uses.
Credit in batches is no longer process-wide: it applies to the streams of a
host given to :func:`.compat.batch_yamux_credit`.
"""

from __future__ import annotations

from . import compat
from .compat import FRAME_PAYLOAD, read, write

__all__ = ["FRAME_PAYLOAD", "install", "read", "write"]


def install() -> bool:
    """Transitional, for ``host.build_host`` until it calls :func:`.compat.batch_yamux_credit`:
    runs :func:`.compat.apply` and says whether credit batching is available. Patches nothing."""
    return bool(compat.apply()["patches"]["yamux_credit"])
