"""The Redis locker against a real redis-server: processes, crashes, restarts, passwords."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from msuite.runtime.locks import LockError, LockTimeout
from msuite.runtime.locks.redis import RedisLocker
from tests.helpers import REPO
from tests.runtime.locks.faults import partition_timings, try_lock_overshoot
from tests.servers import RedisServer, TcpProxy

CONTENDER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from msuite.runtime.locks.redis import RedisLocker

    async def main(url, rounds):
        locker = RedisLocker(url, ttl=2)
        client = aioredis.Redis.from_url(url, decode_responses=True)
        for _ in range(rounds):
            async with locker.lock("counter", timeout=30) as lease:
                value = int(await client.get("count") or 0)
                await asyncio.sleep(0.001)
                await client.set("count", value + 1)
                await client.rpush("tokens", lease.fencing_token)
        await client.aclose()
        await locker.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_contender_processes_lose_no_increment(redis_server: RedisServer) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", CONTENDER, redis_server.url, "25"], cwd=REPO)
        for _ in range(4)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0

    async def check() -> None:
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        assert int(await client.get("count") or 0) == 100
        tokens = [int(t) for t in await client.lrange("tokens", 0, -1)]
        assert tokens == list(range(1, 101))  # strictly increasing, one per holder
        await client.aclose()

    asyncio.run(check())


def test_a_killed_holder_frees_the_lock_within_the_ttl(redis_server: RedisServer) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys\nfrom msuite.runtime.locks.redis import RedisLocker\n"
            "async def main():\n"
            f"    lease = await RedisLocker({redis_server.url!r}, ttl=1).try_lock('job', timeout=5)\n"
            "    print('held', lease.fencing_token, flush=True)\n"
            "    await asyncio.sleep(60)\n"
            "asyncio.run(main())\n",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held 1\n"

    async def take_over() -> float:
        locker = RedisLocker(redis_server.url, ttl=1)
        with pytest.raises(LockTimeout):
            await locker.try_lock("job", timeout=0.2)  # renewed while the holder lives
        os.kill(holder.pid, signal.SIGKILL)
        started = time.monotonic()
        lease = await locker.try_lock("job", timeout=5)
        waited = time.monotonic() - started
        assert lease.fencing_token == 2
        await locker.close()
        return waited

    waited = asyncio.run(take_over())
    holder.wait(timeout=10)
    holder.stdout.close()
    assert waited < 1.5  # the TTL is 1 s


async def test_a_lease_that_cannot_be_renewed_is_marked_lost(redis_server: RedisServer) -> None:
    locker = RedisLocker(redis_server.url, ttl=0.3)
    lease = await locker.try_lock("k", timeout=1)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.delete("msuite/locks:lock:k")  # as if the lease had expired under us
    await asyncio.wait_for(lease.lost.wait(), 2)
    assert not lease.held
    await lease.release()  # releasing a lost lease is harmless
    await client.aclose()
    await locker.close()


async def test_the_locker_works_again_after_redis_restarts(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    locker = RedisLocker(server.url, ttl=2)
    try:
        async with locker.lock("k", timeout=1) as lease:
            assert lease.fencing_token == 1
        server.restart()  # idle restart; with persistence on, tokens keep growing
        async with locker.lock("k", timeout=1) as lease:  # reconnects by itself
            assert lease.fencing_token == 2
    finally:
        await locker.close()
        server.stop()


async def test_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        good = RedisLocker(server.url, password="s3cret-pw")
        async with good.lock("k", timeout=1) as lease:
            assert lease.fencing_token == 1
        await good.close()
        bad = RedisLocker(server.url, password="wrong")
        with pytest.raises(Exception, match=r"(?i)auth|password"):
            await bad.try_lock("k", timeout=1)
        await bad.close()
    finally:
        server.stop()


async def test_from_manifest_settings(redis_server: RedisServer) -> None:
    from msuite.spec import loads_manifest

    manifest = loads_manifest(
        f"name: n\nlocker: {{backend: redis, url: '{redis_server.url}', ttl: 3s, prefix: app/locks}}\n"
    )
    assert manifest.locker is not None
    locker = RedisLocker.from_settings(manifest.locker)
    assert (locker.ttl, locker.prefix) == (3.0, "app/locks")
    async with locker.lock("x", timeout=1):
        client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        assert await client.exists("app/locks:lock:x") == 1
        await client.aclose()
    await locker.close()


async def test_keys_cannot_collide_with_fence_counters(redis_server: RedisServer) -> None:
    locker = RedisLocker(redis_server.url)
    async with locker.lock("x", timeout=1):
        pass
    async with locker.lock("x/fence", timeout=1) as lease:  # once the same Redis key as x's counter
        assert lease.fencing_token == 1
    async with locker.lock("y/fence", timeout=1), locker.lock("y", timeout=1) as lease:
        assert lease.fencing_token == 1
    await locker.close()


async def test_a_silent_server_marks_the_lease_lost_within_the_ttl(redis_server: RedisServer) -> None:
    assert redis_server.process is not None
    locker = RedisLocker(redis_server.url, ttl=1)
    lease = await locker.try_lock("k", timeout=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # the server goes silent
    try:
        await asyncio.wait_for(lease.lost.wait(), 5)
        assert loop.time() - started < 1.5  # within the TTL (renewals every 1/3 s)
        with pytest.raises(LockTimeout):
            await asyncio.wait_for(locker.try_lock("other", timeout=0.5), 3)  # bounded
        closing = loop.time()
        await locker.close()  # bounded too
        assert loop.time() - closing < 5
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)


async def test_wrong_password_is_not_retried_into_a_timeout(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        bad = RedisLocker(server.url, password="wrong")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LockError, match=r"lock 'k' \(backend redis\): .*(?i:auth|password)") as info:
            await bad.try_lock("k", timeout=5)
        assert not isinstance(info.value, LockTimeout) and loop.time() - started < 2
        await bad.close()
    finally:
        server.stop()


# Faults (issue 21): a frozen server, a partition, errors. Timings are generous for a busy 2-core
# machine, yet the overshoot check failed before its fix (by a second, not milliseconds).


async def test_try_lock_keeps_its_timeout_against_a_frozen_server(redis_server: RedisServer) -> None:
    locker, other = RedisLocker(redis_server.url, ttl=2), RedisLocker(redis_server.url, ttl=2)
    try:
        overshoot = await try_lock_overshoot(redis_server, locker, other, free_within=5)
        assert overshoot < 0.3, overshoot  # was: 1 s (a bounded cleanup, waited for)
    finally:
        await locker.close()
        await other.close()


async def test_under_a_partition_the_holder_learns_of_the_loss_before_anyone_else_acquires(
    redis_server: RedisServer,
) -> None:
    proxy = TcpProxy(redis_server.port).start()
    holder, other = RedisLocker(proxy.url, ttl=2), RedisLocker(redis_server.url, ttl=2)
    try:
        lost, acquired = await partition_timings(proxy, holder, other)
        assert lost < acquired
        assert lost < 2 + 0.5  # a TTL after the last renewal that succeeded was sent
    finally:
        proxy.heal()
        await holder.close()
        await other.close()
        proxy.stop()


async def test_a_refused_script_is_a_lock_error_naming_key_and_backend(redis_server: RedisServer) -> None:
    from redis.exceptions import ResponseError

    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.acl_setuser(
        "noscripts", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-@scripting"]
    )
    await admin.aclose()
    locker = RedisLocker(f"redis://noscripts:pw@127.0.0.1:{redis_server.port}/0")
    try:
        with pytest.raises(LockError, match=r"lock 'k' \(backend redis\): .*(?i:permission)") as info:
            await locker.try_lock("k", timeout=5)
        assert not isinstance(info.value, LockTimeout)
        assert isinstance(info.value.__cause__, ResponseError)
    finally:
        await locker.close()
