"""Profiling pages for the node's HTTP server: Python counterparts of Go's net/http/pprof.

The node adds them under ``/debug/`` when the manifest says ``diagnostics.profiling: true``::

    profiling = Profiling(max_seconds=300.0)
    profiling.add_to(app.router, prefix="/debug")  # before the server starts
    ...
    await profiling.close()  # on node stop

Every page is a GET; the defaults are in brackets (``/debug`` is the ``prefix`` of :meth:`Profiling.add_to`):

=============================  =========================================================================
Route                          Answer and parameters
=============================  =========================================================================
``/debug/`` (and ``/debug``)   This list as plain text.
``/debug/tasks``               Every asyncio task of the running loop: name, coroutine, state
                               (``pending``, ``cancelling``, ``done``), what it awaits, its await stack;
                               the request's own task is marked. ``format=text|json`` [text].
``/debug/threads``             The stack of every Python thread (``sys._current_frames()``) with the
                               name, idents and daemon flag of ``threading.enumerate()``; the event-loop
                               thread is marked. ``format=text|json`` [text].
``/debug/profile``             cProfile of the event-loop thread for ``seconds``.
                               ``seconds=S`` [30; fractional allowed; at most ``max_seconds``];
                               ``format=pstats|text`` [pstats]; for ``text``:
                               ``sort=cumulative|tottime|calls`` [cumulative], ``limit=N`` [50].
``/debug/profile/collapsed``   A sampling profile of *all* threads, as folded-stacks text.
                               ``seconds=S`` [30]; ``hz=H`` [100; 1..1000]; ``lines=true|false`` [true].
``/debug/heap``                A tracemalloc summary. ``seconds=S`` [30; 0 allowed when tracemalloc
                               already traces]; ``limit=N`` [50]; ``group=lineno|filename|traceback``
                               [lineno]; ``frames=N`` [1, or 16 with ``group=traceback``; 1..100];
                               ``format=text|json`` [text].
=============================  =========================================================================

Details:

* ``profile`` — ``cProfile`` only sees the thread it is enabled in, here the event-loop thread (every
  coroutine and callback of the node, not its worker threads; use ``profile/collapsed`` for those).
  ``format=pstats`` is the binary file ``Profile.dump_stats`` writes (a marshalled stats dict), served as
  ``application/octet-stream`` with a ``Content-Disposition`` file name: read it with ``pstats.Stats``,
  ``python -m pstats`` or snakeviz. ``format=text`` is the ``pstats`` report of the top ``limit``
  functions. If another profiler (``sys.setprofile``) is already active on the loop thread the answer is
  409.
* ``profile/collapsed`` — a daemon thread named :data:`SAMPLER_THREAD_NAME` reads
  ``sys._current_frames()`` ``hz`` times a second (wall clock: idle threads are sampled too) and skips
  itself. The answer is the "folded stacks" text flamegraph.pl, inferno and speedscope read, one line
  per distinct stack, outermost frame first::

      threadname;qualname (file:line);qualname (file:line);... count

  ``qualname`` is the code object's qualified name (``Class.method``, ``outer.<locals>.inner``),
  ``file`` the source path shortened by the longest ``sys.path`` entry it is under (stdlib and
  site-packages files read ``asyncio/events.py``, ``aiohttp/web.py``), ``line`` the line being run.
  With ``lines=false`` a frame reads ``qualname (file)`` and the samples of a function merge. The count
  follows the *last* space (labels may hold spaces: thread names, paths); ``;`` and line breaks inside
  a thread name or label are replaced by ``_``.
* ``heap`` — if tracemalloc already traces (``PYTHONTRACEMALLOC``, ``-X tracemalloc``, someone's
  ``tracemalloc.start()``), the snapshot is taken at once and ``seconds`` is ignored: the summary covers
  every live traced block. Otherwise tracing starts (with ``frames`` frames per traceback), runs for
  ``seconds`` and stops after the snapshot: the summary covers the blocks allocated during the window and
  still alive at its end. Tracing is only stopped if this page started it. tracemalloc's own and
  importlib's frames are filtered out. The text gives the traced memory (current, peak), the total after
  the filters, then the top ``limit`` statistics (size, count, location).

Rules shared by the pages: a bad parameter (not a number, ``seconds <= 0``, ``seconds > max_seconds``,
an unknown ``format``/``group``/``sort``) answers 400 with the body ``{"code": 3, "message": ...,
"details": []}``. One CPU profile (``profile`` or ``profile/collapsed``) and one heap trace run at a
time: another request answers 409 (code 10, ABORTED) naming what runs. A client that goes away stops its
profile within 0.1 s (or at once when the server cancels handlers on disconnect) and everything is
cleaned up (cProfile disabled, sampler thread joined, tracemalloc stopped if the page started it);
:meth:`Profiling.close` does the same for everything in progress, and those requests answer 503.

The event loop is only held for what must run on its thread (cProfile enable/disable, reading the task
and thread stacks, starting and joining the sampler, starting and stopping tracemalloc): pstats, folding,
tracemalloc snapshots and statistics, and source lookups run in worker threads (``asyncio.to_thread``).
The GIL still applies: a loop that never waits (it polls its selector without sleeping) can starve those
threads and the sampler, which slows the answer or lowers the sample rate, not the node.

The pages show code, stacks and allocation sites: serve them behind the node's authentication.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import linecache
import marshal
import math
import os
import pstats
import re
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, Final, NamedTuple

from aiohttp import web

from msuite.runtime.http.errors import error_response

__all__ = ["SAMPLER_THREAD_NAME", "Profiling"]

SAMPLER_THREAD_NAME: Final = "msuite-profiler-sampler"
"""The name of the sampling profiler's daemon thread (it never samples itself)."""

