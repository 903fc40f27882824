"""The fault checks both network backends must pass, run against a real server of each (issue 21)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from msuite.runtime.locks import LockTimeout
from msuite.runtime.locks.locker import Locker
from tests.servers import TcpProxy, frozen

T = TypeVar("T")


async def stamped(awaitable: Awaitable[T]) -> tuple[float, T]:
    """``awaitable``'s result with the loop time it arrived."""
    result = await awaitable
    return asyncio.get_running_loop().time(), result


async def try_lock_overshoot(server: Any, locker: Locker, other: Locker, *, free_within: float) -> float:
    """The largest overshoot of ``try_lock``'s timeout (0.3 s, 1 s) while ``server`` is frozen.

    Afterwards ``other`` must get the lock within ``free_within`` seconds: what the frozen
    server ran on waking was undone in the background.
    """
    loop = asyncio.get_running_loop()
    await (await locker.try_lock("warm", timeout=5)).release()
    overshoots = []
    with frozen(server):
        for timeout in (0.3, 1.0):
            started = loop.time()
            with pytest.raises(LockTimeout, match=rf"lock 'job' \(backend {locker.backend}\)"):
                await locker.try_lock("job", timeout=timeout)
            overshoots.append(loop.time() - started - timeout)
    print(f"{locker.backend} frozen: try_lock overshoot {max(overshoots) * 1000:.0f} ms")
    await (await other.try_lock("job", timeout=free_within)).release()
    return max(overshoots)


async def partition_timings(proxy: TcpProxy, holder: Locker, other: Locker) -> tuple[float, float]:
    """Cut ``holder`` (connected through ``proxy``) off while it holds ``job`` and ``other`` waits.

    Returns (holder told of the loss, other acquired), in seconds after the cut; checks that
    the lease is no longer held and that the next holder's fencing token is higher.
    """
    loop = asyncio.get_running_loop()
    lease = await holder.try_lock("job", timeout=10)
    lost = asyncio.ensure_future(stamped(lease.lost.wait()))
    taking = asyncio.ensure_future(stamped(other.try_lock("job", timeout=20)))
    await asyncio.sleep(0.5)  # the other client is waiting behind the holder
    cut_at = loop.time()
    proxy.cut()
    lost_at, _ = await asyncio.wait_for(lost, 10)
    acquired_at, again = await taking
    print(
        f"{holder.backend} partition: lost {lost_at - cut_at:.2f}s, other acquired {acquired_at - cut_at:.2f}s"
    )
    assert not lease.held
    assert again.fencing_token > lease.fencing_token
    await again.release()
    return lost_at - cut_at, acquired_at - cut_at
