"""The ZooKeeper locker against a real ZooKeeper: processes, a killed holder, a lost session."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from msuite.runtime.locks import LockError, LockTimeout
from msuite.runtime.locks.zookeeper import ZooKeeperLocker
from tests.helpers import REPO
from tests.runtime.locks.faults import partition_timings, try_lock_overshoot
from tests.servers import TcpProxy, ZooKeeperServer

CONTENDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from msuite.runtime.locks.zookeeper import ZooKeeperLocker

    async def main(hosts, folder, rounds):
        locker = ZooKeeperLocker(hosts, session_timeout=5)
        counter, tokens = Path(folder, "count"), Path(folder, "tokens")
        for _ in range(rounds):
            async with locker.lock("counter", timeout=60) as lease:
                value = int(counter.read_text() or 0)
                await asyncio.sleep(0.001)
                counter.write_text(str(value + 1))
                with tokens.open("a") as out:
                    out.write(f"{lease.fencing_token}\\n")
        await locker.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def test_contender_processes_lose_no_increment(zookeeper_server: ZooKeeperServer, tmp_path: Path) -> None:
    (tmp_path / "count").write_text("0")
    (tmp_path / "tokens").write_text("")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, zookeeper_server.hosts, str(tmp_path), "15"], cwd=REPO
        )
        for _ in range(4)
    ]
    for process in processes:
        assert process.wait(timeout=180) == 0
    assert (tmp_path / "count").read_text() == "60"
    tokens = [int(t) for t in (tmp_path / "tokens").read_text().split()]
    assert len(tokens) == 60 and tokens == sorted(tokens) and len(set(tokens)) == 60


def test_a_killed_holder_frees_the_lock_within_the_session_timeout(zookeeper_server: ZooKeeperServer) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio\nfrom msuite.runtime.locks.zookeeper import ZooKeeperLocker\n"
            "async def main():\n"
            f"    locker = ZooKeeperLocker({zookeeper_server.hosts!r}, session_timeout=2)\n"
            "    lease = await locker.try_lock('job', timeout=10)\n"
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
        locker = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=4)
        os.kill(holder.pid, signal.SIGKILL)
        started = time.monotonic()
        lease = await locker.try_lock("job", timeout=15)
        waited = time.monotonic() - started
        assert lease.fencing_token == 2
        await locker.close()
        return waited

    waited = asyncio.run(take_over())
    holder.wait(timeout=10)
    holder.stdout.close()
    assert waited < 6  # session timeout 2 s, plus ZooKeeper's expiry tick


async def test_a_lost_session_marks_the_lease_lost(tmp_path: Path) -> None:
    server = ZooKeeperServer(tmp_path)
    server.start()
    locker = ZooKeeperLocker(server.hosts, session_timeout=2)
    try:
        lease = await locker.try_lock("k", timeout=5)
        server.stop()  # the server goes away for longer than the session timeout
        await asyncio.sleep(3)
        server.start()  # same port and data: the client reconnects and learns its session expired
        await asyncio.wait_for(lease.lost.wait(), 20)
        assert not lease.held
        again = await locker.try_lock("k", timeout=10)  # the locker works again
        assert again.fencing_token > lease.fencing_token
        await again.release()
    finally:
        await locker.close()
        server.stop()


async def test_from_manifest_settings(zookeeper_server: ZooKeeperServer) -> None:
    from msuite.spec import loads_manifest

    manifest = loads_manifest(
        f"name: n\nlocker: {{backend: zookeeper, hosts: '{zookeeper_server.hosts}', session_timeout: 3s}}\n"
    )
    assert manifest.locker is not None
    locker = ZooKeeperLocker.from_settings(manifest.locker)
    async with locker.lock("x", timeout=5) as lease:
        assert lease.fencing_token == 1
    await locker.close()


async def test_keys_never_collide_with_lock_nodes(zookeeper_server: ZooKeeperServer) -> None:
    locker = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=4)
    for tricky, plain in (("a/lock-", "a"), ("b/lock-3", "b")):
        async with locker.lock(tricky, timeout=5):
            pass
        for _ in range(5):  # past the sequence number a colliding node would have had
            async with locker.lock(plain, timeout=5):
                pass
    await locker.close()


async def test_cancelled_attempts_leave_nothing_behind(zookeeper_server: ZooKeeperServer) -> None:
    import aiozk

    locker = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=4)
    await (await locker.try_lock("warm", timeout=5)).release()
    for i in range(30):
        attempt = asyncio.ensure_future(locker.try_lock(f"k{i}", timeout=5))
        await asyncio.sleep(0.0005 * i)
        attempt.cancel()
        result = await asyncio.gather(attempt, return_exceptions=True)
        if not isinstance(result[0], BaseException):
            await result[0].release()
    client = aiozk.ZKClient(zookeeper_server.hosts)
    await client.start()
    for _ in range(100):  # the nodes of attempts cut short are removed in the background, at once
        leftovers = {
            k: children
            for k in range(30)
            if await client.exists(f"/msuite/locks/k{k}")
            and (children := await client.get_children(f"/msuite/locks/k{k}"))
        }
        if not leftovers:
            break
        await asyncio.sleep(0.05)
    await client.close()
    assert not leftovers, leftovers
    for i in range(30):  # and every key is free
        await (await locker.try_lock(f"k{i}", timeout=2)).release()
    await locker.close()


async def test_a_silent_server_marks_leases_lost_and_nothing_hangs(zookeeper_server: ZooKeeperServer) -> None:
    assert zookeeper_server.process is not None
    locker = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=2)
    lease = await locker.try_lock("k", timeout=5)
    loop = asyncio.get_running_loop()
    os.kill(zookeeper_server.process.pid, signal.SIGSTOP)
    try:
        started = loop.time()
        await asyncio.wait_for(lease.lost.wait(), 15)
        assert loop.time() - started < 10
        with pytest.raises(LockTimeout):
            await asyncio.wait_for(locker.try_lock("other", timeout=1), 5)
        closing = loop.time()
        await locker.close()
        assert loop.time() - closing < 10
    finally:
        os.kill(zookeeper_server.process.pid, signal.SIGCONT)
        gc.collect()  # anything left unclosed would warn here, inside this test


# Faults (issue 21): outages, partitions, a frozen server, a restart. Timings are generous for a
# busy 2-core machine, yet each check failed before its fix (by seconds, not milliseconds).


async def test_a_lock_released_while_zookeeper_is_down_is_free_again_once_it_is_back(tmp_path: Path) -> None:
    server = ZooKeeperServer(tmp_path)
    server.start()
    loop = asyncio.get_running_loop()
    a = ZooKeeperLocker(server.hosts, session_timeout=10)
    b = ZooKeeperLocker(server.hosts, session_timeout=10)
    try:
        lease = await a.try_lock("job", timeout=10)
        await asyncio.to_thread(server.stop)
        started = loop.time()
        await lease.release()  # the server is down: the node can't be deleted now
        released_in = loop.time() - started
        await asyncio.to_thread(server.start)  # same data: A's session survives the restart
        back = loop.time()
        again = await b.try_lock("job", timeout=30)  # was: LockTimeout, forever
        taken_in = loop.time() - back
        print(
            f"zookeeper restart: release {released_in:.2f}s, taken {taken_in:.2f}s after the server was back"
        )
        assert released_in < ZooKeeperLocker.release_timeout + 0.5  # was: the whole 10 s session timeout
        assert taken_in < 10 + 5  # A reconnects and deletes its node, or its session expires
        assert again.fencing_token > lease.fencing_token
        await again.release()
    finally:
        await a.close()
        await b.close()
        server.stop()


async def test_a_released_node_is_deleted_as_soon_as_the_session_is_usable_again(
    zookeeper_server: ZooKeeperServer,
) -> None:
    proxy = TcpProxy(zookeeper_server.port).start()
    loop = asyncio.get_running_loop()
    a = ZooKeeperLocker(proxy.hosts, session_timeout=8)
    b = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=8)
    try:
        lease = await a.try_lock("job", timeout=10)
        proxy.cut()
        proxy.reset()  # A's connection is closed and its reconnection hears nothing
        started = loop.time()
        await lease.release()
        released_in = loop.time() - started
        await asyncio.sleep(0.5)
        proxy.heal()
        healed = loop.time()
        again = await b.try_lock("job", timeout=20)
        taken_in = loop.time() - healed
        print(f"zookeeper reset: release {released_in:.2f}s, taken {taken_in:.2f}s after the heal")
        assert released_in < ZooKeeperLocker.release_timeout + 0.5
        # well inside A's 8 s session: its node was deleted on reconnection, not by expiry
        assert taken_in < 4, taken_in
        await again.release()
    finally:
        await a.close()
        await b.close()
        proxy.stop()


async def test_under_a_partition_the_holder_learns_of_the_loss_before_anyone_else_acquires(
    zookeeper_server: ZooKeeperServer,
) -> None:
    proxy = TcpProxy(zookeeper_server.port).start()
    holder = ZooKeeperLocker(proxy.hosts, session_timeout=2)
    other = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=4)
    try:
        lost, acquired = await partition_timings(proxy, holder, other)
        assert lost < acquired  # was: lost about 2 s (a session timeout) after the other acquired
        assert lost < 2 + 0.5  # a session timeout after the last answer, which came before the cut
    finally:
        proxy.heal()
        await holder.close()
        await other.close()
        proxy.stop()


async def test_try_lock_keeps_its_timeout_against_a_frozen_server(zookeeper_server: ZooKeeperServer) -> None:
    locker = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=6)
    other = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=6)
    try:
        overshoot = await try_lock_overshoot(zookeeper_server, locker, other, free_within=10)
        assert overshoot < 0.3, overshoot  # was: 2 s (a bounded cleanup, waited for)
    finally:
        await locker.close()
        await other.close()


async def test_after_a_restart_try_lock_raises_only_lock_errors(tmp_path: Path) -> None:
    server = ZooKeeperServer(tmp_path)
    server.start()
    locker = ZooKeeperLocker(server.hosts, session_timeout=2)
    outcomes = []
    try:
        await (await locker.try_lock("k", timeout=5)).release()
        for _ in range(3):
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            try:  # was: aiozk.exc.TimeoutError escaped
                await (await locker.try_lock("k", timeout=8)).release()
                outcomes.append("acquired")
            except LockError as exc:
                assert "lock 'k' (backend zookeeper)" in str(exc)
                outcomes.append(type(exc).__name__)
        print("zookeeper restarts:", outcomes)
    finally:
        await locker.close()
        server.stop()


async def test_a_client_error_becomes_a_lock_error_naming_key_and_backend(
    zookeeper_server: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiozk.exc

    locker = ZooKeeperLocker(zookeeper_server.hosts, session_timeout=4)
    try:
        await (await locker.try_lock("k", timeout=5)).release()

        async def refused(*args: object, **kwargs: object) -> str:
            raise aiozk.exc.NoAuth()

        monkeypatch.setattr(locker._client, "create", refused)
        with pytest.raises(LockError, match=r"lock 'k' \(backend zookeeper\): .*NoAuth") as info:
            await locker.try_lock("k", timeout=5)
        assert not isinstance(info.value, LockTimeout)
        assert isinstance(info.value.__cause__, aiozk.exc.NoAuth)
    finally:
        await locker.close()


async def test_a_partition_shorter_than_the_session_timeout_loses_nothing(
    zookeeper_server: ZooKeeperServer,
) -> None:
    proxy = TcpProxy(zookeeper_server.port).start()
    holder = ZooKeeperLocker(proxy.hosts, session_timeout=6)
    try:
        lease = await holder.try_lock("job", timeout=10)
        proxy.cut()
        await asyncio.sleep(1.5)
        proxy.heal()
        await asyncio.sleep(3)  # past a few pings
        assert lease.held and not lease.lost.is_set()
        await lease.release()
        async with holder.lock("job", timeout=5) as again:  # the same session goes on
            assert again.fencing_token > lease.fencing_token
    finally:
        proxy.heal()
        await holder.close()
        proxy.stop()
