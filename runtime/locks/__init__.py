"""Distributed locks (``node.locker``) with fencing tokens.

Backends: ``memory`` (:class:`MemoryLocker`), ``redis``
(:mod:`msuite.runtime.locks.redis`) and ``zookeeper``
(:mod:`msuite.runtime.locks.zookeeper`), all behind the :class:`Locker`
interface; the network backends import their client library only when used.
"""

from .locker import Lease, Locker, LockError, LockTimeout, locked
from .memory import MemoryLocker

__all__ = ["Lease", "LockError", "LockTimeout", "Locker", "MemoryLocker", "locked"]
