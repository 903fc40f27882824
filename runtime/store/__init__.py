"""The key-value store every node has (``node.store``), and its byte-level backends."""

from .items import codec_for, new_id
from .kv import KV, KVError, LevelDB, Memory, Prefixed, Snapshot
from .store import AlreadyExists, Batch, DecodeError, NotFound, Sort, Store, StoreError

__all__ = [
    "KV",
    "AlreadyExists",
    "Batch",
    "DecodeError",
    "KVError",
    "LevelDB",
    "Memory",
    "NotFound",
    "Prefixed",
    "Snapshot",
    "Sort",
    "Store",
    "StoreError",
    "codec_for",
    "new_id",
]
