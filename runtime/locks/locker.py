"""Distributed locks (``node.locker``): the interface every backend implements, and leases.

::

    async with node.locker.lock("invoice/42", timeout=5) as lease:
        await store_write(fencing_token=lease.fencing_token)

    lease = await node.locker.try_lock("invoice/42", timeout=5)
    try:
        ...
    finally:
        await lease.release()

Every lease carries a **fencing token**: an integer that increases for each new
holder of a key. Pass it along with the writes the lock protects, and have the
resource refuse a token lower than one it has seen: a holder that paused past
its lease (GC, a network partition) then cannot clobber the next holder's
work. ``lease.lost`` is set when a backend can no longer vouch for the lock
(a Redis lease not renewed within its TTL, a ZooKeeper session not heard from
within its timeout, or lost), before anyone else can take it.

Failures are msuite's own: :class:`LockTimeout` when the lock was not acquired
in time, :class:`LockError` (its base) for anything else a backend reports,
both naming the key and the backend; no client library's exception escapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from msuite import MsuiteError

__all__ = ["Lease", "LockError", "LockTimeout", "Locker", "check_key"]

MAX_KEY_LENGTH = 512


def check_key(key: str) -> str:
    """A lock key every backend accepts: non-empty text, at most 512 characters, no NUL,
    ``/``-separated parts that are neither empty nor ``.`` or ``..``."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise ValueError(f"a lock key is 1-{MAX_KEY_LENGTH} characters of text without NUL")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise ValueError("a lock key must be valid text (no lone surrogates)") from None
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"lock key {key!r}: '/'-separated parts cannot be empty, '.' or '..'")
    return key


class LockError(MsuiteError):
    """A lock operation failed; the message names the key and the backend, and the
    backend client's own exception is the ``__cause__``. No client error escapes a locker
    in any other form."""


class LockTimeout(LockError, TimeoutError):
    """The lock was not acquired in time (the key was held, or the backend did not answer
    in time); the message names the key and the backend, and the last backend error if any."""


class Lease:
    """A held lock. Release it once (further calls do nothing)."""

    def __init__(self, locker: Locker, key: str, fencing_token: int) -> None:
        self.key = key
        self.fencing_token = fencing_token
        self.lost = asyncio.Event()
        """Set when the backend lost the lock while it was held."""
        self._locker = locker
        self._released = False

    @property
    def held(self) -> bool:
        """True until released or lost."""
        return not self._released and not self.lost.is_set()

    async def release(self) -> None:
        """Give the lock up (only the holder's own lease can). Never raises; a network backend
        waits at most its ``release_timeout`` (1 s) and finishes in the background."""
        if self._released:
            return
        self._released = True
        await self._locker._release(self)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "lost" if self.lost.is_set() else "released"
        return f"Lease({self.key!r}, token={self.fencing_token}, {state})"


class Locker(Protocol):
    """What every backend provides."""

    backend: str

    def lock(self, key: str, timeout: float) -> AbstractAsyncContextManager[Lease]:
        """``async with locker.lock(key, timeout) as lease:``, released on exit."""
        ...

    async def try_lock(self, key: str, timeout: float) -> Lease:
        """Acquire ``key``, waiting up to ``timeout`` seconds (a silent server included); raises
        :class:`LockTimeout`, or :class:`LockError` when retrying cannot help."""
        ...

    async def _release(self, lease: Lease) -> None: ...

    async def close(self) -> None:
        """Release what this locker holds and close its connections."""
        ...

    def status(self) -> dict[str, object]:
        """Held keys and their tokens, for status pages."""
        ...


class LockerBase:
    """What every backend shares: the ``async with`` form of ``try_lock``."""

    def lock(self, key: str, timeout: float) -> AbstractAsyncContextManager[Lease]:
        """``async with locker.lock(key, timeout) as lease:``, released on exit."""
        return locked(self, key, timeout)  # type: ignore[arg-type]


@asynccontextmanager
async def locked(locker: Locker, key: str, timeout: float) -> AsyncIterator[Lease]:
    """``async with`` form of :meth:`Locker.try_lock`: released on exit, whatever happens."""
    lease = await locker.try_lock(key, timeout)
    try:
        yield lease
    finally:
        await lease.release()
