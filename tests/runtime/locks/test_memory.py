"""The memory locker: the go-msuite locker cases, fencing tokens, fairness, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from msuite.runtime.locks import LockTimeout, MemoryLocker


async def test_simple_lock_and_release() -> None:
    locker = MemoryLocker()
    async with locker.lock("k", timeout=1) as lease:
        assert lease.held and lease.fencing_token == 1
        assert locker.status()["held"] == {"k": {"token": 1, "waiting": 0}}
    assert not lease.held and locker.status()["held"] == {}


async def test_sequential_locks_get_growing_tokens() -> None:
    locker = MemoryLocker()
    tokens = []
    for _ in range(3):
        async with locker.lock("k", timeout=1) as lease:
            tokens.append(lease.fencing_token)
    assert tokens == [1, 2, 3]
    async with locker.lock("other", timeout=1) as lease:
        assert lease.fencing_token == 1  # counted per key


async def test_second_try_lock_fails_while_held() -> None:
    locker = MemoryLocker()
    lease = await locker.try_lock("k", timeout=1)
    with pytest.raises(LockTimeout, match=r"lock 'k' \(backend memory\) not acquired within 0.05s"):
        await locker.try_lock("k", timeout=0.05)
    await lease.release()
    again = await locker.try_lock("k", timeout=0.05)
    assert again.fencing_token == 2
    await again.release()


async def test_release_is_idempotent_and_only_the_holder_releases() -> None:
    locker = MemoryLocker()
    first = await locker.try_lock("k", timeout=1)
    await first.release()
    second = await locker.try_lock("k", timeout=1)
    await first.release()  # a stale lease cannot release the new holder's lock
    assert second.held
    with pytest.raises(LockTimeout):
        await locker.try_lock("k", timeout=0.02)
    await second.release()


async def test_contenders_lose_no_increment_and_tokens_grow() -> None:
    locker = MemoryLocker()
    counter = 0
    tokens: list[int] = []

    async def contender() -> None:
        nonlocal counter
        for _ in range(20):
            async with locker.lock("counter", timeout=10) as lease:
                value = counter
                await asyncio.sleep(0)  # read-modify-write across a suspension
                counter = value + 1
                tokens.append(lease.fencing_token)

    await asyncio.wait_for(asyncio.gather(*(contender() for _ in range(10))), 30)
    assert counter == 200
    assert tokens == sorted(tokens) and len(set(tokens)) == 200


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


async def test_exceptions_inside_release_the_lock() -> None:
    locker = MemoryLocker()
    with pytest.raises(RuntimeError):
        async with locker.lock("k", timeout=1):
            raise RuntimeError("work failed")
    async with locker.lock("k", timeout=0.05) as lease:
        assert lease.fencing_token == 2


async def test_close_marks_held_leases_lost() -> None:
    locker = MemoryLocker()
    lease = await locker.try_lock("k", timeout=1)
    await locker.close()
    assert lease.lost.is_set() and not lease.held
    with pytest.raises(RuntimeError, match="closed"):
        await locker.try_lock("k", timeout=1)
