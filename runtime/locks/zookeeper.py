"""The ZooKeeper locker (``locker: {backend: zookeeper, hosts: ...}``), on aiozk.

The classic recipe: each contender creates an ephemeral sequential znode
``/<prefix>/<key>/lock-<id>-NNNNNNNNNN`` (the key percent-encoded into one
znode name, so keys never nest into each other or into lock nodes; ``<id>``
unique per attempt, so an attempt cut short can always find and remove its
node); the lowest number holds the lock; the
others each watch the znode just before their own, so a release wakes exactly
one waiter. The fencing token is the znode's sequence number plus one, which
ZooKeeper makes strictly increasing under the key for as long as the key's
znode lives (msuite never deletes it). Ephemeral znodes vanish with their
session: a crashed holder frees the lock within the session timeout. When
this client's connection has been down for a session timeout (ZooKeeper may
have expired the session by then) or its session is lost, every lease it held
is marked lost; nodes of such leases that survive a reconnection are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import quote

from .locker import Lease, LockerBase, LockTimeout, check_key

if TYPE_CHECKING:
    from msuite.spec import Locker as LockerSettings

__all__ = ["ZooKeeperLocker"]

log = logging.getLogger("msuite.locks")


class _ZooKeeperLease(Lease):
    def __init__(self, locker: ZooKeeperLocker, key: str, fencing_token: int, node: str) -> None:
        super().__init__(locker, key, fencing_token)
        self.node = node


_NODE = re.compile(r"^lock-[0-9a-f]{32}-\d{10}$")


def _sequence(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


class ZooKeeperLocker(LockerBase):
    """Locks on a ZooKeeper ensemble. See the module docs for the guarantees."""

    backend = "zookeeper"

    def __init__(self, hosts: str, *, prefix: str = "msuite/locks", session_timeout: float = 10.0) -> None:
        import aiozk

        self._client = aiozk.ZKClient(hosts, session_timeout=session_timeout)
        self.prefix = "/" + prefix.strip("/")
        self._started = False
        self._start_lock = asyncio.Lock()
        self._leases: set[_ZooKeeperLease] = set()
        self._orphans: list[str] = []
        self.session_timeout = session_timeout
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: LockerSettings) -> ZooKeeperLocker:
        """A locker from the manifest's ``locker:`` section."""
        if settings.hosts is None:
            raise ValueError("the zookeeper locker needs locker.hosts")
        return cls(
            settings.hosts, prefix=settings.prefix, session_timeout=settings.session_timeout.total_seconds()
        )

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

        state = self._client.session.state
        while True:
            await state.wait_for(States.SUSPENDED, States.LOST)
            if state == States.SUSPENDED:
                try:  # back within a session timeout: the session (and the locks) survive
                    await asyncio.wait_for(state.wait_for(States.CONNECTED), self.session_timeout)
                    continue
                except TimeoutError:
                    pass
            self._lose_all("ZooKeeper connection down for a session timeout, or session lost")
            await state.wait_for(States.CONNECTED)
            orphans, self._orphans = self._orphans, []
            for node in orphans:  # the session survived after all: free what we gave up
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._delete(node), 2.0)

    def _lose_all(self, why: str) -> None:
        if self._leases:
            log.error("%s: %d lock(s) no longer held", why, len(self._leases))
        for lease in list(self._leases):
            lease.lost.set()
            self._orphans.append(lease.node)
        self._leases.clear()

    async def try_lock(self, key: str, timeout: float) -> Lease:
        check_key(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        attempt = uuid.uuid4().hex
        base = f"{self.prefix}/{quote(key, safe='')}"
        try:
            async with asyncio.timeout_at(deadline):
                return await self._acquire(key, base, attempt)
        except TimeoutError:
            await self._abandon(base, attempt)
            raise LockTimeout(f"lock {key!r} (backend zookeeper) not acquired within {timeout:g}s") from None
        except BaseException:
            await self._abandon(base, attempt)
            raise

    async def _acquire(self, key: str, base: str, attempt: str) -> Lease:
        from aiozk.protocol.watches import WatchEvent

        await self._ensure_started()
        await self._client.ensure_path(base)
        node = await self._client.create(f"{base}/lock-{attempt}-", data=b"", ephemeral=True, sequential=True)
        mine = node.rsplit("/", 1)[1]
        while True:
            children = sorted(
                (c for c in await self._client.get_children(base) if _NODE.match(c)), key=_sequence
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
            try:
                if await self._client.exists(predecessor, watch=True):
                    await deleted
            finally:
                deleted.cancel()

    async def _abandon(self, base: str, attempt: str) -> None:
        """Remove this attempt's node, wherever it got to (bounded, best effort)."""

        async def remove() -> None:
            for child in await self._client.get_children(base):
                if child.startswith(f"lock-{attempt}-"):
                    await self._delete(f"{base}/{child}")

        if self._started:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(asyncio.wait_for(remove(), 2.0))

    async def _delete(self, node: str) -> None:
        import aiozk.exc

        with contextlib.suppress(aiozk.exc.NoNode):
            await self._client.delete(node)

    async def _release(self, lease: Lease) -> None:
        assert isinstance(lease, _ZooKeeperLease)
        self._leases.discard(lease)
        if lease.lost.is_set():
            return
        try:
            await asyncio.wait_for(self._delete(lease.node), self.session_timeout)
        except Exception:
            log.warning("could not delete lock node %s now; it will be removed on reconnect", lease.node)
            self._orphans.append(lease.node)

    async def close(self) -> None:
        """Release held leases and close the session (bounded: a dead server can't hang it)."""
        for lease in list(self._leases):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.release(), 2.0)
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self._started:
            try:
                await asyncio.wait_for(self._client.close(), 5.0)
            except Exception:
                self._force_close()

    def _force_close(self) -> None:
        """Tear the session down without the server (aiozk's own close needs it to answer)."""
        session = self._client.session
        session.closing = True
        for task in (session.repair_loop_task, session.heartbeat_task):
            if task is not None and not task.done():
                task.cancel()
        if session.heartbeat_handle is not None:
            session.heartbeat_handle.cancel()
        conn = session.conn
        if conn is not None:
            if conn.read_loop_task is not None and not conn.read_loop_task.done():
                conn.read_loop_task.cancel()
            if conn.writer is not None:
                conn.writer.transport.abort()

    def status(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "held": {lease.key: {"token": lease.fencing_token} for lease in self._leases if lease.held},
        }
