"""The memory locker: locks shared by the tasks of one process (``locker: {backend: memory}``).

Waiters are served first come, first served; a released lock is handed
straight to the next waiter, so nobody can barge in ahead of the queue.
Fencing tokens count per key from 1 and only grow.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from .locker import Lease, LockerBase, LockError, LockTimeout, check_key

__all__ = ["MemoryLocker"]


@dataclass
class _Key:
    holder: Lease | None = None
    waiters: deque[asyncio.Future[Lease]] = field(default_factory=deque)
    tokens: int = 0


class MemoryLocker(LockerBase):
    """Process-local locks with the same API (and fencing tokens) as the network backends."""

    backend = "memory"

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._closed = False

    async def try_lock(self, key: str, timeout: float) -> Lease:
        check_key(key)
        if self._closed:
            raise LockError(f"lock {key!r} (backend memory): the locker is closed")
        state = self._keys.setdefault(key, _Key())
        if state.holder is None and not state.waiters:
            return self._grant(key, state)
        waiter: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                await waiter.result().release()  # granted just as we gave up: pass it on
            else:
                waiter.cancel()
                if waiter in state.waiters:
                    state.waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise LockTimeout(f"lock {key!r} (backend memory) not acquired within {timeout:g}s") from None
            raise

    def _grant(self, key: str, state: _Key) -> Lease:
        state.tokens += 1
        state.holder = Lease(self, key, state.tokens)
        return state.holder

    async def _release(self, lease: Lease) -> None:
        state = self._keys.get(lease.key)
        if state is None or state.holder is not lease:
            return
        state.holder = None
        while state.waiters:  # hand over to the first waiter still waiting
            waiter = state.waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._grant(lease.key, state))
                return
        # the key's state (and its token counter) stays: tokens must keep growing

    async def close(self) -> None:
        self._closed = True
        for key, state in self._keys.items():
            for waiter in state.waiters:
                if not waiter.done():
                    waiter.set_exception(
                        LockError(f"lock {key!r} (backend memory): the locker was closed while waiting")
                    )
            state.waiters.clear()
            if state.holder is not None:
                state.holder.lost.set()
                state.holder = None

    def status(self) -> dict[str, object]:
        """Held keys with their tokens, and how many wait for each (for status pages)."""
        return {
            "backend": self.backend,
            "held": {
                key: {"token": state.holder.fencing_token, "waiting": len(state.waiters)}
                for key, state in sorted(self._keys.items())
                if state.holder is not None
            },
        }
