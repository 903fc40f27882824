"""The task manager (``node.tasks``): a pool of asyncio workers running named tasks.

- Between ``min_workers`` and ``max_workers`` workers; a worker beyond the
  minimum stops after ``idle_timeout`` without work.
- A task beyond capacity waits in a queue (first in, first out) and runs when
  a worker frees up; ``submit`` never blocks.
- Names are unique among queued and running tasks: a duplicate is refused.
- A task reports progress and a description through its :class:`TaskContext`;
  :meth:`TaskManager.status` shows each worker and its task with progress.
- A restartable task is run again after it raises, with exponential backoff;
  others end as failed, their exception kept on the handle.
- :meth:`TaskManager.stop` refuses new tasks, cancels queued and running ones
  and waits for them within the grace period.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from msuite import MsuiteError

if TYPE_CHECKING:
    from msuite.spec import Manifest

__all__ = [
    "DuplicateTask",
    "ManagerStopped",
    "TaskCancelled",
    "TaskContext",
    "TaskHandle",
    "TaskManager",
    "TaskState",
]

log = logging.getLogger("msuite.tasks")

TaskFunction = Callable[["TaskContext"], Awaitable[Any]]


class DuplicateTask(MsuiteError, ValueError):
    """A task with this name is already queued or running."""


class ManagerStopped(MsuiteError, RuntimeError):
    """The task manager is stopped (or stopping) and takes no new tasks."""


class TaskCancelled(MsuiteError, RuntimeError):
    """``wait()`` on a task that was cancelled (by ``stop()``, or queued when it came)."""


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RESTARTING = "restarting"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class TaskContext:
    """What a running task sees: report progress and a description here."""

    name: str
    attempt: int = 1
    description: str = ""
    done: float = 0
    total: float | None = None

    def progress(self, done: float, total: float | None = None) -> None:
        """Record how far the task is (``total`` None when unknown)."""
        self.done = done
        if total is not None:
            self.total = total

    def describe(self, text: str) -> None:
        """Set a one-line description of what the task is doing now."""
        self.description = text


@dataclass(eq=False)
class TaskHandle:
    """A submitted task: its state, progress, and a way to wait for it."""

    name: str
    function: TaskFunction
    restart: bool
    context: TaskContext
    state: TaskState = TaskState.QUEUED
    result: Any = None
    error: BaseException | None = None
    restarts: int = 0
    _finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> Any:
        """Wait for the task to end; returns its result or raises its error."""
        await self._finished.wait()
        if self.error is not None:
            raise self.error
        if self.state is TaskState.CANCELLED:
            raise TaskCancelled(f"task {self.name!r} was cancelled")
        return self.result

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "description": self.context.description,
            "progress": {"done": self.context.done, "total": self.context.total},
            "attempt": self.context.attempt,
            "restartable": self.restart,
        }


class TaskManager:
    """See the module docs. Use ``await start()``, ``submit(...)``, ``await stop(grace)``."""

    def __init__(
        self,
        *,
        min_workers: int = 1,
        max_workers: int = 20,
        idle_timeout: float = 15.0,
        backoff: float = 0.1,
        max_backoff: float = 30.0,
    ) -> None:
        if not 0 <= min_workers <= max_workers or max_workers < 1:
            raise ValueError("need 0 <= min_workers <= max_workers and max_workers >= 1")
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._queue: asyncio.Queue[TaskHandle] = asyncio.Queue()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._current: dict[int, TaskHandle | None] = {}
        self._tasks: dict[str, TaskHandle] = {}
        self._ids = itertools.count(1)
        self._names = itertools.count(1)
        self._idle = 0
        self._running = False
        self._stopping = False

    @classmethod
    def for_manifest(cls, manifest: Manifest) -> TaskManager:
        """A task manager with the manifest's ``tasks:`` settings."""
        settings = manifest.tasks
        return cls(
            min_workers=settings.min_workers,
            max_workers=settings.max_workers,
            idle_timeout=settings.idle_timeout.total_seconds(),
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the minimum number of workers (again after a stop; twice does nothing)."""
        if self._running:
            return
        self._running = True
        self._stopping = False
        for _ in range(self.min_workers - len(self._workers)):
            self._spawn()

    async def stop(self, grace: float = 10.0) -> None:
        """Refuse new tasks, cancel queued and running ones, wait up to ``grace`` seconds."""
        self._stopping = True
        self._running = False
        while not self._queue.empty():
            handle = self._queue.get_nowait()
            self._finish(handle, TaskState.CANCELLED)
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        if workers:
            _, pending = await asyncio.wait(workers, timeout=grace)
            if pending:
                log.warning("%d task worker(s) did not stop within %.1fs", len(pending), grace)
        for worker_id, worker in list(self._workers.items()):
            if worker.done():  # cancelled before it ever ran: its own cleanup never did
                self._workers.pop(worker_id, None)
                self._current.pop(worker_id, None)
        for handle in list(self._tasks.values()):
            self._finish(handle, TaskState.CANCELLED)

    # ------------------------------------------------------------------ tasks

    def submit(
        self,
        function: TaskFunction,
        *,
        name: str | None = None,
        restart: bool = False,
        description: str = "",
    ) -> TaskHandle:
        """Queue ``function(context)``; it runs as soon as a worker is free."""
        if not self._running:
            raise ManagerStopped("the task manager is not running")
        auto = name is None
        while name is None or (auto and name in self._tasks):
            name = f"task-{next(self._names)}"
        if name in self._tasks:
            raise DuplicateTask(f"a task named {name!r} is already queued or running")
        handle = TaskHandle(name, function, restart, TaskContext(name, description=description))
        self._tasks[name] = handle
        self._queue.put_nowait(handle)
        if self._idle < self._queue.qsize() and len(self._workers) < self.max_workers:
            self._spawn()
        return handle

    def status(self) -> dict[str, Any]:
        """Workers and their tasks (with progress), the queue, and the pool's limits."""
        return {
            "min_workers": self.min_workers,
            "max_workers": self.max_workers,
            "workers": [
                {"id": worker_id, "task": handle.status() if handle else None}
                for worker_id, handle in sorted(self._current.items())
            ],
            "queued": [h.name for h in self._tasks.values() if h.state is TaskState.QUEUED],
        }

    def counts(self) -> dict[str, Any]:
        """Numbers for gauges: workers alive and busy, the limit, named tasks by state."""
        states = dict.fromkeys(
            (TaskState.QUEUED.value, TaskState.RUNNING.value, TaskState.RESTARTING.value), 0
        )
        for handle in self._tasks.values():
            states[handle.state.value] = states.get(handle.state.value, 0) + 1
        return {
            "workers": len(self._current),
            "busy": sum(1 for handle in self._current.values() if handle is not None),
            "max_workers": self.max_workers,
            "states": states,
        }

    # ------------------------------------------------------------------ internals

    def _spawn(self) -> None:
        worker_id = next(self._ids)
        self._current[worker_id] = None
        self._workers[worker_id] = asyncio.get_running_loop().create_task(
            self._work(worker_id), name=f"msuite-task-worker-{worker_id}"
        )

    async def _work(self, worker_id: int) -> None:
        try:
            while True:
                handle = await self._next(worker_id)
                if handle is None:
                    return  # an extra worker, idle too long
                self._current[worker_id] = handle
                try:
                    await self._run(handle)
                finally:
                    self._current[worker_id] = None
                if self._stopping:
                    return  # the task swallowed our cancellation: stop anyway
        finally:
            self._workers.pop(worker_id, None)
            self._current.pop(worker_id, None)

    async def _next(self, worker_id: int) -> TaskHandle | None:
        """The next task; None when this worker should stop (idle, and above the minimum)."""
        self._idle += 1
        try:
            while True:
                if len(self._workers) <= self.min_workers:
                    return await self._queue.get()
                try:
                    return await asyncio.wait_for(self._queue.get(), self.idle_timeout)
                except TimeoutError:
                    # checked and acted on in one step of the loop: never below the minimum,
                    # and never while work waits (a submit may have counted us as idle)
                    if len(self._workers) > self.min_workers and self._queue.empty():
                        self._workers.pop(worker_id, None)
                        return None
        finally:
            self._idle -= 1

    async def _run(self, handle: TaskHandle) -> None:
        delay = self.backoff
        while True:
            handle.state = TaskState.RUNNING
            try:
                handle.result = await handle.function(handle.context)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    self._finish(handle, TaskState.CANCELLED)
                    raise
                # the task's own code raised CancelledError (e.g. a wait it did was
                # cancelled): a failure of the task, not of the worker
                handle.error = exc
                self._finish(handle, TaskState.FAILED)
                return
            except Exception as exc:
                if not handle.restart or self._stopping:
                    log.exception("task %r failed", handle.name)
                    handle.error = exc
                    self._finish(handle, TaskState.FAILED)
                    return
                log.warning(
                    "task %r failed (attempt %d), restarting in %.2fs: %r",
                    handle.name,
                    handle.context.attempt,
                    delay,
                    exc,
                )
                handle.state = TaskState.RESTARTING
                handle.restarts += 1
                handle.context.attempt += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            except BaseException as exc:  # KeyboardInterrupt and the like: record, then let it go
                handle.error = exc
                self._finish(handle, TaskState.FAILED)
                raise
            self._finish(handle, TaskState.DONE)
            return

    def _finish(self, handle: TaskHandle, state: TaskState) -> None:
        if handle.finished:
            return
        handle.state = state
        self._tasks.pop(handle.name, None)
        handle._finished.set()
