"""The Redis locker (``locker: {backend: redis, url: ...}``), on redis-py's asyncio client.

A lock is the key ``<prefix>/<key>`` holding the holder's random token, set
with ``NX`` and a TTL (``locker.ttl``) that a background task renews every
third of the TTL while the lease is held; a lease that cannot be renewed in
time is marked lost. Only the holder's token can release (a Lua script
compares before deleting). Fencing tokens come from ``INCR`` on
``<prefix>/<key>/fence`` in the same script that takes the lock, so they grow
for every new holder, as long as Redis keeps its data: a Redis without
persistence that restarts starts them again from 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from .locker import Lease, LockTimeout, check_key, locked

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


class RedisLocker:
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

        options: dict[str, Any] = {
            "decode_responses": True,
            # a restarted or briefly unreachable server: reconnect and retry, bounded
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 6),
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
        lock = f"{self.prefix}/{key}"
        return [lock, f"{lock}/fence"]

    def lock(self, key: str, timeout: float) -> AbstractAsyncContextManager[Lease]:
        """``async with locker.lock(key, timeout) as lease:``."""
        return locked(self, key, timeout)

    async def try_lock(self, key: str, timeout: float) -> Lease:
        check_key(key)
        secret = os.urandom(16).hex()
        ttl_ms = max(1, int(self.ttl * 1000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        while True:
            token = int(await self._acquire(keys=self._keys(key), args=[secret, ttl_ms]))
            if token:
                lease = _RedisLease(self, key, token, secret)
                lease.renewer = loop.create_task(self._keep(lease), name=f"msuite-lock-renew-{key}")
                self._leases.add(lease)
                return lease
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeout(f"lock {key!r} (backend redis) not acquired within {timeout:g}s")
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)

    async def _keep(self, lease: _RedisLease) -> None:
        """Renew the lease every third of the TTL; mark it lost when that fails for a whole TTL."""
        loop = asyncio.get_running_loop()
        ttl_ms = max(1, int(self.ttl * 1000))
        renewed_at = loop.time()
        while lease.held:
            await asyncio.sleep(self.ttl / 3)
            try:
                still_ours = await self._renew(keys=self._keys(lease.key)[:1], args=[lease.secret, ttl_ms])
            except Exception as exc:  # a connection problem: keep trying until the TTL runs out
                if loop.time() - renewed_at < self.ttl:
                    log.warning("renewing lock %r failed, retrying: %r", lease.key, exc)
                    continue
                still_ours = 0
            if not still_ours:
                log.error("lock %r was lost (its lease could not be renewed)", lease.key)
                lease.lost.set()
                return
            renewed_at = loop.time()

    async def _release(self, lease: Lease) -> None:
        assert isinstance(lease, _RedisLease)
        self._leases.discard(lease)
        if lease.renewer is not None:
            lease.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease.renewer
        if not lease.lost.is_set():
            await self._release_script(keys=self._keys(lease.key)[:1], args=[lease.secret])

    async def close(self) -> None:
        for lease in list(self._leases):
            with contextlib.suppress(Exception):
                await lease.release()
        await self._client.aclose()

    def status(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "held": {lease.key: {"token": lease.fencing_token} for lease in self._leases if lease.held},
        }
