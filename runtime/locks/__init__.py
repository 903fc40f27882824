"""Distributed locks (``node.locker``) with fencing tokens.

Backends: ``memory`` (here); ``redis`` and ``zookeeper`` come with the rest of
the locker work and implement the same :class:`Locker` interface.
"""

from .locker import Lease, Locker, LockTimeout, locked
from .memory import MemoryLocker

__all__ = ["Lease", "LockTimeout", "Locker", "MemoryLocker", "locked"]
