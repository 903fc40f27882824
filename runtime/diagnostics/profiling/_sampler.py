"""The sampling profiler of every thread, and its counts folded into flame-graph text."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Final

SAMPLER_THREAD_NAME: Final = "msuite-profiler-sampler"
"""The name of the sampling profiler's daemon thread (it never samples itself)."""

_UNSAFE_IN_LABEL: Final = re.compile(r"[;\r\n]")

_StackKey = tuple[tuple[CodeType, int], ...]


class Sampler:
    """A daemon thread reading every other thread's stack ``hz`` times a second.

    The counts are keyed by (thread name, stack of (code, line)), outermost frame first; labels are
    made afterwards, off the loop (:func:`fold`).
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


def fold(counts: dict[tuple[str, _StackKey], int], lines: bool) -> str:
    """The folded-stacks text of the sampler's counts (see the package's docstring for the format)."""
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
