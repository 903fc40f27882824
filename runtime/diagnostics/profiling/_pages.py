"""The pages: :class:`Profiling` adds them to a router; one CPU profile and one heap trace at a time."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from msuite.runtime.codes import GrpcCode
from msuite.runtime.http.errors import Refusal, error_response

from ._cprofile import SORTS, Profiler, pstats_bytes, pstats_text
from ._heap import HeapReport, heap_statistics
from ._params import choice, finite, flag, integer, number
from ._sampler import Sampler, fold
from ._stacks import dump_tasks, dump_threads, short_repr, tasks_json, tasks_text, threads_json, threads_text

_DEFAULT_SECONDS: Final = 30.0  # pprof's default for CPU profiles
_DEFAULT_HZ: Final = 100.0
_MIN_HZ: Final = 1.0
_MAX_HZ: Final = 1000.0
_DEFAULT_LIMIT: Final = 50
_MAX_FRAMES: Final = 100
_TRACEBACK_FRAMES: Final = 16
_DISCONNECT_POLL: Final = 0.1  # how often a profile looks whether its client is still there

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(handler: _Handler) -> _Handler:
    """``handler`` with its :class:`Refusal` turned into the error answer it stands for."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refusal as refusal:
            return refusal.response()

    return guarded


class _Run:
    """A profile in progress: what it is, how to stop it, how to clean it up (once)."""

    def __init__(self, slot: str, what: str, seconds: float, cleanup: Callable[[], None]) -> None:
        self.slot = slot
        self.what = what
        self.seconds = seconds
        self.started = time.monotonic()
        self.stop = asyncio.Event()
        self._cleanup: Callable[[], None] | None = cleanup

    def end(self) -> None:
        """Clean up (idempotent): disable the profiler, join the thread, stop tracing."""
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            cleanup()


_SLOTS: Final = {"cpu": "a CPU profile", "heap": "a heap trace"}

_INDEX: Final = """\
msuite profiling pages (Python counterparts of Go's net/http/pprof); every page is a GET.

{p}/tasks
    Every asyncio task of the event loop: name, coroutine, state (pending, cancelling, done),
    what it awaits, and its await stack. The request's own task is marked "(this request)".
    format=text|json          [text]

{p}/threads
    The stack of every Python thread, with its name, ident and daemon flag.
    format=text|json          [text]

{p}/profile
    cProfile of the event-loop thread (only that thread: see profile/collapsed for all threads).
    seconds=S                 [{default:g}; fractional allowed; at most {max:g}]
    format=pstats|text        [pstats: the Profile.dump_stats file for pstats, python -m pstats, snakeviz]
    sort=cumulative|tottime|calls  [cumulative; text only]
    limit=N                   [{limit}; text only: the top N functions]

{p}/profile/collapsed
    A sampling profile of all threads (wall clock), as folded stacks for flamegraph.pl, inferno,
    speedscope: "thread;outermost (file:line);...;innermost (file:line) count".
    seconds=S                 [{default:g}; at most {max:g}]
    hz=H                      [{hz:g}; {min_hz:g}..{max_hz:g} samples a second]
    lines=true|false          [true; false labels frames "qualname (file)"]

{p}/heap
    tracemalloc summary: at once if tracemalloc already traces, else trace for S seconds
    (allocations made in the window and still alive), then stop tracing.
    seconds=S                 [{default:g}; 0 allowed when tracemalloc already traces]
    group=lineno|filename|traceback  [lineno]
    limit=N                   [{limit}]
    frames=N                  [1, or {tb} with group=traceback; frames per traceback when tracing starts here]
    format=text|json          [text]

One CPU profile (profile, profile/collapsed) and one heap trace at a time: 409 otherwise.
Bad parameters answer 400.
"""


