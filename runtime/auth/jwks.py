"""Keeping JWKS keys fresh while the node runs (``auth.jwt.jwks`` and ``auth.jwt.jwks_url``).

Keys rotate without a restart: an identity provider publishes its new key in
its JWKS before signing with it, and a team rotating its own keys edits the
JWKS file. :class:`JwksRefresher` checks both in the background, never while a
request waits:

- at start, the URL is fetched once (bounded by ``jwks_timeout``); a failure
  is a warning and ``/status`` shows it: the node starts, and tokens of keys it
  does not have yet are refused as signed with an unknown key;
- every ``jwks_refresh`` the file is read again when its modification time or
  size changed, and the URL is fetched again;
- a token naming a kid no key has wakes the refresher early, at most once per
  :data:`MIN_EARLY_REFRESH` seconds (that token is still refused: verification
  never waits for the network).

A file that no longer parses or a fetch that fails keeps the keys in use and
logs a warning (once per distinct error); nothing is dropped until a good
JWKS replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from msuite.spec import JWT

from .jwt import JWTAuth
from .keys import KeyConfigError, keys_from_jwks, read_jwks

__all__ = ["MIN_EARLY_REFRESH", "JwksRefresher"]

MIN_EARLY_REFRESH = 30.0
"""Seconds between two refreshes woken by unknown kids (a flood of bad tokens costs one each)."""

MAX_JWKS_BYTES = 1024 * 1024

_log = logging.getLogger("msuite.auth")


class JwksRefresher:
    """The background task that reloads ``jwks`` and fetches ``jwks_url`` into a :class:`JWTAuth`."""

    def __init__(
        self, jwt: JWTAuth, settings: JWT, base_dir: Path, *, min_early: float = MIN_EARLY_REFRESH
    ) -> None:
        self._jwt = jwt
        self._settings = settings
        self._file = None if settings.jwks is None else base_dir / settings.jwks
        self._url = settings.jwks_url
        self._every = settings.jwks_refresh.total_seconds()
        self._timeout = settings.jwks_timeout.total_seconds()
        self._min_early = min_early
        self._stamp = self._file_stamp()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_early = -float("inf")
        self._state: dict[str, dict[str, Any]] = {}
        if self._file is not None:
            self._state["file"] = {"path": str(self._file), "keys": len(self._jwt.keys.keys), "error": None}
        if self._url is not None:
            self._state["url"] = {"url": self._url, "keys": 0, "fetched": None, "error": None}
        self._warned: dict[str, str] = {}

    @property
    def needed(self) -> bool:
        """Whether there is anything to refresh."""
        return self._file is not None or self._url is not None

    async def start(self) -> None:
        """Fetch the URL once, then refresh in the background."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._url is not None:
            await self._fetch()
        self._jwt.unknown_kid = self.poke
        self._task = asyncio.create_task(self._run(), name="msuite-jwks-refresh")

    async def stop(self) -> None:
        self._jwt.unknown_kid = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self, kid: str) -> None:
        """A token named an unknown kid: refresh soon (rate-limited); safe from any thread."""
        now = time.monotonic()
        if now - self._last_early < self._min_early or self._loop is None or self._wake is None:
            return
        self._last_early = now
        self._loop.call_soon_threadsafe(self._wake.set)

    async def refresh(self) -> None:
        """Reload the file if it changed and fetch the URL, now."""
        await self._reload_file()
        if self._url is not None:
            await self._fetch()

    def status(self) -> dict[str, Any]:
        return {name: dict(state) for name, state in self._state.items()}

    # ----------------------------------------------------------------------- internals

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._every)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:  # never let the refresher die: the keys in use stay
                _log.exception("JWKS refresh failed")

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._file is None:
            return None
        try:
            info = self._file.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    async def _reload_file(self) -> None:
        if self._file is None:
            return
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        state = self._state["file"]
        try:
            keys = await asyncio.to_thread(read_jwks, self._file, self._jwt.algorithms)
        except KeyConfigError as exc:
            state["error"] = str(exc)
            self._warn("file", f"JWKS file not reloaded, the keys in use stay: {exc}")
            return
        self._stamp = stamp
        self._jwt.replace_keys("jwks", keys)
        state.update(keys=len(keys), error=None)
        self._warned.pop("file", None)
        _log.info("JWKS file %s reloaded: %d keys", self._file, len(keys))

    async def _fetch(self) -> None:
        import aiohttp

        assert self._url is not None
        state = self._state["url"]
        try:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self._url) as response:
                if response.status != 200:
                    raise KeyConfigError(f"HTTP {response.status}")
                body = await response.content.read(MAX_JWKS_BYTES + 1)
                if len(body) > MAX_JWKS_BYTES:
                    raise KeyConfigError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
            import json

            try:
                data = json.loads(body)
            except ValueError:
                raise KeyConfigError("the answer is not JSON") from None
            keys = keys_from_jwks(data, self._jwt.algorithms, source="auth.jwt.jwks_url")
        except (KeyConfigError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            message = str(exc) or type(exc).__name__
            state["error"] = message
            self._warn("url", f"JWKS {self._url} not fetched, the keys in use stay: {message}")
            return
        self._jwt.replace_keys("jwks_url", keys)
        state.update(keys=len(keys), fetched=time.time(), error=None)
        self._warned.pop("url", None)

    def _warn(self, what: str, message: str) -> None:
        if self._warned.get(what) != message:
            self._warned[what] = message
            _log.warning("%s", message)
