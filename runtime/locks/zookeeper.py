"""The ZooKeeper locker (``locker: {backend: zookeeper, hosts: ...}``), on aiozk.

The classic recipe: each contender creates an ephemeral sequential znode
``/<prefix>/<key>/lock-<id>-NNNNNNNNNN`` (the key percent-encoded into one
znode name, so keys never nest into each other or into lock nodes; ``<id>``
unique per attempt, so an attempt cut short can always find and remove its
node); the lowest number holds the lock; the others each watch the znode just
before their own, so a release wakes exactly one waiter. The fencing token is
the znode's sequence number plus one, which ZooKeeper makes strictly
increasing under the key for as long as the key's znode lives (msuite creates
it as a plain persistent znode and never deletes it). Ephemeral znodes vanish
with their session: a crashed holder frees the lock once ZooKeeper expires its
session.

What the holder is told, and when:

- ZooKeeper expires a session no sooner than a session timeout (the one the
  server negotiated) after it last heard from the client. So every lease is
  marked lost as soon as a session timeout has passed since the last request
  of this client that ZooKeeper answered *was sent* (a ping every third of the
  session timeout while leases are held), or at once when the session is
  lost: the holder learns before anyone else can acquire, whether the server
  is silent, unreachable or partitioned away. ``lease.held`` turns false at
  that same instant even if the event loop is too busy to run the watchdog.
- ``release()`` waits at most :attr:`ZooKeeperLocker.release_timeout` for the
  delete. A node that could not be deleted by then (server unreachable) is
  deleted in the background as soon as the session is usable again; if the
  session ends instead, ZooKeeper removes the node with it. Nodes of lost
  leases and of attempts cut short (timeout, cancellation, an error) are
  removed the same way.
- ``try_lock`` keeps its timeout against a silent server: an error ZooKeeper
  or the connection may recover from is retried within it, the cleanup of an
  abandoned attempt goes to the background, and every failure is a
  :class:`LockError` (a :class:`LockTimeout` at the deadline) naming the key
  and the backend, with aiozk's exception as the cause.
- aiozk notices a connection the server closed only when its heartbeat times
  out, about a session timeout later, when the session may be expiring: the
  locker watches the connection and hands a closed one to aiozk's repair at
  once, so a restarted server or a reset connection is reconnected to while
  the session still lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from .locker import Lease, LockerBase, LockError, LockTimeout, check_key

if TYPE_CHECKING:
    from msuite.spec import Locker as LockerSettings

__all__ = ["ZooKeeperLocker"]

log = logging.getLogger("msuite.locks")

T = TypeVar("T")

_NODE = re.compile(r"^lock-[0-9a-f]{32}-\d{10}$")


def _sequence(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


class _Retry(LockError):
    """This attempt cannot go on, but a new one may succeed (its node vanished, the session changed)."""


@dataclass
class _Attempt:
    base: str
    id: str
    create_sent: bool = False
    node: str | None = None
    session_id: int | None = None


class _ZooKeeperLease(Lease):
    def __init__(self, locker: ZooKeeperLocker, key: str, fencing_token: int, attempt: _Attempt) -> None:
        super().__init__(locker, key, fencing_token)
        assert attempt.node is not None
        self.node = attempt.node
        self.attempt = attempt
        self.session_id = attempt.session_id

    @property
    def held(self) -> bool:
        """True until released or lost, and only while ZooKeeper answered within a session timeout."""
        locker = self._locker
        assert isinstance(locker, ZooKeeperLocker)
        return super().held and locker._vouches_for(self)


def _retryable(exc: BaseException) -> bool:
    """Whether a new attempt may succeed where this one failed (the connection, the session)."""
    import aiozk.exc as zk

    return isinstance(
        exc,
        (
            _Retry,
            OSError,  # the built-in TimeoutError and ConnectionError included
            zk.ConnectError,
            zk.TimeoutError,
            zk.SessionLost,
            zk.UnfinishedRead,
            zk.FailedRetry,
            zk.InvalidClientState,
            zk.ConnectionLoss,
            zk.OperationTimeout,
            zk.SessionExpired,
            zk.SessionMoved,
            zk.UnknownSession,
            zk.NoNode,  # the key's znode vanished between two calls (deleted by hand)
        ),
    )


class ZooKeeperLocker(LockerBase):
    """Locks on a ZooKeeper ensemble. See the module docs for the guarantees."""

    backend = "zookeeper"
    release_timeout = 1.0
    """The longest ``release()`` waits for ZooKeeper; the node is deleted in the background after that."""
    request_timeout = 5.0
    """The bound on one background cleanup request (retried until it succeeds or the locker closes)."""

    def __init__(self, hosts: str, *, prefix: str = "msuite/locks", session_timeout: float = 10.0) -> None:
        import aiozk

        self._client = aiozk.ZKClient(hosts, session_timeout=session_timeout)
        self.prefix = "/" + prefix.strip("/")
        self.session_timeout = session_timeout
        self._started = False
        self._start_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leases: set[_ZooKeeperLease] = set()
        self._have_leases = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # session watcher, lease watchdog
        self._cleanups: set[asyncio.Task[None]] = set()
        # the session and send time of the latest request ZooKeeper answered
        self._session_id: int | None = None
        self._contact_sent = float("-inf")
        self._session_over: asyncio.Future[None] | None = None
        self._last_nudge = float("-inf")
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(cls, settings: LockerSettings) -> ZooKeeperLocker:
        """A locker from the manifest's ``locker:`` section."""
        if settings.hosts is None:
            raise ValueError("the zookeeper locker needs locker.hosts")
        return cls(
            settings.hosts, prefix=settings.prefix, session_timeout=settings.session_timeout.total_seconds()
        )

    # -- the session ------------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            loop = self._loop = asyncio.get_running_loop()
            self._session_over = loop.create_future()
            self._started = True
            for coroutine, name in (
                (self._watch_session(), "msuite-zookeeper-session"),
                (self._watch_leases(), "msuite-zookeeper-leases"),
            ):
                self._tasks.add(loop.create_task(coroutine, name=name))
            # session.start() marks the session started before its first wait, so a deadline that
            # cancels us here leaves aiozk connecting in the background, and close() closing it
            await self._client.start()

    def _timeout(self) -> float:
        """The session timeout the server negotiated (the one asked for until it answers)."""
        return float(self._client.session.timeout)

    def _vouches_for(self, lease: _ZooKeeperLease) -> bool:
        return (
            self._loop is not None
            and lease.session_id == self._session_id
            and self._loop.time() < self._contact_sent + self._timeout()
        )

    async def _call(self, request: Awaitable[T], session_id: int | None = None) -> T:
        """Await one aiozk request, noting when ZooKeeper last answered; with ``session_id``,
        the request must have run in that session (:class:`_Retry` otherwise)."""
        import aiozk.exc

        assert self._loop is not None
        session = self._client.session
        before, sent = session.session_id, self._loop.time()
        try:
            result = await request
        except (aiozk.exc.NoNode, aiozk.exc.NodeExists):
            self._answered(before, session.session_id, sent)  # an answer all the same
            raise
        self._answered(before, session.session_id, sent)
        if before != session.session_id or (session_id is not None and before != session_id):
            raise _Retry("the ZooKeeper session changed during the request")
        return result

    def _answered(self, before: int | None, after: int | None, sent: float) -> None:
        if before is None or before != after:
            return  # the session changed under the request: it vouches for nothing
        if before != self._session_id:
            self._session_id, self._contact_sent = before, sent
            self._lose("the ZooKeeper session was replaced (the old one expired)", keep_session=before)
        elif sent > self._contact_sent:
            self._contact_sent = sent

    async def _watch_session(self) -> None:
        """Lose every lease when the session is lost; reconnect at once when the server closes
        the connection (aiozk would notice only when its heartbeat times out)."""
        from aiozk.states import States

        loop = asyncio.get_running_loop()
        session = self._client.session
        state = session.state
        while True:
            if state == States.LOST:
                self._session_lost("the ZooKeeper session was lost (expired, or closed by the server)")
                await state.wait_for(States.CONNECTED)
                continue
            if state == States.SUSPENDED:
                await state.wait_for(States.CONNECTED, States.LOST)
                continue
            if self._session_id is not None and session.session_id != self._session_id:
                self._session_lost("the ZooKeeper session was replaced (the old one expired)")
            conn = session.conn
            read_loop = getattr(conn, "read_loop_task", None)
            change = state.wait_for(States.SUSPENDED, States.LOST, States.READ_ONLY)
            await asyncio.wait([change, read_loop] if read_loop else [change], return_when="FIRST_COMPLETED")
            if not change.done():
                # the server closed the connection (it stopped, or a proxy reset it): hand it to
                # aiozk's repair now, the same state change its heartbeat makes, at most once a second
                await asyncio.sleep(max(0.0, self._last_nudge + 1.0 - loop.time()))
                if state == States.CONNECTED and session.conn is conn and not session.closing:
                    self._last_nudge = loop.time()
                    log.info("ZooKeeper closed the connection; reconnecting")
                    state.transition_to(States.SUSPENDED)
                await change

    def _session_lost(self, why: str) -> None:
        self._lose(why)
        if self._session_over is not None and not self._session_over.done():
            self._session_over.set_result(None)
        if self._loop is not None:
            self._session_over = self._loop.create_future()

    def _check_deadline(self) -> None:
        """Run by a timer a session timeout after the last answered request was sent, so the
        loss is told the moment it is due: lost if no answer came since (ZooKeeper may expire
        the session from then on), else the timer moves on to the new deadline."""
        self._deadline = None
        if not self._leases or self._loop is None:
            return
        timeout = self._timeout()
        if self._loop.time() >= self._contact_sent + timeout:
            self._lose(f"ZooKeeper has not answered for a session timeout ({timeout:g}s)")
        else:
            self._deadline = self._loop.call_at(self._contact_sent + timeout, self._check_deadline)

    async def _watch_leases(self) -> None:
        """While leases are held: ping every third of the session timeout (the deadline timer
        tells the loss)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._leases:
                self._have_leases.clear()
                await self._have_leases.wait()
                continue
            timeout = self._timeout()
            vouched_until = self._contact_sent + timeout
            now = loop.time()
            if now >= vouched_until:
                self._check_deadline()
                continue
            ping_at = self._contact_sent + timeout / 3
            if now < ping_at:
                await asyncio.sleep(ping_at - now)
                continue
            try:
                await asyncio.wait_for(self._call(self._client.exists(self.prefix)), vouched_until - now)
            except Exception as exc:  # the built-in TimeoutError at the deadline included
                if loop.time() < vouched_until:
                    log.debug("ZooKeeper ping failed, retrying: %r", exc)
                    await asyncio.sleep(min(0.1, max(0.0, vouched_until - loop.time())))

    def _lose(self, why: str, keep_session: int | None = None) -> None:
        """Mark every lease lost but those of ``keep_session``; their nodes are removed once the
        session is usable."""
        lost = [lease for lease in self._leases if keep_session is None or lease.session_id != keep_session]
        if lost:
            keys = ", ".join(sorted(repr(lease.key) for lease in lost))
            log.error("%s: lock(s) no longer held: %s", why, keys)
        for lease in lost:
            self._leases.discard(lease)
            lease.lost.set()
            self._clean_up(lease.attempt)

    # -- cleanup in the background ----------------------------------------------------------------

    def _clean_up(self, attempt: _Attempt) -> asyncio.Task[None] | None:
        """Remove the attempt's node in the background, as soon as the session is usable."""
        if not attempt.create_sent or self._loop is None:
            return None
        task = self._loop.create_task(self._remove(attempt), name=f"msuite-zookeeper-cleanup-{attempt.id}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def _remove(self, attempt: _Attempt) -> None:
        """Delete the attempt's node (found by its id if its name never came back); retried, with
        a bound on each request, until done. A node of an ended session is already gone: harmless."""
        from aiozk.states import States

        state = self._client.session.state
        delay = 0.05
        while True:
            await state.wait_for(States.CONNECTED)
            try:
                await asyncio.wait_for(self._delete_attempt(attempt), self.request_timeout)
                return
            except Exception as exc:
                log.debug("removing lock node of attempt %s failed, retrying: %r", attempt.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _delete_attempt(self, attempt: _Attempt) -> None:
        import aiozk.exc

        try:
            if attempt.node is not None:
                await self._call(self._client.delete(attempt.node))
                return
            for child in await self._call(self._client.get_children(attempt.base)):
                if child.startswith(f"lock-{attempt.id}-"):
                    with contextlib.suppress(aiozk.exc.NoNode):
                        await self._call(self._client.delete(f"{attempt.base}/{child}"))
        except aiozk.exc.NoNode:
            pass

    # -- the locker ----------------------------------------------------------------------------------

    async def try_lock(self, key: str, timeout: float) -> Lease:
        check_key(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        base = f"{self.prefix}/{quote(key, safe='')}"
        last_error: BaseException | None = None
        delay = 0.05
        while True:
            if loop.time() >= deadline and last_error is not None:
                raise self._timed_out(key, timeout, last_error)
            attempt = _Attempt(base, uuid.uuid4().hex)
            timer = asyncio.timeout_at(deadline)
            try:
                async with timer:
                    return await self._acquire(key, attempt)
            except asyncio.CancelledError:
                self._clean_up(attempt)
                raise
            except Exception as exc:
                self._clean_up(attempt)
                if timer.expired():
                    raise self._timed_out(key, timeout, last_error) from None
                if not _retryable(exc):
                    raise LockError(f"lock {key!r} (backend zookeeper): {exc!r}") from exc
                last_error = exc
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.5)

    @staticmethod
    def _timed_out(key: str, timeout: float, last_error: BaseException | None) -> LockTimeout:
        why = f" (last error: {last_error!r})" if last_error is not None else ""
        return LockTimeout(f"lock {key!r} (backend zookeeper) not acquired within {timeout:g}s{why}")

    async def _acquire(self, key: str, attempt: _Attempt) -> Lease:
        from aiozk.protocol.watches import WatchEvent

        await self._ensure_started()
        base = attempt.base
        await self._ensure_key(base)
        attempt.create_sent = True
        session = self._client.session
        attempt.session_id = session.session_id
        node = await self._call(
            self._client.create(f"{base}/lock-{attempt.id}-", data=b"", ephemeral=True, sequential=True)
        )
        attempt.node = node
        attempt.session_id = self._session_id  # the one that answered the create
        mine = node.rsplit("/", 1)[1]
        while True:
            children = sorted(
                (
                    c
                    for c in await self._call(self._client.get_children(base), attempt.session_id)
                    if _NODE.match(c)
                ),
                key=_sequence,
            )
            if mine not in children:
                raise _Retry(f"lock {key!r}: our znode vanished (its ZooKeeper session ended)")
            position = children.index(mine)
            if position == 0:
                lease = _ZooKeeperLease(self, key, _sequence(mine) + 1, attempt)
                self._leases.add(lease)
                self._have_leases.set()
                if self._deadline is None:
                    self._deadline = asyncio.get_running_loop().call_at(
                        self._contact_sent + self._timeout(), self._check_deadline
                    )
                return lease
            predecessor = f"{base}/{children[position - 1]}"
            deleted = self._client.wait_for_events([WatchEvent.DELETED], predecessor)
            assert self._session_over is not None
            session_over = self._session_over
            try:
                if await self._call(self._client.exists(predecessor, watch=True), attempt.session_id):
                    await asyncio.wait([deleted, session_over], return_when="FIRST_COMPLETED")
            finally:
                deleted.cancel()

    async def _ensure_key(self, base: str) -> None:
        """The key's znode, and the path to it, as plain persistent znodes: never containers,
        which ZooKeeper deletes once empty (the sequence, and so the tokens, would start again).
        One round trip when the key exists (aiozk's ensure_path makes one per path level)."""
        import aiozk.exc

        if await self._call(self._client.exists(base)):
            return
        path = ""
        for part in base.strip("/").split("/"):
            path += "/" + part
            with contextlib.suppress(aiozk.exc.NodeExists):
                await self._call(self._client.create(path, data=b""))

    async def _release(self, lease: Lease) -> None:
        from aiozk.states import States

        assert isinstance(lease, _ZooKeeperLease)
        if lease not in self._leases:
            return  # lost: its node is being removed already
        self._leases.discard(lease)
        task = self._clean_up(lease.attempt)
        if task is None:
            return
        if self._client.session.state == States.CONNECTED:  # disconnected: no waiting in vain
            await asyncio.wait([task], timeout=self.release_timeout)
        if not task.done():
            log.warning(
                "lock %r: ZooKeeper did not answer; its node is deleted in the background "
                "as soon as the session is usable again",
                lease.key,
            )

    async def close(self) -> None:
        """Release held leases and close the session (bounded: a dead server can't hang it)."""
        if self._leases:
            await asyncio.gather(*(lease.release() for lease in list(self._leases)), return_exceptions=True)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for task in [*self._tasks, *self._cleanups]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._cleanups, return_exceptions=True)
        self._tasks.clear()
        if self._client.session.started:
            try:
                await asyncio.wait_for(self._client.close(), 5.0)
            except Exception:
                self._force_close()
        self._started = False

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
