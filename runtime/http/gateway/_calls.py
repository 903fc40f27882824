"""A gRPC call seen from HTTP: its status as an HTTP answer, waiting on it, a client that leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import grpc
import grpc.aio
from aiohttp import web

from msuite.runtime.codes import GrpcCode
from msuite.runtime.errors import MsuiteError

from ..errors import error_response

HTTP_STATUS: Final[Mapping[grpc.StatusCode, int]] = MappingProxyType(
    {code: GrpcCode(code.value[0]).http_status for code in grpc.StatusCode}
)
"""HTTP status of each gRPC status code (grpc-gateway's mapping, :attr:`GrpcCode.http_status`)."""

_CLIENT_POLL: Final = 1.0
"""Seconds between two checks that the client of a streamed reply is still there."""


class Unavailable(MsuiteError):
    """The call failed without a gRPC status (no channel, channel closed): a 503."""


def status_response(exc: grpc.aio.AioRpcError) -> web.Response:
    """The answer to a call that ended with a gRPC status."""
    code = exc.code()
    return error_response(HTTP_STATUS.get(code, 500), code, exc.details() or "")


def client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def watch_client(request: web.Request, call: Any) -> None:
    """Cancel a streamed call once its client has gone: aiohttp doesn't cancel handlers by default,
    and an idle stream would otherwise notice only at its next message."""
    while not call.done():
        await asyncio.sleep(_CLIENT_POLL)
        if client_left(request):
            call.cancel()
            return


async def wait(call: Any, awaitable: Any) -> Any:
    """Await a call's reply; a call cancelled under us (its channel closed) is :class:`Unavailable`."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if call.cancelled() and (task is None or not task.cancelling()):
            raise Unavailable("the call was cancelled (its channel closed)") from None
        raise
