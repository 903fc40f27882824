"""The ZooKeeper locker (``locker: {backend: zookeeper, hosts: ...}``), on aiozk.

The classic recipe: each contender creates an ephemeral sequential znode
``/<prefix>/<key>/lock-NNNNNNNNNN``; the lowest number holds the lock; the
others each watch the znode just before their own, so a release wakes exactly
one waiter. The fencing token is the znode's sequence number plus one, which
ZooKeeper makes strictly increasing under the key for as long as the key's
znode lives (msuite never deletes it). Ephemeral znodes vanish with their
session: a crashed holder frees the lock within the session timeout, and when
this client's session is lost every lease it held is marked lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from .locker import Lease, LockTimeout, check_key, locked

if TYPE_CHECKING:
    from msuite.spec import Locker as LockerSettings

__all__ = ["ZooKeeperLocker"]

log = logging.getLogger("msuite.locks")


class _ZooKeeperLease(Lease):
    def __init__(self, locker: ZooKeeperLocker, key: str, fencing_token: int, node: str) -> None:
        super().__init__(locker, key, fencing_token)
        self.node = node


def _sequence(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


class ZooKeeperLocker:
    """Locks on a ZooKeeper ensemble. See the module docs for the guarantees."""

    backend = "zookeeper"

    def __init__(self, hosts: str, *, prefix: str = "msuite/locks", session_timeout: float = 10.0) -> None:
        import aiozk

        self._client = aiozk.ZKClient(hosts, session_timeout=session_timeout)
        self.prefix = "/" + prefix.strip("/")
        self._started = False
        self._start_lock = asyncio.Lock()
        self._leases: set[_ZooKeeperLease] = set()
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: LockerSettings) -> ZooKeeperLocker:
        """A locker from the manifest's ``locker:`` section."""
        if settings.hosts is None:
            raise ValueError("the zookeeper locker needs locker.hosts")
        return cls(
            settings.hosts, prefix=settings.prefix, session_timeout=settings.session_timeout.total_seconds()
        )

    def lock(self, key: str, timeout: float) -> AbstractAsyncContextManager[Lease]:
        """``async with locker.lock(key, timeout) as lease:``."""
        return locked(self, key, timeout)

    async def _ensure_started(self) -> None:
        async with self._start_lock:
            if not self._started:
                await self._client.start()
                self._started = True
                self._monitor = asyncio.get_running_loop().create_task(
                    self._watch_session(), name="msuite-zookeeper-session"
                )

    async def _watch_session(self) -> None:
        from aiozk.states import States

        while True:
            await self._client.session.state.wait_for(States.LOST)
            if self._leases:
                log.error("ZooKeeper session lost: %d lock(s) no longer held", len(self._leases))
            for lease in list(self._leases):
                lease.lost.set()
            self._leases.clear()
            await self._client.session.state.wait_for(States.CONNECTED)

    async def try_lock(self, key: str, timeout: float) -> Lease:
        check_key(key)
        from aiozk.protocol.watches import WatchEvent

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._ensure_started(), timeout)
        except TimeoutError:
            raise LockTimeout(
                f"lock {key!r} (backend zookeeper) not acquired within {timeout:g}s: "
                "no ZooKeeper server answered"
            ) from None
        base = f"{self.prefix}/{key.strip('/')}"
        await self._client.ensure_path(base)
        node = await self._client.create(f"{base}/lock-", data=b"", ephemeral=True, sequential=True)
        mine = node.rsplit("/", 1)[1]
        try:
            while True:
                children = sorted(
                    (c for c in await self._client.get_children(base) if c.startswith("lock-")), key=_sequence
                )
                if mine not in children:
                    raise RuntimeError(f"lock {key!r}: our znode vanished (ZooKeeper session lost)")
                position = children.index(mine)
                if position == 0:
                    lease = _ZooKeeperLease(self, key, _sequence(mine) + 1, node)
                    self._leases.add(lease)
                    return lease
                predecessor = f"{base}/{children[position - 1]}"
                deleted = self._client.wait_for_events([WatchEvent.DELETED], predecessor)
                if not await self._client.exists(predecessor, watch=True):
                    deleted.cancel()
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    deleted.cancel()
                    raise TimeoutError
                await asyncio.wait_for(deleted, remaining)
        except TimeoutError:
            await self._delete(node)
            raise LockTimeout(f"lock {key!r} (backend zookeeper) not acquired within {timeout:g}s") from None
        except BaseException:
            await asyncio.shield(self._delete(node))
            raise

    async def _delete(self, node: str) -> None:
        import aiozk.exc

        with contextlib.suppress(aiozk.exc.NoNode):
            await self._client.delete(node)

    async def _release(self, lease: Lease) -> None:
        assert isinstance(lease, _ZooKeeperLease)
        self._leases.discard(lease)
        if not lease.lost.is_set():
            await self._delete(lease.node)

    async def close(self) -> None:
        for lease in list(self._leases):
            with contextlib.suppress(Exception):
                await lease.release()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self._started:
            await self._client.close()

    def status(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "held": {lease.key: {"token": lease.fencing_token} for lease in self._leases if lease.held},
        }
