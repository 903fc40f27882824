"""Dumps of every asyncio task and every thread, read on the loop thread, rendered as text or JSON off it."""

from __future__ import annotations

import asyncio
import json
import linecache
import sys
import threading
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Final, NamedTuple

_MAX_STACK: Final = 500  # frames kept per stack in the dumps
_REPR_LIMIT: Final = 300


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


def short_repr(value: object) -> str:
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


def dump_tasks() -> list[_TaskDump]:
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
            awaiting = None if waiter is None else short_repr(waiter)
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


def dump_threads() -> list[_ThreadDump]:
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


def tasks_text(dumps: list[_TaskDump]) -> str:
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


def tasks_json(dumps: list[_TaskDump]) -> str:
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


def threads_text(dumps: list[_ThreadDump]) -> str:
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


def threads_json(dumps: list[_ThreadDump]) -> str:
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
