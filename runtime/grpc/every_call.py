"""A client interceptor that treats the four kinds of gRPC call alike."""

from __future__ import annotations

from typing import Any

import grpc.aio

__all__ = ["EveryCallInterceptor"]


class EveryCallInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Routes unary and streaming calls alike to :meth:`_call` (``request`` is the request, or
    the iterator of requests of a client-streaming call)."""

    async def _call(self, continuation: Any, details: Any, request: Any) -> Any:
        raise NotImplementedError

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._call(continuation, client_call_details, request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._call(continuation, client_call_details, request)

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request_iterator)

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._call(continuation, client_call_details, request_iterator)
