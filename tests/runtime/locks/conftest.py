"""Locker fixtures: the shared cases run on every backend, Redis on a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from msuite.runtime.locks import MemoryLocker
from msuite.runtime.locks.locker import Locker
from msuite.runtime.locks.redis import RedisLocker
from msuite.runtime.locks.zookeeper import ZooKeeperLocker
from tests.servers import RedisServer, ZooKeeperServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zookeeper_server(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis", "zookeeper"])
async def locker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Locker]:
    if request.param == "memory":
        memory = MemoryLocker()
        yield memory
        await memory.close()
        return
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()
        redis = RedisLocker(server.url, ttl=2.0, prefix=f"test/{request.node.name}")
        try:
            yield redis
        finally:
            await redis.close()
            server.stop()
        return
    zk_server = ZooKeeperServer(tmp_path)
    zk_server.start()
    zookeeper = ZooKeeperLocker(zk_server.hosts, session_timeout=4)
    try:
        yield zookeeper
    finally:
        await zookeeper.close()
        zk_server.stop()
