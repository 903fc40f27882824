"""The one place where asyncio and trio meet.

py-libp2p runs on trio; the rest of the node (gRPC, HTTP, the store, tasks,
locks) runs on one asyncio loop in the main thread. :class:`Bridge` runs a
trio loop in a dedicated thread (``msuite-p2p``) and carries work across:

- **asyncio awaits trio work**: ``await bridge.run(fn, *args)`` runs the trio
  async function ``fn`` in the trio thread's nursery and returns its result
  (or raises its exception) in the awaiting asyncio task.
  ``await bridge.start_service(fn)`` starts a long-running trio task (the
  host) and returns what it passes to ``task_status.started(value)``.
- **trio hands work to asyncio**: inside trio code,
  ``await bridge.to_asyncio(fn, *args)`` runs the coroutine function ``fn`` as
  a task on the asyncio loop and returns its result to the trio task.
  ``bridge.to_asyncio_soon(fn, *args)`` does the same without waiting.

Each crossing costs one thread switch each way (trio's ``run_sync_soon`` and
asyncio's ``call_soon_threadsafe``), so carry whole messages, never single
reads or writes: a request/response protocol crosses once per request.

Cancellation and errors cross both ways:

- Cancelling the asyncio task that awaits ``bridge.run(...)`` cancels the trio
  task (its cancel scope), and the awaiting task sees ``CancelledError`` once
  the trio task has finished unwinding (so nothing outlives its caller).
- Cancelling the trio task that awaits ``bridge.to_asyncio(...)`` cancels the
  asyncio task; the trio task raises ``trio.Cancelled`` once the asyncio task
  has finished unwinding. An asyncio task cancelled from elsewhere (the loop
  shutting down) raises :class:`CancelledElsewhere` in the trio task.
- An exception raised on one side is raised, as the same object, on the
  other. A trio task cancelled because the bridge is closing raises
  :class:`BridgeClosed` in asyncio.

``await bridge.close(timeout)`` cancels every trio task, waits for the trio
loop to finish and joins the thread; calls after that raise
:class:`BridgeClosed`. Closing twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import outcome
import trio

from msuite import MsuiteError

__all__ = ["Bridge", "BridgeClosed", "CancelledElsewhere"]

log = logging.getLogger("msuite.p2p.bridge")

T = TypeVar("T")
P = ParamSpec("P")


class BridgeClosed(MsuiteError, RuntimeError):
    """The bridge's trio loop is not running (not started yet, closing or closed)."""


class CancelledElsewhere(MsuiteError):
    """The other side of a crossing was cancelled, not by the caller."""