_DEFAULT_SECONDS: Final = 30.0  # pprof's default for CPU profiles
_DEFAULT_HZ: Final = 100.0
_MIN_HZ: Final = 1.0
_MAX_HZ: Final = 1000.0
_DEFAULT_LIMIT: Final = 50
_MAX_FRAMES: Final = 100
_TRACEBACK_FRAMES: Final = 16
_DISCONNECT_POLL: Final = 0.1  # how often a profile looks whether its client is still there
_MAX_STACK: Final = 500  # frames kept per stack in the dumps
_REPR_LIMIT: Final = 300

# gRPC status codes of the error bodies
_INVALID_ARGUMENT: Final = 3
_ABORTED: Final = 10
_INTERNAL: Final = 13
_UNAVAILABLE: Final = 14
_CANCELLED: Final = 1

_SORTS: Final = {"cumulative": "cumulative time", "tottime": "internal time", "calls": "call count"}
_UNSAFE_IN_LABEL: Final = re.compile(r"[;\r\n]")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
# tracemalloc's own frames and the import machinery's are noise in a heap summary
_HEAP_FILTERS: Final = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "*/importlib/_bootstrap*.py"),
    tracemalloc.Filter(False, "<unknown>"),
)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Reject(Exception):
    """Raised by a handler to answer ``response`` (a JSON error) instead."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def _bad(message: str) -> _Reject:
    return _Reject(error_response(400, _INVALID_ARGUMENT, message))


def _guard(handler: _Handler) -> _Handler:
    """``handler`` with its :class:`_Reject` turned into the error answer it carries."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Reject as reject:
            return reject.response

    return guarded


# ---------------------------------------------------------------------------------------- parameters


