"""The Redis locker (``locker: {backend: redis, url: ...}``), on redis-py's asyncio client.

A lock is the key ``<prefix>:lock:<key>`` holding the holder's random secret,
set with ``NX`` and a TTL (``locker.ttl``) that a background task renews every
third of the TTL while the lease is held. A lease is marked lost as soon as a
whole TTL has passed since the last renewal that succeeded was sent (a silent
or unreachable server included): by then the server may have let the key
expire. Only the holder's secret can release (a Lua script compares before
deleting). Fencing tokens come from ``INCR`` on ``<prefix>:fence:<key>`` in the
same script that takes the lock (lock keys and counters live in separate
namespaces, so no key can collide with another's counter), so they grow
for every new holder, as long as Redis keeps its data: a Redis without
persistence that restarts starts them again from 1.

``try_lock`` keeps its timeout against a silent server: every call is bounded
by what is left of it, errors the connection may recover from are retried
within it, and undoing an attempt cut short (its ``SET`` may have landed) goes
to the background, retried for up to a TTL (a lock left by a ``SET`` the server
runs later still expires within the TTL). ``release()`` waits at most
:attr:`RedisLocker.release_timeout`, then goes on in the background the same
way. Every failure is a :class:`LockError` (a :class:`LockTimeout` at the
deadline) naming the key and the backend, with redis-py's exception as the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from .locker import Lease, LockerBase, LockError, LockTimeout, check_key

if TYPE_CHECKING:
    from msuite.spec import Locker as LockerSettings

__all__ = ["RedisLocker"]

log = logging.getLogger("msuite.locks")

# KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] secret, ARGV[2] ttl in ms. The lock already
# holding this try's own secret (an earlier send of this try landed, its answer lost) is taken too.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('incr', KEYS[2])
end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return redis.call('incr', KEYS[2])
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class _RedisLease(Lease):
    def __init__(self, locker: RedisLocker, key: str, fencing_token: int, secret: str, sent: float) -> None:
        super().__init__(locker, key, fencing_token)
        self.secret = secret
        self.renewer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.vouched_until = sent + locker.ttl
        """A TTL after the last acquire or renewal that succeeded was sent (event loop time)."""
        self.deadline: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        """True until released or lost, and only while a TTL has not passed since the last
        acquire or renewal that succeeded was sent (even if the renewer could not run)."""
        return super().held and self._loop.time() < self.vouched_until


class RedisLocker(LockerBase):
    """Locks on a Redis server. See the module docs for the guarantees."""

    backend = "redis"
    release_timeout = 1.0
    """The longest ``release()`` waits for Redis; it goes on in the background after that."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        ttl: float = 8.0,
        prefix: str = "msuite/locks",
        tls: dict[str, str | None] | None = None,
    ) -> None:
        """``tls`` (``ca_file``, ``cert_file``, ``key_file``, each optional) turns TLS on,
        as does a ``rediss://`` URL."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        io_timeout = max(0.2, min(2.0, ttl / 4))
        options: dict[str, Any] = {
            "decode_responses": True,
            # a silent server must not hang renewals, try_lock or close
            "socket_timeout": io_timeout,
            "socket_connect_timeout": io_timeout,
            # a restarted or briefly unreachable server: reconnect and retry, bounded
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        }
        if password is not None:
            options["password"] = password
        if tls is not None:
            if url.startswith("redis://"):
                url = "rediss://" + url[len("redis://") :]
            options.update(
                ssl_ca_certs=tls.get("ca_file"),
                ssl_certfile=tls.get("cert_file"),
                ssl_keyfile=tls.get("key_file"),
            )
        self._client = aioredis.Redis.from_url(url, **options)
        self.ttl = ttl
        self.prefix = prefix
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._release_script = self._client.register_script(_RELEASE)
        self._leases: set[_RedisLease] = set()
        self._cleanups: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: LockerSettings, base_dir: os.PathLike[str] | str = ".") -> RedisLocker:
        """A locker from the manifest's ``locker:`` section."""
        if settings.url is None:
            raise ValueError("the redis locker needs locker.url")
        tls = None
        if settings.tls is not None:
            base = os.fspath(base_dir)
            tls = {
                name: os.path.join(base, value) if value else None
                for name, value in (
                    ("ca_file", settings.tls.ca_file),
                    ("cert_file", settings.tls.cert_file),
                    ("key_file", settings.tls.key_file),
                )
            }
        return cls(
            settings.url.get_secret_value(),
            password=settings.password.get_secret_value() if settings.password else None,
            ttl=settings.ttl.total_seconds(),
            prefix=settings.prefix,
            tls=tls,
        )

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}:lock:{key}", f"{self.prefix}:fence:{key}"]

    async def try_lock(self, key: str, timeout: float) -> Lease:
        from redis.exceptions import AuthenticationError, RedisError, ResponseError

        check_key(key)
        secret = os.urandom(16).hex()
        ttl_ms = max(1, int(self.ttl * 1000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        last_error: BaseException | None = None  # set: a SET of this try may have landed
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                why = ""
                if last_error is not None:
                    why = f" (last error: {last_error!r})"
                    self._abandon(key, secret)  # undo a SET that landed unanswered
                raise LockTimeout(f"lock {key!r} (backend redis) not acquired within {timeout:g}s{why}")
            sent = loop.time()
            try:
                token = int(
                    await asyncio.wait_for(
                        self._acquire(keys=self._keys(key), args=[secret, ttl_ms]), remaining
                    )
                )
            except asyncio.CancelledError:
                self._abandon(key, secret)
                raise
            except (TimeoutError, RedisError, OSError) as exc:
                if isinstance(exc, AuthenticationError | ResponseError):
                    # wrong password, a server that refuses the script: retrying won't help
                    if last_error is not None:
                        self._abandon(key, secret)
                    raise LockError(f"lock {key!r} (backend redis): {exc}") from exc
                last_error = exc  # retried: the script takes a lock holding this try's secret too
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, 0.1)
                continue
            except Exception as exc:
                self._abandon(key, secret)
                raise LockError(f"lock {key!r} (backend redis): {exc!r}") from exc
            if token:
                lease = _RedisLease(self, key, token, secret, sent)
                lease.renewer = loop.create_task(self._keep(lease), name=f"msuite-lock-renew-{key}")
                lease.deadline = loop.call_at(lease.vouched_until, self._check_deadline, lease)
                self._leases.add(lease)
                return lease
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.1)

    def _abandon(self, key: str, secret: str) -> asyncio.Task[None]:
        """Release ``key`` if it holds ``secret`` (an attempt cut short, a released lease), in the
        background: retried for up to a TTL, after which a lock it left has expired by itself."""
        task = asyncio.get_running_loop().create_task(
            self._undo(key, secret), name=f"msuite-lock-release-{key}"
        )
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def _undo(self, key: str, secret: str) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.ttl
        delay = 0.05
        while True:
            try:
                await asyncio.wait_for(
                    self._release_script(keys=self._keys(key)[:1], args=[secret]),
                    max(0.05, give_up - loop.time()),
                )
                return
            except Exception as exc:
                if loop.time() + delay >= give_up:
                    log.debug("could not release lock %r (it expires within the TTL): %r", key, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _keep(self, lease: _RedisLease) -> None:
        """Renew every third of the TTL (the lease's deadline timer tells the loss; release cancels this)."""
        loop = asyncio.get_running_loop()
        ttl_ms = max(1, int(self.ttl * 1000))
        while lease in self._leases:
            await asyncio.sleep(max(0.0, min(self.ttl / 3, lease.vouched_until - loop.time())))
            sent = loop.time()
            if sent >= lease.vouched_until:
                self._check_deadline(lease)
                continue
            try:
                still_ours = await asyncio.wait_for(
                    self._renew(keys=self._keys(lease.key)[:1], args=[lease.secret, ttl_ms]),
                    lease.vouched_until - sent,
                )
            except Exception as exc:
                if loop.time() < lease.vouched_until:
                    log.warning("renewing lock %r failed, retrying: %r", lease.key, exc)
                continue
            if not still_ours:
                self._lose(lease, "the key no longer holds its secret")
                return
            lease.vouched_until = max(lease.vouched_until, sent + self.ttl)

    def _check_deadline(self, lease: _RedisLease) -> None:
        """Run by a timer at the lease's deadline, so the loss is told the moment it is due,
        whatever the renewer is waiting for: lost if no renewal moved the deadline on."""
        lease.deadline = None
        if lease not in self._leases:
            return
        if lease._loop.time() >= lease.vouched_until:
            self._lose(lease, "its lease could not be renewed in time")
        else:
            lease.deadline = lease._loop.call_at(lease.vouched_until, self._check_deadline, lease)

    def _lose(self, lease: _RedisLease, why: str) -> None:
        log.error("lock %r was lost (%s)", lease.key, why)
        self._leases.discard(lease)
        lease.lost.set()
        if lease.deadline is not None:
            lease.deadline.cancel()
            lease.deadline = None
        if lease.renewer is not None and lease.renewer is not asyncio.current_task():
            lease.renewer.cancel()

    async def _release(self, lease: Lease) -> None:
        assert isinstance(lease, _RedisLease)
        self._leases.discard(lease)
        if lease.deadline is not None:
            lease.deadline.cancel()
            lease.deadline = None
        if lease.renewer is not None:
            lease.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease.renewer
        if not lease.lost.is_set():
            task = self._abandon(lease.key, lease.secret)
            await asyncio.wait([task], timeout=self.release_timeout)

    async def close(self) -> None:
        """Release held leases and close the connection (bounded: a dead server can't hang it)."""
        if self._leases:
            await asyncio.gather(*(lease.release() for lease in list(self._leases)), return_exceptions=True)
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.aclose(), 2.0)

    def status(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "held": {lease.key: {"token": lease.fencing_token} for lease in self._leases if lease.held},
        }
