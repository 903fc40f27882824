"""The lean yamux read and write of the gRPC pipe: :func:`read`, :func:`write`, :data:`FRAME_PAYLOAD`.

They read py-libp2p's yamux internals, so they live in :mod:`.compat` with
msuite's other adjustments to py-libp2p (what they do and what they measured
is written there); this module keeps the names the pipe uses. Credit in
batches is not process-wide: it applies to the streams of a host given to
:func:`.compat.batch_yamux_credit`, which ``host.build_host`` does.
"""

from __future__ import annotations

from .compat import FRAME_PAYLOAD, read, write

__all__ = ["FRAME_PAYLOAD", "read", "write"]