def _number(request: web.Request, name: str, default: float, *, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _bad(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(f"{name}: {raw!r} is not a finite number")
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low:g} and {high:g}, not {raw}")
    return value


def _integer(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}, not {raw}")
    return value


def _choice(request: web.Request, name: str, choices: Iterable[str], default: str) -> str:
    raw = request.query.get(name, default)
    allowed = tuple(choices)
    if raw not in allowed:
        raise _bad(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
    return raw


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _bad(f"{name}: {raw!r} is not true or false")


# ---------------------------------------------------------------------------------------- stacks


class _Frame(NamedTuple):
    """One frame of a dumped stack, read on the loop thread (source lines are looked up later)."""

    filename: str
    lineno: int
    function: str


def _frame(frame: FrameType) -> _Frame:
    code = frame.f_code
    return _Frame(code.co_filename, frame.f_lineno or 0, code.co_qualname)


def _walk_out(frame: FrameType | None) -> list[_Frame]:
    """The stack ending at ``frame``, outermost first (at most ``_MAX_STACK`` innermost frames)."""
    stack: list[_Frame] = []
    while frame is not None and len(stack) < _MAX_STACK:
        stack.append(_frame(frame))
        frame = frame.f_back
    stack.reverse()
    return stack


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


# the frame and "awaited object" attributes of coroutines, generators and async generators
_AWAIT_LINKS: Final = (("cr_frame", "cr_await"), ("gi_frame", "gi_yieldfrom"), ("ag_frame", "ag_await"))


def _await_chain(coro: object) -> list[_Frame]:
    """The frames of a suspended coroutine and of what it awaits, outermost first.

    ``Task.get_stack()`` gives only the outermost frame of a suspended task; following ``cr_await``
    down the chain gives the line each coroutine is suspended at, down to the innermost one.
    """
    stack: list[_Frame] = []
    current: object = coro
    while current is not None and len(stack) < _MAX_STACK:
        link = next(((f, n) for f, n in _AWAIT_LINKS if hasattr(current, f)), None)
        if link is None:
            break  # a Future's iterator or another awaitable without frames: the end of the chain
        frame_attr, next_attr = link
        frame: FrameType | None = getattr(current, frame_attr)
        if frame is None:  # finished
            break
        stack.append(_frame(frame))
        current = getattr(current, next_attr)
    return stack


def _code_of(coro: object) -> CodeType | None:
    for attr in ("cr_code", "gi_code", "ag_code"):
        code = getattr(coro, attr, None)
        if isinstance(code, CodeType):
            return code
    return None


@dataclass
class _TaskDump:
    name: str
    coroutine: str
    location: str | None
    state: str
    current: bool
    awaiting: str | None
    outcome: str | None
    stack: list[_Frame]


def _dump_tasks() -> list[_TaskDump]:
    """Every task of the running loop, read on the loop thread (no I/O, no source lookups)."""
    this = asyncio.current_task()
    dumps: list[_TaskDump] = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        code = _code_of(coro)
        coroutine = getattr(coro, "__qualname__", None) or type(coro).__qualname__
        location = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else None
        outcome: str | None = None
        awaiting: str | None = None
        if task.done():
            state = "done"
            # not task.exception(): that would mark an exception as retrieved and silence its log
            outcome = "cancelled" if task.cancelled() else "finished"
        else:
            state = "cancelling" if task.cancelling() else "pending"
            waiter = getattr(task, "_fut_waiter", None)  # the future the task is blocked on
            awaiting = None if waiter is None else _short_repr(waiter)
        # a running coroutine has no cr_await: the running task's stack is the live one
        stack = _walk_out(sys._getframe()) if task is this else _await_chain(coro)
        dumps.append(
            _TaskDump(
                str(task.get_name()), str(coroutine), location, state, task is this, awaiting, outcome, stack
            )
        )
    dumps.sort(key=lambda dump: (not dump.current, dump.name))
    return dumps


@dataclass
class _ThreadDump:
    name: str
    ident: int
    native_id: int | None
    daemon: bool | None
    current: bool
    stack: list[_Frame]


def _dump_threads() -> list[_ThreadDump]:
    """Every Python thread's stack; the current one (the event loop's) comes first."""
    frames = sys._current_frames()
    known = {thread.ident: thread for thread in threading.enumerate()}
    me = threading.get_ident()
    dumps: list[_ThreadDump] = []
    for ident, frame in frames.items():
        thread = known.get(ident)
        dumps.append(
            _ThreadDump(
                name=thread.name if thread is not None else f"<unknown thread {ident}>",
                ident=ident,
                native_id=thread.native_id if thread is not None else None,
                daemon=thread.daemon if thread is not None else None,
                current=ident == me,
                stack=_walk_out(frame),
            )
        )
    del frames
    dumps.sort(key=lambda dump: (not dump.current, dump.name, dump.ident))
    return dumps


def _stack_lines(stack: list[_Frame], indent: str) -> list[str]:
    """``traceback.print_stack`` style lines (outermost first) with the source where it is found."""
    lines: list[str] = []
    for frame in stack:
        lines.append(f'{indent}File "{frame.filename}", line {frame.lineno}, in {frame.function}')
        source = linecache.getline(frame.filename, frame.lineno).strip() if frame.lineno else ""
        if source:
            lines.append(f"{indent}  {source}")
    return lines


def _stack_json(stack: list[_Frame]) -> list[dict[str, Any]]:
    return [
        {
            "file": frame.filename,
            "line": frame.lineno,
            "function": frame.function,
            "code": linecache.getline(frame.filename, frame.lineno).strip() or None,
        }
        for frame in stack
    ]


def _tasks_text(dumps: list[_TaskDump]) -> str:
    lines = [f"{len(dumps)} asyncio tasks of the event loop (stacks outermost first)", ""]
    for dump in dumps:
        mark = " (this request)" if dump.current else ""
        lines.append(f"Task {dump.name!r} [{dump.state}]{mark}")
        where = f" at {dump.location}" if dump.location else ""
        lines.append(f"  coroutine {dump.coroutine}{where}")
        if dump.awaiting:
            lines.append(f"  awaiting {dump.awaiting}")
        if dump.outcome:
            lines.append(f"  outcome {dump.outcome}")
        if dump.stack:
            lines.append("  Stack (most recent call last):")
            lines.extend(_stack_lines(dump.stack, "    "))
        lines.append("")
    return "\n".join(lines)


def _tasks_json(dumps: list[_TaskDump]) -> str:
    tasks = [
        {
            "name": dump.name,
            "coroutine": dump.coroutine,
            "location": dump.location,
            "state": dump.state,
            "current": dump.current,
            "awaiting": dump.awaiting,
            "outcome": dump.outcome,
            "stack": _stack_json(dump.stack),
        }
        for dump in dumps
    ]
    return json.dumps({"tasks": tasks}, indent=1)


def _threads_text(dumps: list[_ThreadDump]) -> str:
    lines = [f"{len(dumps)} Python threads (stacks outermost first)", ""]
    for dump in dumps:
        flags = [f"ident {dump.ident}"]
        if dump.native_id is not None:
            flags.append(f"native id {dump.native_id}")
        if dump.daemon:
            flags.append("daemon")
        if dump.current:
            flags.append("event loop, this request")
        lines.append(f"Thread {dump.name!r} ({', '.join(flags)})")
        lines.extend(_stack_lines(dump.stack, "  "))
        lines.append("")
    return "\n".join(lines)


def _threads_json(dumps: list[_ThreadDump]) -> str:
    threads = [
        {
            "name": dump.name,
            "ident": dump.ident,
            "native_id": dump.native_id,
            "daemon": dump.daemon,
            "current": dump.current,
            "stack": _stack_json(dump.stack),
        }
        for dump in dumps
    ]
    return json.dumps({"threads": threads}, indent=1)


# ---------------------------------------------------------------------------------------- cProfile


class _Profiler(cProfile.Profile):
    """A cProfile whose stats can be read in a worker thread.

    ``Profile.create_stats`` (which ``pstats.Stats`` calls) disables the profiler first, and disabling
    clears the profile function of the thread it runs in: in a worker thread, that would be the wrong
    one. The loop thread disables it; reading the stats only takes the snapshot.
    """

    def create_stats(self) -> None:
        self.snapshot_stats()


def _pstats_bytes(profiler: _Profiler) -> bytes:
    profiler.snapshot_stats()
    return marshal.dumps(profiler.stats)  # what Profile.dump_stats writes


def _pstats_text(profiler: _Profiler, seconds: float, sort: str, limit: int) -> str:
    out = io.StringIO()
    out.write(
        f"cProfile of the event-loop thread for {seconds:g} s, "
        f"top {limit} functions by {_SORTS[sort]} (file:line(function))\n"
    )
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(sort).print_stats(limit)
    return out.getvalue()


# ---------------------------------------------------------------------------------------- sampler

_StackKey = tuple[tuple[CodeType, int], ...]


class _Sampler:
    """A daemon thread reading every other thread's stack ``hz`` times a second.

    The counts are keyed by (thread name, stack of (code, line)), outermost frame first; labels are
    made afterwards, off the loop (:func:`_fold`).
    """

    def __init__(self, hz: float, deadline: float) -> None:
        self.interval = 1.0 / hz
        self.samples = 0
        self.error: BaseException | None = None
        self._deadline = deadline  # a backstop: the thread ends by itself at this monotonic time
        self._counts: Counter[tuple[str, _StackKey]] = Counter()
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=SAMPLER_THREAD_NAME, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread: prompt, it only finishes the sample it is taking."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5.0)

    def counts(self) -> dict[tuple[str, _StackKey], int]:
        with self._lock:
            return dict(self._counts)

    def _run(self) -> None:
        me = threading.get_ident()
        next_at = time.monotonic()
        try:
            while True:
                self._sample(me)
                next_at += self.interval
                now = time.monotonic()
                if now >= self._deadline:
                    return
                next_at = max(next_at, now)  # late (the GIL was busy): skip the missed ticks, no burst
                if self._stopping.wait(next_at - now):
                    return
        except BaseException as exc:  # reported by the page; a thread has nobody else to tell
            self.error = exc

    def _name(self, ident: int) -> str:
        name = self._names.get(ident)
        if name is None:
            self._names = {thread.ident: thread.name for thread in threading.enumerate() if thread.ident}
            name = self._names.setdefault(ident, f"thread-{ident}")
        return name

    def _sample(self, me: int) -> None:
        frames = sys._current_frames()
        keys: list[tuple[str, _StackKey]] = []
        for ident, top in frames.items():
            if ident == me:
                continue
            stack: list[tuple[CodeType, int]] = []
            frame: FrameType | None = top
            while frame is not None:
                stack.append((frame.f_code, frame.f_lineno or 0))
                frame = frame.f_back
            stack.reverse()
            keys.append((self._name(ident), tuple(stack)))
        with self._lock:
            self._counts.update(keys)
            self.samples += 1


def _path_shortener() -> Callable[[str], str]:
    """Paths made relative to the longest ``sys.path`` entry holding them (``asyncio/events.py``)."""
    roots = sorted(
        {os.path.join(os.path.abspath(entry), "") for entry in sys.path if isinstance(entry, str)},
        key=len,
        reverse=True,
    )
    cache: dict[str, str] = {}

    def shorten(path: str) -> str:
        short = cache.get(path)
        if short is None:
            short = path
            if not path.startswith("<"):
                for root in roots:
                    if path.startswith(root) and len(path) > len(root):
                        short = path[len(root) :]
                        break
            cache[path] = short
        return short

    return shorten


def _clean(text: str) -> str:
    return _UNSAFE_IN_LABEL.sub("_", text)


def _fold(counts: dict[tuple[str, _StackKey], int], lines: bool) -> str:
    """The folded-stacks text of the sampler's counts (see the module docstring for the format)."""
    shorten = _path_shortener()
    labels: dict[tuple[CodeType, int], str] = {}
    folded: Counter[str] = Counter()
    for (thread, stack), count in counts.items():
        parts = [_clean(thread) or "thread"]
        for code, lineno in stack:
            key = (code, lineno if lines else 0)
            label = labels.get(key)
            if label is None:
                where = shorten(code.co_filename)
                label = f"{code.co_qualname} ({where}:{lineno})" if lines else f"{code.co_qualname} ({where})"
                label = labels[key] = _clean(label)
            parts.append(label)
        folded[";".join(parts)] += count
    return "".join(f"{stack} {count}\n" for stack, count in sorted(folded.items()))


# ---------------------------------------------------------------------------------------- heap


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass
class _HeapReport:
    group: str
    limit: int
    started_here: bool
    window: float
    traceback_limit: int
    current: int
    peak: int
    statistics: list[tracemalloc.Statistic] = field(default_factory=list)

    def total(self) -> tuple[int, int]:
        return sum(stat.size for stat in self.statistics), sum(stat.count for stat in self.statistics)

    def top(self) -> list[tracemalloc.Statistic]:
        return self.statistics[: self.limit]

    def location(self, stat: tracemalloc.Statistic) -> str:
        frame = stat.traceback[0]
        return frame.filename if self.group == "filename" else f"{frame.filename}:{frame.lineno}"

    def text(self) -> str:
        size, count = self.total()
        if self.started_here:
            scope = (
                f"blocks allocated during the {self.window:g} s window and still alive at its end "
                f"(tracing started and stopped by this request, "
                f"{self.traceback_limit} frame(s) per traceback)"
            )
        else:
            scope = (
                "every live traced block (tracemalloc was already tracing, "
                f"{self.traceback_limit} frame(s) per traceback)"
            )
        top = self.top()
        lines = [
            f"tracemalloc heap summary: {scope}",
            f"traced memory (before filters): current {_size(self.current)}, peak {_size(self.peak)}",
            f"total (after filters): {_size(size)} in {count} blocks",
            f"top {len(top)} of {len(self.statistics)} by size, grouped by {self.group}:",
            "",
        ]
        for stat in top:
            if self.group == "traceback":
                lines.append(
                    f"{_size(stat.size):>12} {stat.count:>9} blocks, allocated at (most recent last):"
                )
                lines.extend("    " + line for line in stat.traceback.format())
            else:
                lines.append(f"{_size(stat.size):>12} {stat.count:>9} blocks  {self.location(stat)}")
        lines.append("")
        return "\n".join(lines)

    def json(self) -> str:
        size, count = self.total()
        body = {
            "started_tracing": self.started_here,
            "window_seconds": self.window if self.started_here else 0,
            "traceback_limit": self.traceback_limit,
            "group": self.group,
            "traced_memory": {"current": self.current, "peak": self.peak},
            "total_size": size,
            "total_count": count,
            "statistics_count": len(self.statistics),
            "statistics": [
                {
                    "size": stat.size,
                    "count": stat.count,
                    "traceback": [
                        {"file": frame.filename, "line": frame.lineno if self.group != "filename" else None}
                        for frame in stat.traceback
                    ],
                }
                for stat in self.top()
            ],
        }
        return json.dumps(body, indent=1)


def _heap_statistics(snapshot: tracemalloc.Snapshot, group: str) -> list[tracemalloc.Statistic]:
    return snapshot.filter_traces(_HEAP_FILTERS).statistics(group)


# ---------------------------------------------------------------------------------------- the pages


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
    """The profiling pages of one node (see the module docstring for the routes).

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
        try:
            seconds = float(raw)
        except ValueError:
            raise _bad(f"seconds: {raw!r} is not a number") from None
        if not math.isfinite(seconds):
            raise _bad(f"seconds: {raw!r} is not a finite number")
        if seconds < 0 or (seconds == 0 and not allow_zero):
            raise _bad(f"seconds must be greater than 0, not {raw}")
        if seconds > self.max_seconds:
            raise _bad(f"seconds must be at most {self.max_seconds:g}, not {raw}")
        return seconds

    def _claim(self, slot: str, what: str, seconds: float, cleanup: Callable[[], None]) -> _Run:
        if self._closed:
            raise _Reject(error_response(503, _UNAVAILABLE, "profiling is closed: the node is stopping"))
        running = self._runs.get(slot)
        if running is not None:
            elapsed = time.monotonic() - running.started
            raise _Reject(
                error_response(
                    409,
                    _ABORTED,
                    f"{_SLOTS[slot]} is already running: {running.what} "
                    f"({elapsed:.1f} s of {running.seconds:g} s done); try again when it ends",
                )
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
                    raise _Reject(error_response(499, _CANCELLED, "the client went away")) from None
            else:
                raise _Reject(error_response(503, _UNAVAILABLE, "profile stopped: the node is stopping"))

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
        form = _choice(request, "format", ("text", "json"), "text")
        dumps = _dump_tasks()
        if form == "json":
            return web.Response(
                text=await asyncio.to_thread(_tasks_json, dumps), content_type="application/json"
            )
        return web.Response(text=await asyncio.to_thread(_tasks_text, dumps))

    async def _threads(self, request: web.Request) -> web.StreamResponse:
        form = _choice(request, "format", ("text", "json"), "text")
        dumps = _dump_threads()
        if form == "json":
            body = await asyncio.to_thread(_threads_json, dumps)
            return web.Response(text=body, content_type="application/json")
        return web.Response(text=await asyncio.to_thread(_threads_text, dumps))

    async def _profile(self, request: web.Request) -> web.StreamResponse:
        seconds = self._seconds(request)
        form = _choice(request, "format", ("pstats", "text"), "pstats")
        sort = _choice(request, "sort", _SORTS, "cumulative")
        limit = _integer(request, "limit", _DEFAULT_LIMIT, low=1, high=1_000_000)
        profiler = _Profiler()

        def disable() -> None:
            active: object = sys.getprofile()
            if active is profiler:  # never clear someone else's profile function
                profiler.disable()

        run = self._claim("cpu", f"cProfile of the event-loop thread for {seconds:g} s", seconds, disable)
        try:
            if sys.getprofile() is not None:
                raise _Reject(
                    error_response(
                        409, _ABORTED, "another profiler (sys.setprofile) is active on the event-loop thread"
                    )
                )
            profiler.enable()
            await self._window(request, run)
        finally:
            self._release(run)
        if form == "text":
            return web.Response(text=await asyncio.to_thread(_pstats_text, profiler, seconds, sort, limit))
        body = await asyncio.to_thread(_pstats_bytes, profiler)
        name = f"cpu-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.pstats"
        return web.Response(
            body=body,
            content_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def _collapsed(self, request: web.Request) -> web.StreamResponse:
        seconds = self._seconds(request)
        hz = _number(request, "hz", _DEFAULT_HZ, low=_MIN_HZ, high=_MAX_HZ)
        lines = _flag(request, "lines", True)
        sampler = _Sampler(hz, deadline=time.monotonic() + seconds + 5.0)
        run = self._claim("cpu", f"sampling profiler at {hz:g} Hz for {seconds:g} s", seconds, sampler.stop)
        try:
            sampler.start()
            await self._window(request, run)
        finally:
            self._release(run)
        if sampler.error is not None:
            return error_response(500, _INTERNAL, f"the sampler failed: {_short_repr(sampler.error)}")
        text = await asyncio.to_thread(_fold, sampler.counts(), lines)
        return web.Response(text=text)

    async def _heap(self, request: web.Request) -> web.StreamResponse:
        seconds = self._seconds(request, allow_zero=True)
        group = _choice(request, "group", ("lineno", "filename", "traceback"), "lineno")
        limit = _integer(request, "limit", _DEFAULT_LIMIT, low=1, high=1_000_000)
        default_frames = _TRACEBACK_FRAMES if group == "traceback" else 1
        frames = _integer(request, "frames", default_frames, low=1, high=_MAX_FRAMES)
        form = _choice(request, "format", ("text", "json"), "text")
        start_here = not tracemalloc.is_tracing()
        if start_here and seconds == 0:
            raise _bad("seconds must be greater than 0: tracemalloc is not tracing yet")

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
                    raise _Reject(
                        error_response(503, _UNAVAILABLE, "heap trace stopped: the node is stopping")
                    ) from None
                raise _Reject(error_response(409, _ABORTED, f"heap trace aborted: {exc}")) from None
        finally:
            self._release(run)
        report = _HeapReport(group, limit, start_here, seconds, traceback_limit, current, peak)
        report.statistics = await asyncio.to_thread(_heap_statistics, snapshot, group)
        del snapshot
        if form == "json":
            return web.Response(text=await asyncio.to_thread(report.json), content_type="application/json")
        return web.Response(text=await asyncio.to_thread(report.text))
