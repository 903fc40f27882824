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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from .locker import Lease, LockerBase, LockTimeout, check_key

if TYPE_CHECKING:
    from msuite.spec import Locker as LockerSettings

__all__ = ["RedisLocker"]

log = logging.getLogger("msuite.locks")

# KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] token, ARGV[2] ttl in ms
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
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
    def __init__(self, locker: RedisLocker, key: str, fencing_token: int, secret: str) -> None:
        super().__init__(locker, key, fencing_token)
        self.secret = secret
        self.renewer: asyncio.Task[None] | None = None


class RedisLocker(LockerBase):
    """Locks on a Redis server. See the module docs for the guarantees."""

    backend = "redis"

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
        last_error: BaseException | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                why = f": {last_error!r}" if last_error else ""
                raise LockTimeout(f"lock {key!r} (backend redis) not acquired within {timeout:g}s{why}")
            try:
                token = int(
                    await asyncio.wait_for(
                        self._acquire(keys=self._keys(key), args=[secret, ttl_ms]), remaining
                    )
                )
            except (AuthenticationError, ResponseError):
                raise  # wrong password, a server that refuses the script: retrying won't help
            except (TimeoutError, RedisError, OSError) as exc:
                last_error = exc
                await self._abandon(key, secret)  # the SET may have landed: undo it if so
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, 0.1)
                continue
            except asyncio.CancelledError:
                await self._abandon(key, secret)
                raise
            if token:
                lease = _RedisLease(self, key, token, secret)
                lease.renewer = loop.create_task(self._keep(lease), name=f"msuite-lock-renew-{key}")
                self._leases.add(lease)
                return lease
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.1)

    async def _abandon(self, key: str, secret: str) -> None:
        """Release ``key`` if it holds ``secret`` (a try that failed half-way), bounded, best effort."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(
                asyncio.wait_for(self._release_script(keys=self._keys(key)[:1], args=[secret]), 1.0)
            )

    async def _keep(self, lease: _RedisLease) -> None:
        """Renew every third of the TTL; lost once a TTL has passed since the last good renewal was sent."""
        loop = asyncio.get_running_loop()
        ttl_ms = max(1, int(self.ttl * 1000))
        vouched_until = loop.time() + self.ttl  # the acquire itself was sent before now
        while lease.held:
            await asyncio.sleep(self.ttl / 3)
            sent = loop.time()
            try:
                still_ours = await asyncio.wait_for(
                    self._renew(keys=self._keys(lease.key)[:1], args=[lease.secret, ttl_ms]),
                    max(0.05, vouched_until - sent),
                )
            except Exception as exc:
                if loop.time() < vouched_until - 0.05:
                    log.warning("renewing lock %r failed, retrying: %r", lease.key, exc)
                    continue
                still_ours = 0
            if not still_ours:
                log.error("lock %r was lost (its lease could not be renewed in time)", lease.key)
                lease.lost.set()
                self._leases.discard(lease)
                return
            vouched_until = sent + self.ttl

    async def _release(self, lease: Lease) -> None:
        assert isinstance(lease, _RedisLease)
        self._leases.discard(lease)
        if lease.renewer is not None:
            lease.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease.renewer
        if not lease.lost.is_set():
            await self._abandon(lease.key, lease.secret)

    async def close(self) -> None:
        """Release held leases and close the connection (bounded: a dead server can't hang it)."""
        for lease in list(self._leases):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.release(), 2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.aclose(), 2.0)

    def status(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "held": {lease.key: {"token": lease.fencing_token} for lease in self._leases if lease.held},
        }
