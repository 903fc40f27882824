"""The task manager: the go-msuite cases and the rest of its contract."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from msuite.runtime.tasks import (
    DuplicateTask,
    ManagerStopped,
    TaskCancelled,
    TaskContext,
    TaskManager,
    TaskState,
)
from tests.helpers import eventually


@pytest.fixture
async def manager() -> AsyncIterator[TaskManager]:
    tasks = TaskManager(min_workers=1, max_workers=2, idle_timeout=0.05, backoff=0.01)
    await tasks.start()
    yield tasks
    await tasks.stop(grace=2)


async def test_over_capacity_waits_then_runs(manager: TaskManager) -> None:
    gate = asyncio.Event()
    started: list[str] = []

    async def blocked(ctx: TaskContext) -> str:
        started.append(ctx.name)
        await gate.wait()
        return ctx.name

    handles = [manager.submit(blocked, name=f"t{i}") for i in range(4)]
    await eventually(lambda: len(started) == 2)
    await asyncio.sleep(0.05)
    assert started == ["t0", "t1"]  # two workers at most, first in first out
    status = manager.status()
    assert len(status["workers"]) == 2 and status["queued"] == ["t2", "t3"]
    assert [h.state for h in handles] == [TaskState.RUNNING] * 2 + [TaskState.QUEUED] * 2
    gate.set()
    assert [await h.wait() for h in handles] == ["t0", "t1", "t2", "t3"]


async def test_duplicate_names_are_rejected_while_queued_or_running(manager: TaskManager) -> None:
    gate = asyncio.Event()

    async def blocked(ctx: TaskContext) -> None:
        await gate.wait()

    first = manager.submit(blocked, name="job")
    with pytest.raises(DuplicateTask, match="'job' is already queued or running"):
        manager.submit(blocked, name="job")
    gate.set()
    await first.wait()
    await manager.submit(blocked, name="job").wait()  # free again once finished


@pytest.mark.parametrize("failure", [RuntimeError("error"), ZeroDivisionError("panic")])
async def test_restartable_tasks_restart_after_errors(manager: TaskManager, failure: Exception) -> None:
    attempts: list[int] = []

    async def flaky(ctx: TaskContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise failure
        return "finally"

    handle = manager.submit(flaky, name="flaky", restart=True)
    assert await handle.wait() == "finally"
    assert attempts == [1, 2, 3] and handle.restarts == 2 and handle.state is TaskState.DONE


async def test_a_failing_task_that_is_not_restartable(
    manager: TaskManager, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(ctx: TaskContext) -> None:
        raise ValueError("bad input")

    handle = manager.submit(broken, name="broken")
    with caplog.at_level(logging.ERROR, logger="msuite.tasks"), pytest.raises(ValueError, match="bad input"):
        await handle.wait()
    assert handle.state is TaskState.FAILED
    assert "task 'broken' failed" in caplog.text


async def test_progress_and_description_are_shown(manager: TaskManager) -> None:
    gate = asyncio.Event()

    async def reporting(ctx: TaskContext) -> None:
        ctx.describe("copying blocks")
        ctx.progress(3, 10)
        await gate.wait()

    manager.submit(reporting, name="copy")
    await eventually(
        lambda: any(w["task"] and w["task"]["progress"]["done"] == 3 for w in manager.status()["workers"])
    )
    (task,) = [w["task"] for w in manager.status()["workers"] if w["task"]]
    assert task == {
        "name": "copy",
        "state": "running",
        "description": "copying blocks",
        "progress": {"done": 3, "total": 10},
        "attempt": 1,
        "restartable": False,
    }
    gate.set()


async def test_stop_cancels_running_and_queued_tasks_and_waits() -> None:
    tasks = TaskManager(min_workers=1, max_workers=1)
    await tasks.start()
    cleaned: list[str] = []

    async def long(ctx: TaskContext) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(ctx.name)

    running = tasks.submit(long, name="running")
    queued = tasks.submit(long, name="queued")
    await eventually(lambda: running.state is TaskState.RUNNING)
    await tasks.stop(grace=2)
    assert running.state is TaskState.CANCELLED and queued.state is TaskState.CANCELLED
    assert cleaned == ["running"]  # the running task's cleanup ran before stop returned
    with pytest.raises(TaskCancelled, match="'running' was cancelled"):
        await running.wait()
    with pytest.raises(ManagerStopped):
        tasks.submit(long)


async def test_stop_gives_up_after_the_grace_period(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskManager(min_workers=1, max_workers=1)
    await tasks.start()
    release = asyncio.Event()

    async def stubborn(ctx: TaskContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await release.wait()  # ignores cancellation until released
            raise

    handle = tasks.submit(stubborn, name="stubborn")
    await eventually(lambda: handle.state is TaskState.RUNNING)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="msuite.tasks"):
        await tasks.stop(grace=0.1)
    assert loop.time() - started < 1
    assert "did not stop within 0.1s" in caplog.text
    release.set()
    await asyncio.sleep(0.01)


async def test_extra_workers_stop_when_idle(manager: TaskManager) -> None:
    async def quick(ctx: TaskContext) -> None:
        await asyncio.sleep(0.01)

    handles = [manager.submit(quick) for _ in range(4)]
    await eventually(lambda: len(manager.status()["workers"]) == 2)
    for handle in handles:
        await handle.wait()
    await eventually(lambda: len(manager.status()["workers"]) == 1)  # back to min_workers


async def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        TaskManager(min_workers=3, max_workers=2)
    with pytest.raises(ManagerStopped):
        TaskManager().submit(lambda ctx: asyncio.sleep(0))


def test_settings_come_from_the_manifest() -> None:
    from msuite.spec import loads_manifest

    manifest = loads_manifest("name: n\ntasks: {min_workers: 3, max_workers: 7, idle_timeout: 2s}\n")
    tasks = TaskManager.for_manifest(manifest)
    assert (tasks.min_workers, tasks.max_workers, tasks.idle_timeout) == (3, 7, 2.0)


async def test_a_task_submitted_as_an_idle_worker_leaves_still_runs() -> None:
    tasks = TaskManager(min_workers=0, max_workers=1, idle_timeout=0.01)
    await tasks.start()

    async def job(ctx: TaskContext) -> str:
        return ctx.name

    for attempt in range(60):
        await tasks.submit(job).wait()
        await asyncio.sleep(0.0085 + (attempt % 6) * 0.0005)  # around the idle timeout
        handle = tasks.submit(job)
        assert await asyncio.wait_for(handle.wait(), 2) == handle.name
    await tasks.stop()


async def test_a_task_raising_cancelled_error_does_not_kill_its_worker(manager: TaskManager) -> None:
    async def inner_cancel(ctx: TaskContext) -> None:
        raise asyncio.CancelledError  # e.g. something the task awaited was cancelled

    async def fine(ctx: TaskContext) -> str:
        return "ran"

    failed = manager.submit(inner_cancel)
    with pytest.raises(asyncio.CancelledError):
        await failed.wait()
    assert failed.state is TaskState.FAILED
    assert await asyncio.wait_for(manager.submit(fine).wait(), 2) == "ran"
    assert len(manager.status()["workers"]) >= manager.min_workers


async def test_stop_returns_once_a_polite_task_has_cleaned_up() -> None:
    tasks = TaskManager(min_workers=1, max_workers=1)
    await tasks.start()

    async def polite(ctx: TaskContext) -> str:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)
            return "cleaned up"
        return "never"

    handle = tasks.submit(polite)
    await eventually(lambda: handle.state is TaskState.RUNNING)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await tasks.stop(grace=3)
    assert loop.time() - started < 1
    assert tasks.status()["workers"] == []


async def test_generated_names_skip_names_in_use(manager: TaskManager) -> None:
    gate = asyncio.Event()

    async def blocked(ctx: TaskContext) -> None:
        await gate.wait()

    manager.submit(blocked, name="task-1")
    unnamed = manager.submit(blocked)
    assert unnamed.name != "task-1"
    gate.set()


async def test_start_twice_and_restart_after_stop() -> None:
    tasks = TaskManager(min_workers=2, max_workers=2, backoff=0.01)
    await tasks.start()
    await tasks.start()
    assert len(tasks.status()["workers"]) == 2
    await tasks.stop()
    await tasks.start()
    attempts: list[int] = []

    async def flaky(ctx: TaskContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("once")

    await tasks.submit(flaky, restart=True).wait()
    assert attempts == [1, 2]  # still restartable after a stop and start
    await tasks.stop()
