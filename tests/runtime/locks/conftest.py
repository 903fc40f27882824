"""Locker fixtures: the shared cases run on every backend, Redis on a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from msuite.runtime.locks import MemoryLocker
from msuite.runtime.locks.locker import Locker
from msuite.runtime.locks.redis import RedisLocker
from tests.servers import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def locker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Locker]:
    if request.param == "memory":
        memory = MemoryLocker()
        yield memory
        await memory.close()
        return
    server = RedisServer(tmp_path)
    server.start()
    redis = RedisLocker(server.url, ttl=2.0, prefix=f"test/{request.node.name}")
    try:
        yield redis
    finally:
        await redis.close()
        server.stop()
