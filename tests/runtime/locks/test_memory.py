"""The memory locker beyond the shared cases: fairness, cancellation, close."""

from __future__ import annotations

import asyncio

import pytest

from msuite.runtime.locks import LockError, LockTimeout, MemoryLocker


async def test_waiters_are_served_in_order() -> None:
    locker = MemoryLocker()
    order: list[int] = []
    held = await locker.try_lock("k", timeout=1)

    async def waiter(n: int) -> None:
        async with locker.lock("k", timeout=5):
            order.append(n)

    waiting = [asyncio.create_task(waiter(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    await held.release()
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3, 4]


async def test_a_cancelled_or_timed_out_waiter_does_not_block_the_queue() -> None:
    locker = MemoryLocker()
    held = await locker.try_lock("k", timeout=1)
    cancelled = asyncio.create_task(locker.try_lock("k", timeout=5))
    with pytest.raises(LockTimeout):
        await locker.try_lock("k", timeout=0.01)
    patient = asyncio.create_task(locker.try_lock("k", timeout=5))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await held.release()
    lease = await asyncio.wait_for(patient, 1)  # the queue moved on
    # the lock may have been granted to the cancelled waiter an instant before its
    # cancellation ran; it passed it on, so tokens still only grow
    assert lease.fencing_token >= 2
    assert await asyncio.gather(cancelled, return_exceptions=True) != [None]
    await lease.release()
    assert locker.status()["held"] == {}


async def test_close_marks_held_leases_lost() -> None:
    locker = MemoryLocker()
    lease = await locker.try_lock("k", timeout=1)
    waiting = asyncio.ensure_future(locker.try_lock("k", timeout=5))
    await asyncio.sleep(0)
    await locker.close()
    assert lease.lost.is_set() and not lease.held
    with pytest.raises(LockError, match=r"lock 'k' \(backend memory\): the locker was closed while waiting"):
        await waiting
    with pytest.raises(LockError, match=r"lock 'k' \(backend memory\): the locker is closed"):
        await locker.try_lock("k", timeout=1)
