"""The client side of tracing, shared by both exporters: one span per call on the node's channels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import grpc
import grpc.aio

from msuite.runtime.grpc.every_call import EveryCallInterceptor

__all__ = ["ClientSpan", "SpanInterceptor"]


class ClientSpan(Protocol):
    """A client call's span, ended once: with the call's final code, or with the error that kept
    the call from starting."""

    def finish(self, code: grpc.StatusCode) -> None: ...

    def fail(self, error: BaseException) -> None: ...


StartSpan = Callable[[grpc.aio.ClientCallDetails], "tuple[ClientSpan | None, grpc.aio.ClientCallDetails]"]
"""Starts a call's span (None when tracing is off) and returns the details carrying its context."""


async def _finish(span: ClientSpan, call: grpc.aio.Call) -> None:
    try:
        code = await call.code()
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
    span.finish(code)


class SpanInterceptor(EveryCallInterceptor):
    """One client span per call, of any kind; it ends when the call does."""

    def __init__(self, start: StartSpan) -> None:
        self._start = start
        self._pending: set[asyncio.Task[None]] = set()

    def _watch(self, span: ClientSpan | None, call: Any) -> Any:
        if span is not None:

            def done(finished: Any) -> None:
                task = asyncio.get_running_loop().create_task(_finish(span, finished))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

            call.add_done_callback(done)
        return call

    async def _call(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        span, details = self._start(client_call_details)
        try:
            call = await continuation(details, request)
        except BaseException as exc:  # the call never started: its span still ends, as an error
            if span is not None:
                span.fail(exc)
            raise
        return self._watch(span, call)


def call_method(details: grpc.aio.ClientCallDetails) -> str:
    """The full method name a call's details carry (grpc gives bytes or str)."""
    raw: Any = details.method
    return raw.decode() if isinstance(raw, bytes) else str(raw)
