"""The name -> CID index of the cdn: one :class:`FileEntry` per name, in the shared store.

The index lives in the shared namespace ``cdn`` (``node.shared("cdn")``), so every cdn node on the
channel knows every name, whichever node took the upload; the bytes live in ``node.files`` under
the entry's CID and move between nodes over Bitswap when a node that lacks them serves them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel

__all__ = ["MAX_NAME", "NAMESPACE", "FileEntry", "name_problem"]

NAMESPACE = "cdn"
"""The shared store namespace of the index."""

MAX_NAME = 255
"""The longest name, in characters."""


class FileEntry(BaseModel):
    """What a name points to. ``created`` and ``updated`` are kept by the store."""

    store_namespace: ClassVar[str] = NAMESPACE
    id: str
    """The name."""
    cid: str
    """The CID of the bytes (CIDv1, base32), as ``node.files.add`` returned it."""
    size: int
    content_type: str
    """The ``Content-Type`` of the upload (``application/octet-stream`` when it had none)."""
    created: datetime | None = None
    updated: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as the HTTP API shows it."""
        return {
            "name": self.id,
            "cid": self.cid,
            "size": self.size,
            "content_type": self.content_type,
            "created": self.created.isoformat() if self.created else None,
        }


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a file, or None when it can: 1-255 characters, no ``/``, no
    control characters, not ``.`` or ``..`` (which clients rewrite in URLs)."""
    if not name:
        return "a file name must not be empty"
    if len(name) > MAX_NAME:
        return f"a file name has at most {MAX_NAME} characters, not {len(name)}"
    if "/" in name:
        return "a file name must not contain '/'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "a file name must not contain control characters"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    return None
