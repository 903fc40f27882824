"""The asyncio <-> trio bridge: results, errors and cancellation cross both ways; close is clean."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from msuite.runtime.p2p.bridge import Bridge, BridgeClosed, CancelledElsewhere


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    bridge = Bridge(name="test-bridge")
    await bridge.start()
    yield bridge
    assert await bridge.close(5.0)
    assert "test-bridge" not in [t.name for t in threading.enumerate()]


class Boom(Exception):
    pass


async def test_asyncio_awaits_trio_work(bridge: Bridge) -> None:
    async def add(a: int, b: int) -> tuple[int, str]:
        await trio.sleep(0)
        return a + b, threading.current_thread().name

    assert await bridge.run(add, 2, 3) == (5, "test-bridge")


async def test_a_trio_error_is_raised_in_asyncio(bridge: Bridge) -> None:
    async def fail() -> None:
        await trio.sleep(0)
        raise Boom("from trio")

    with pytest.raises(Boom, match="from trio"):
        await bridge.run(fail)


async def test_cancelling_the_asyncio_caller_cancels_the_trio_task_first(bridge: Bridge) -> None:
    began, unwound = threading.Event(), threading.Event()

    async def slow() -> None:
        began.set()
        try:
            await trio.sleep(30)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.05)  # cleanup that takes a while
            unwound.set()

    call = asyncio.ensure_future(bridge.run(slow))
    await asyncio.to_thread(began.wait, 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert unwound.is_set()  # the trio task had finished before the caller saw its cancellation


async def test_trio_hands_work_to_asyncio(bridge: Bridge) -> None:
    main_thread = threading.current_thread().name

    async def on_asyncio(x: int) -> tuple[int, str]:
        await asyncio.sleep(0)
        return x * 2, threading.current_thread().name

    async def in_trio() -> tuple[int, str]:
        return await bridge.to_asyncio(on_asyncio, 21)

    assert await bridge.run(in_trio) == (42, main_thread)


async def test_an_asyncio_error_is_raised_in_trio(bridge: Bridge) -> None:
    async def fail() -> None:
        raise Boom("from asyncio")

    async def in_trio() -> str:
        try:
            await bridge.to_asyncio(fail)
        except Boom as exc:
            return f"caught {exc}"
        return "not raised"

    assert await bridge.run(in_trio) == "caught from asyncio"


async def test_cancelling_the_trio_caller_cancels_the_asyncio_task(bridge: Bridge) -> None:
    finished: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            finished.append("asyncio task cancelled")
            raise

    async def in_trio() -> bool:
        with trio.move_on_after(0.1) as scope:
            await bridge.to_asyncio(slow)
        return scope.cancelled_caught

    assert await bridge.run(in_trio) is True
    assert finished == ["asyncio task cancelled"]


async def test_an_asyncio_task_cancelled_elsewhere_is_reported_in_trio(bridge: Bridge) -> None:
    async def cancels_itself() -> None:
        raise asyncio.CancelledError

    async def in_trio() -> str:
        try:
            await bridge.to_asyncio(cancels_itself)
        except CancelledElsewhere:
            return "cancelled elsewhere"
        return "no"

    assert await bridge.run(in_trio) == "cancelled elsewhere"


async def test_to_asyncio_soon_does_not_wait(bridge: Bridge) -> None:
    seen = asyncio.Event()

    async def mark() -> None:
        seen.set()

    async def in_trio() -> None:
        bridge.to_asyncio_soon(mark)

    await bridge.run(in_trio)
    await asyncio.wait_for(seen.wait(), 5)


async def test_a_service_runs_until_close_and_close_ends_pending_calls() -> None:
    bridge = Bridge(name="service-bridge")
    await bridge.start()
    stopped = threading.Event()

    async def service(port: int, *, task_status: trio.TaskStatus[int]) -> None:
        task_status.started(port + 1)
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    assert await bridge.start_service(service, 41) == 42
    pending = asyncio.ensure_future(bridge.run(trio.sleep, 30))
    await asyncio.sleep(0.05)
    assert await bridge.close(5.0)
    with pytest.raises(BridgeClosed):
        await pending
    assert stopped.is_set()
    with pytest.raises(BridgeClosed):
        await bridge.run(trio.sleep, 0)
    assert await bridge.close(1.0)  # twice is harmless


async def test_a_service_failing_before_started_raises(bridge: Bridge) -> None:
    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise Boom("cannot listen")

    with pytest.raises(Boom, match="cannot listen"):
        await bridge.start_service(broken)
    assert await bridge.run(trio.sleep, 0) is None  # the bridge still serves


async def test_many_crossings_in_flight(bridge: Bridge) -> None:
    async def echo(i: int) -> int:
        await trio.sleep(0.001)
        return i

    results = await asyncio.wait_for(asyncio.gather(*(bridge.run(echo, i) for i in range(500))), 30)
    assert results == list(range(500))


P2P_SERVICES = {"files/bitswap.py"}
"""Modules outside runtime/p2p that are a subsystem's P2P service (its trio side), named one by one."""


def test_trio_is_imported_only_under_runtime_p2p() -> None:
    runtime = Path(__file__).resolve().parents[3] / "runtime"
    offenders = [
        str(path.relative_to(runtime))
        for path in runtime.rglob("*.py")
        if "p2p" not in path.relative_to(runtime).parts
        and str(path.relative_to(runtime)) not in P2P_SERVICES
        and any(
            line.strip().startswith(("import trio", "from trio"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert offenders == []


async def test_a_cancellation_inside_a_nursery_reaches_asyncio_as_cancellation() -> None:
    bridge = Bridge(name="nursery-bridge")
    await bridge.start()
    began = threading.Event()

    async def with_nursery() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 30)
            began.set()
            await trio.sleep(30)

    caller = asyncio.ensure_future(bridge.run(with_nursery))
    await asyncio.to_thread(began.wait, 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    pending = asyncio.ensure_future(bridge.run(with_nursery))
    await asyncio.sleep(0.05)
    assert await bridge.close(5.0)
    with pytest.raises(BridgeClosed):  # not a BaseExceptionGroup of trio.Cancelled
        await pending


async def test_closing_cancels_a_service_with_a_nursery_without_logging_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge = Bridge(name="service-nursery-bridge")
    await bridge.start()

    async def service(*, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            task_status.started()
            await trio.sleep_forever()

    await bridge.start_service(service)
    assert await bridge.close(5.0)
    assert "failed" not in caplog.text


async def test_trio_calls_a_sync_function_on_the_asyncio_loop(bridge: Bridge) -> None:
    loop = asyncio.get_running_loop()
    called: asyncio.Future[str] = loop.create_future()

    async def from_trio() -> bool:
        return bridge.call_soon_in_asyncio(lambda: called.set_result(threading.current_thread().name))

    assert await bridge.run(from_trio)
    assert await asyncio.wait_for(called, 5) == threading.current_thread().name


def test_a_sync_call_with_no_asyncio_loop_reports_false() -> None:
    assert Bridge(name="test-bridge-unstarted").call_soon_in_asyncio(print, "never") is False