class Profiling:
    """The profiling pages of one node (see the package's docstring for the routes).

    ``max_seconds`` bounds the ``seconds`` of every profile; ``default_seconds`` (capped by it) is used
    when a request gives none. Call :meth:`add_to` before the server starts and :meth:`close` (on the
    event loop) when the node stops.
    """

    def __init__(self, max_seconds: float = 300.0, *, default_seconds: float = _DEFAULT_SECONDS) -> None:
        if not (math.isfinite(max_seconds) and max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number, not {max_seconds!r}")
        if not (math.isfinite(default_seconds) and default_seconds > 0):
            raise ValueError(f"default_seconds must be a positive number, not {default_seconds!r}")
        self.max_seconds = float(max_seconds)
        self.default_seconds = min(float(default_seconds), self.max_seconds)
        self._prefix = "/debug"
        self._runs: dict[str, _Run] = {}
        self._closed = False

    def add_to(self, router: web.UrlDispatcher, prefix: str = "/debug") -> None:
        """Add the pages under ``prefix`` (``/debug/tasks``, ``/debug/profile``, ...)."""
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._prefix = prefix
        index = _guard(self._index)
        if prefix:
            router.add_get(prefix, index)
        router.add_get(prefix + "/", index)
        # no automatic HEAD: a HEAD request must not start a 30 s profile
        for path, handler in (
            ("/tasks", self._tasks),
            ("/threads", self._threads),
            ("/profile", self._profile),
            ("/profile/collapsed", self._collapsed),
            ("/heap", self._heap),
        ):
            router.add_get(prefix + path, _guard(handler), allow_head=False)

    async def close(self) -> None:
        """Stop every profile in progress now: profilers disabled, threads joined, tracing stopped.

        Their requests answer 503; later profile requests too. The dumps keep working.
        """
        self._closed = True
        for run in list(self._runs.values()):
            run.stop.set()
            run.end()
        await asyncio.sleep(0)  # let the woken handlers answer

    # ------------------------------------------------------------------ helpers

    def _seconds(self, request: web.Request, *, allow_zero: bool = False) -> float:
        raw = request.query.get("seconds")
        if raw is None:
            return self.default_seconds
        seconds = finite("seconds", raw)
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise Refusal.invalid(f"seconds must be greater than 0, not {raw}")
        if seconds > self.max_seconds:
            raise Refusal.invalid(f"seconds must be at most {self.max_seconds:g}, not {raw}")
        return seconds

    def _claim(self, slot: str, what: str, seconds: float, cleanup: Callable[[], None]) -> _Run:
        if self._closed:
            raise Refusal(503, GrpcCode.UNAVAILABLE, "profiling is closed: the node is stopping")
        running = self._runs.get(slot)
        if running is not None:
            elapsed = time.monotonic() - running.started
            raise Refusal(
                409,
                GrpcCode.ABORTED,
                f"{_SLOTS[slot]} is already running: {running.what} "
                f"({elapsed:.1f} s of {running.seconds:g} s done); try again when it ends",
            )
        run = _Run(slot, what, seconds, cleanup)
        self._runs[slot] = run
        return run

    def _release(self, run: _Run) -> None:
        run.end()
        if self._runs.get(run.slot) is run:
            del self._runs[run.slot]

    async def _window(self, request: web.Request, run: _Run) -> None:
        """Wait out the profile's window; raise the answer if close() or the client ends it first.

        A server that cancels handlers on disconnect cancels this wait at once; otherwise the
        transport is looked at every ``_DISCONNECT_POLL`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + run.seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(min(remaining, _DISCONNECT_POLL)):
                    await run.stop.wait()
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise Refusal(499, GrpcCode.CANCELLED, "the client went away") from None
            else:
                raise Refusal(503, GrpcCode.UNAVAILABLE, "profile stopped: the node is stopping")

    # ------------------------------------------------------------------ pages

    async def _index(self, request: web.Request) -> web.StreamResponse:
        text = _INDEX.format(
            p=self._prefix,
            default=self.default_seconds,
            max=self.max_seconds,
            limit=_DEFAULT_LIMIT,
            hz=_DEFAULT_HZ,
            min_hz=_MIN_HZ,
            max_hz=_MAX_HZ,
            tb=_TRACEBACK_FRAMES,
        )
        return web.Response(text=text)

    async def _tasks(self, request: web.Request) -> web.StreamResponse:
        form = choice(request, "format", ("text", "json"), "text")
        dumps = dump_tasks()
        if form == "json":
            return web.Response(
                text=await asyncio.to_thread(tasks_json, dumps), content_type="application/json"
            )
        return web.Response(text=await asyncio.to_thread(tasks_text, dumps))

    async def _threads(self, request: web.Request) -> web.StreamResponse:
        form = choice(request, "format", ("text", "json"), "text")
        dumps = dump_threads()
        if form == "json":
            body = await asyncio.to_thread(threads_json, dumps)
            return web.Response(text=body, content_type="application/json")
        return web.Response(text=await asyncio.to_thread(threads_text, dumps))

    async def _profile(self, request: web.Request) -> web.StreamResponse:
        seconds = self._seconds(request)
        form = choice(request, "format", ("pstats", "text"), "pstats")
        sort = choice(request, "sort", SORTS, "cumulative")
        limit = integer(request, "limit", _DEFAULT_LIMIT, low=1, high=1_000_000)
        profiler = Profiler()

        def disable() -> None:
            active: object = sys.getprofile()
            if active is profiler:  # never clear someone else's profile function
                profiler.disable()

        run = self._claim("cpu", f"cProfile of the event-loop thread for {seconds:g} s", seconds, disable)
        try:
            if sys.getprofile() is not None:
                raise Refusal(
                    409,
                    GrpcCode.ABORTED,
                    "another profiler (sys.setprofile) is active on the event-loop thread",
                )
            profiler.enable()
            await self._window(request, run)
        finally:
            self._release(run)
        if form == "text":
            return web.Response(text=await asyncio.to_thread(pstats_text, profiler, seconds, sort, limit))
        body = await asyncio.to_thread(pstats_bytes, profiler)
        name = f"cpu-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.pstats"
        return web.Response(
            body=body,
            content_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def _collapsed(self, request: web.Request) -> web.StreamResponse:
        seconds = self._seconds(request)
        hz = number(request, "hz", _DEFAULT_HZ, low=_MIN_HZ, high=_MAX_HZ)
        lines = flag(request, "lines", True)
        sampler = Sampler(hz, deadline=time.monotonic() + seconds + 5.0)
        run = self._claim("cpu", f"sampling profiler at {hz:g} Hz for {seconds:g} s", seconds, sampler.stop)
        try:
            sampler.start()
            await self._window(request, run)
        finally:
            self._release(run)
        if sampler.error is not None:
            return error_response(500, GrpcCode.INTERNAL, f"the sampler failed: {short_repr(sampler.error)}")
        text = await asyncio.to_thread(fold, sampler.counts(), lines)
        return web.Response(text=text)

    async def _heap(self, request: web.Request) -> web.StreamResponse:
        seconds = self._seconds(request, allow_zero=True)
        group = choice(request, "group", ("lineno", "filename", "traceback"), "lineno")
        limit = integer(request, "limit", _DEFAULT_LIMIT, low=1, high=1_000_000)
        default_frames = _TRACEBACK_FRAMES if group == "traceback" else 1
        frames = integer(request, "frames", default_frames, low=1, high=_MAX_FRAMES)
        form = choice(request, "format", ("text", "json"), "text")
        start_here = not tracemalloc.is_tracing()
        if start_here and seconds == 0:
            raise Refusal.invalid("seconds must be greater than 0: tracemalloc is not tracing yet")

        def stop_tracing() -> None:
            if start_here and tracemalloc.is_tracing():
                tracemalloc.stop()

        what = f"tracemalloc for {seconds:g} s" if start_here else "a tracemalloc snapshot"
        run = self._claim("heap", what, seconds, stop_tracing)
        try:
            if start_here:
                tracemalloc.start(frames)
                await self._window(request, run)
            current, peak = tracemalloc.get_traced_memory()
            traceback_limit = tracemalloc.get_traceback_limit()
            try:
                snapshot = await asyncio.to_thread(tracemalloc.take_snapshot)
            except RuntimeError as exc:  # stopped meanwhile: by close() or by someone else
                if run.stop.is_set():
                    raise Refusal(
                        503, GrpcCode.UNAVAILABLE, "heap trace stopped: the node is stopping"
                    ) from None
                raise Refusal(409, GrpcCode.ABORTED, f"heap trace aborted: {exc}") from None
        finally:
            self._release(run)
        report = HeapReport(group, limit, start_here, seconds, traceback_limit, current, peak)
        report.statistics = await asyncio.to_thread(heap_statistics, snapshot, group)
        del snapshot
        if form == "json":
            return web.Response(text=await asyncio.to_thread(report.json), content_type="application/json")
        return web.Response(text=await asyncio.to_thread(report.text))
