"""Error answers of the HTTP side: one JSON body shape.

Every error the node's HTTP server writes (authentication, recovery, the
gateway) has the body ``{"code": <gRPC code number>, "message": ..., "details": []}``,
the shape grpc-gateway uses, so a client reads one format whatever failed. No grpc
import here: an HTTP-only node answers errors without it.

A handler that answers a request itself, with such an error, raises a
:class:`Refusal` (HTTP status, gRPC code, message) and whoever serves the
route (the gateway's endpoints, the profiling pages) returns its
:meth:`~Refusal.response`. The gRPC codes are :class:`~msuite.runtime.codes.GrpcCode`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ..codes import GrpcCode
from ..errors import MsuiteError

if TYPE_CHECKING:
    import grpc

__all__ = ["Refusal", "error_body", "error_response"]

_REASONS: Final = {499: "Client Closed Request"}


def error_body(code: grpc.StatusCode | int, message: str) -> dict[str, Any]:
    """``{"code", "message", "details"}`` for a gRPC status code (or its number)."""
    number = int(code) if isinstance(code, int) else int(code.value[0])
    return {"code": number, "message": message, "details": []}


def error_response(
    status: int, code: grpc.StatusCode | int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error answer with HTTP ``status``."""
    body = json.dumps(error_body(code, message), ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(
        status=status,
        reason=_REASONS.get(status),
        body=body,
        content_type="application/json",
        headers=headers,
    )


class Refusal(MsuiteError):
    """A request answered with a JSON error instead of served: ``status``, gRPC ``code``, ``message``."""

    def __init__(self, status: int, code: GrpcCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def invalid(cls, message: str) -> Refusal:
        """A bad request: 400, ``INVALID_ARGUMENT``."""
        return cls(400, GrpcCode.INVALID_ARGUMENT, message)

    def response(self) -> web.Response:
        """The JSON error answer (:func:`error_response`)."""
        return error_response(self.status, self.code, self.message)