class Bridge:
    """A trio loop in its own thread, and the calls that cross between it and asyncio."""

    def __init__(self, name: str = "msuite-p2p") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`close`."""
        return self._token is not None and not self._closing

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the trio thread; returns once its loop runs."""
        if self._thread is not None:
            raise RuntimeError("the bridge was started already")
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name=self.name, daemon=True)
        self._thread.start()
        await ready

    def _main(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._token = trio.lowlevel.current_trio_token()
                loop.call_soon_threadsafe(_set_result, ready, None)
                await trio.sleep_forever()

        try:
            trio.run(serve)
        except BaseException as exc:  # the loop itself failed: tell start() if it still waits
            log.exception("the trio loop of %s ended with an error", self.name)
            if not ready.done():
                loop.call_soon_threadsafe(_set_exception, ready, exc)
        finally:
            self._token = None
            self._nursery = None

    async def close(self, timeout: float = 5.0) -> bool:
        """Cancel every trio task, end the trio loop and join its thread (False if it took too long)."""
        thread = self._thread
        if thread is None or self._closing:
            if thread is not None:
                await asyncio.to_thread(thread.join, timeout)
                return not thread.is_alive()
            return True
        self._closing = True
        token, nursery = self._token, self._nursery
        if token is not None and nursery is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(nursery.cancel_scope.cancel)
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            log.warning("the trio thread %s did not end within %.1f s", self.name, timeout)
            return False
        return True

    # ------------------------------------------------------------------ asyncio -> trio

    def _submit(self, job: Callable[[trio.Nursery], None]) -> None:
        token, nursery = self._token, self._nursery
        if token is None or nursery is None or self._closing:
            raise BridgeClosed(f"the {self.name} trio loop is not running")
        try:
            token.run_sync_soon(job, nursery)
        except trio.RunFinishedError:
            raise BridgeClosed(f"the {self.name} trio loop has finished") from None

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run trio async function ``fn`` in the trio thread and return its result here."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        scope_box: list[trio.CancelScope] = []
        wanted_cancel: list[bool] = []
        closing = self._is_closing

        async def runner() -> None:
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                if wanted_cancel:  # cancelled before it began
                    scope.cancel()
                try:
                    value = await fn(*args, **kwargs)
                except BaseException as exc:
                    # a cancellation may come wrapped in exception groups (fn used a nursery)
                    cancelled, error = _split_cancelled(exc)
                    if error is not None:
                        loop.call_soon_threadsafe(_set_exception, result, error)
                    else:
                        loop.call_soon_threadsafe(_deliver_cancel, result, closing())
                    if cancelled is not None:
                        raise cancelled from None
                    if not isinstance(exc, Exception):
                        raise
                    return
                loop.call_soon_threadsafe(_set_result, result, value)
            if scope.cancelled_caught:
                loop.call_soon_threadsafe(_deliver_cancel, result, closing())

        self._submit(lambda nursery: nursery.start_soon(runner))
        try:
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            if result.done():
                raise
            # cancel the trio task and wait until it has unwound
            wanted_cancel.append(True)
            token = self._token
            if token is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(_cancel_scope, scope_box)
            with contextlib.suppress(BaseException):
                await result
            raise

    async def start_service(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Start long-running trio task ``fn(*args, task_status=...)``; return its ``started`` value.

        The task runs until it returns or the bridge closes; an exception before
        ``task_status.started()`` is raised here, one after it is logged.
        """
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()

        async def runner() -> None:
            try:
                async with trio.open_nursery() as inner:
                    value = await inner.start(fn, *args)
                    loop.call_soon_threadsafe(_set_result, result, value)
            except BaseException as exc:
                cancelled, error = _split_cancelled(exc)
                if error is None:
                    loop.call_soon_threadsafe(_deliver_cancel, result, True)
                elif result.done():
                    log.error("trio service %s failed", getattr(fn, "__qualname__", fn), exc_info=error)
                else:
                    loop.call_soon_threadsafe(_set_exception, result, error)
                if cancelled is not None:
                    raise cancelled from None
                if not isinstance(exc, Exception):
                    raise

        self._submit(lambda nursery: nursery.start_soon(runner))
        return await result

    def run_sync_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call synchronous ``fn(*args)`` in the trio thread soon, without waiting."""
        token = self._token
        if token is None or self._closing:
            raise BridgeClosed(f"the {self.name} trio loop is not running")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise BridgeClosed(f"the {self.name} trio loop has finished") from None

    def _is_closing(self) -> bool:
        return self._closing

    # ------------------------------------------------------------------ trio -> asyncio

    async def to_asyncio(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """From trio: run coroutine function ``fn`` on the asyncio loop and return its result."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise BridgeClosed("the asyncio loop is not running")
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        handle: list[asyncio.Task[T]] = []

        def begin() -> None:  # on the asyncio loop
            try:
                job = loop.create_task(_as_coroutine(fn, *args, **kwargs))
            except BaseException as exc:
                _reschedule(token, task, outcome.Error(exc))
                return
            handle.append(job)
            job.add_done_callback(lambda done: _reschedule(token, task, _outcome_of(done)))

        try:
            loop.call_soon_threadsafe(begin)
        except RuntimeError:
            raise BridgeClosed("the asyncio loop is closed") from None

        cancelled_here: list[Callable[[], Any]] = []

        def abort(raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
            # trio cancels us: cancel the asyncio task and wait for its outcome
            cancelled_here.append(raise_cancel)

            def cancel() -> None:
                if handle:
                    handle[0].cancel()

            try:
                loop.call_soon_threadsafe(cancel)
            except RuntimeError:
                return trio.lowlevel.Abort.SUCCEEDED
            return trio.lowlevel.Abort.FAILED

        result: outcome.Outcome[T] = await trio.lowlevel.wait_task_rescheduled(abort)
        if isinstance(result, outcome.Error) and isinstance(result.error, asyncio.CancelledError):
            if cancelled_here:
                cancelled_here[0]()  # raises trio.Cancelled
            raise CancelledElsewhere(f"the asyncio task {getattr(fn, '__qualname__', fn)} was cancelled")
        return result.unwrap()

    def to_asyncio_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """From trio (or any thread): start coroutine function ``fn`` on the asyncio loop; don't wait."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise BridgeClosed("the asyncio loop is not running")

        def begin() -> None:
            job = loop.create_task(_as_coroutine(fn, *args))
            job.add_done_callback(_log_failure)

        loop.call_soon_threadsafe(begin)

    def call_soon_in_asyncio(self, fn: Callable[..., Any], *args: Any) -> bool:
        """From trio (or any thread): call synchronous ``fn(*args)`` on the asyncio loop soon.

        Returns False, calling nothing, when the asyncio loop is closed (the node is gone):
        the caller has nobody left to tell. ``fn`` must not block; its exceptions are
        the asyncio loop's to report."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed between the check and the call
            return False
        return True


async def _as_coroutine(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return await fn(*args, **kwargs)


def _outcome_of(task: asyncio.Task[T]) -> outcome.Outcome[T]:
    if task.cancelled():
        return outcome.Error(asyncio.CancelledError())
    error = task.exception()
    return outcome.Error(error) if error is not None else outcome.Value(task.result())


def _reschedule(
    token: trio.lowlevel.TrioToken, task: trio.lowlevel.Task, result: outcome.Outcome[Any]
) -> None:
    # wrapped, so wait_task_rescheduled returns the outcome itself rather than unwrapping it
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Value(result))


def _split_cancelled(error: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """``(the trio cancellation in error, the rest)``, either None; groups are looked into."""
    if isinstance(error, trio.Cancelled):
        return error, None
    if isinstance(error, BaseExceptionGroup):
        cancelled, rest = error.split(trio.Cancelled)
        return cancelled, (_single(rest) if rest is not None else None)
    return None, error


def _single(error: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else ``error``."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("asyncio work started from trio failed", exc_info=task.exception())


def _cancel_scope(box: list[trio.CancelScope]) -> None:
    if box:
        box[0].cancel()


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _deliver_cancel(future: asyncio.Future[Any], closing: bool) -> None:
    if future.done():
        return
    if closing:
        future.set_exception(BridgeClosed("the trio loop is closing"))
    else:
        future.cancel()
