"""The go-msuite locker cases and the lease contract, on every backend (Redis for real)."""

from __future__ import annotations

import asyncio

import pytest

from msuite.runtime.locks import LockTimeout
from msuite.runtime.locks.locker import Locker


async def test_simple(locker: Locker) -> None:
    async with locker.lock("k", timeout=1) as lease:
        assert lease.held and lease.fencing_token == 1
        assert "k" in locker.status()["held"]  # type: ignore[operator]
    assert not lease.held and locker.status()["held"] == {}


async def test_sequential_x3_tokens_grow(locker: Locker) -> None:
    tokens = []
    for _ in range(3):
        async with locker.lock("k", timeout=1) as lease:
            tokens.append(lease.fencing_token)
    assert tokens == [1, 2, 3]
    async with locker.lock("other", timeout=1) as lease:
        assert lease.fencing_token == 1  # counted per key


async def test_second_try_lock_fails_while_held(locker: Locker) -> None:
    lease = await locker.try_lock("k", timeout=1)
    with pytest.raises(LockTimeout, match=rf"lock 'k' \(backend {locker.backend}\) not acquired within 0.1s"):
        await locker.try_lock("k", timeout=0.1)
    await lease.release()
    again = await locker.try_lock("k", timeout=0.5)
    assert again.fencing_token > lease.fencing_token  # ZooKeeper counts the waiter's attempt too
    await again.release()


async def test_a_stale_lease_cannot_release_the_next_holder(locker: Locker) -> None:
    first = await locker.try_lock("k", timeout=1)
    await first.release()
    second = await locker.try_lock("k", timeout=1)
    await first.release()  # idempotent, and not the holder any more
    assert second.held
    with pytest.raises(LockTimeout):
        await locker.try_lock("k", timeout=0.05)
    await second.release()


async def test_contenders_lose_no_increment_and_tokens_grow(locker: Locker) -> None:
    counter = 0
    tokens: list[int] = []

    async def contender() -> None:
        nonlocal counter
        for _ in range(10):
            async with locker.lock("counter", timeout=20) as lease:
                value = counter
                await asyncio.sleep(0.001)  # read-modify-write across a suspension
                counter = value + 1
                tokens.append(lease.fencing_token)

    await asyncio.wait_for(asyncio.gather(*(contender() for _ in range(5))), 60)
    assert counter == 50
    assert tokens == sorted(tokens) and len(set(tokens)) == 50


async def test_an_exception_inside_releases_the_lock(locker: Locker) -> None:
    with pytest.raises(RuntimeError):
        async with locker.lock("k", timeout=1):
            raise RuntimeError("work failed")
    async with locker.lock("k", timeout=0.5) as lease:
        assert lease.fencing_token == 2


@pytest.mark.parametrize("key", ["", "/", "a//b", "a/../b", ".", "x" * 600, "nul\x00"])
async def test_bad_keys_are_clear_errors(locker: Locker, key: str) -> None:
    with pytest.raises(ValueError, match="lock key"):
        await locker.try_lock(key, timeout=0.1)


async def test_nested_and_unicode_keys(locker: Locker) -> None:
    async with locker.lock("tenant/ñ/invoice 42", timeout=2) as lease:
        assert lease.key == "tenant/ñ/invoice 42" and lease.fencing_token == 1
