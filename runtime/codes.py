"""gRPC status codes by name, and the HTTP status grpc-gateway gives each.

One table for every part of the node that writes a gRPC code without a gRPC
call in hand: the HTTP server's JSON errors, the gateway's own refusals, the
profiling pages. It lives here, at the root of ``msuite.runtime`` and with no
import at all, rather than in ``msuite.runtime.http``: it is not about HTTP
(the gRPC side may use it too), and an HTTP-only node, which never imports
grpc, must still be able to name the codes. The numbers are gRPC's wire
values (``grpc.StatusCode.X.value[0]``); a test holds them to grpc's.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["GrpcCode"]


class GrpcCode(enum.IntEnum):
    """The 17 gRPC status codes, as the numbers the wire and JSON error bodies carry."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        """The HTTP status grpc-gateway answers this code with (``CANCELLED`` is nginx's 499)."""
        return _HTTP_STATUS[self]

    @classmethod
    def for_http_status(cls, status: int) -> GrpcCode:
        """The code of an HTTP error status the node answers itself (an unknown route, a wrong
        method, a handler's ``web.HTTPException``): the reverse of :attr:`http_status` where that
        is one to one, then the closest code."""
        found = _FROM_HTTP.get(status)
        if found is not None:
            return found
        return cls.INTERNAL if status >= 500 else cls.FAILED_PRECONDITION


_C = GrpcCode
_HTTP_STATUS: Final = {
    _C.OK: 200,
    _C.CANCELLED: 499,
    _C.UNKNOWN: 500,
    _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404,
    _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403,
    _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429,
    _C.FAILED_PRECONDITION: 400,
    _C.ABORTED: 409,
    _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501,
    _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503,
    _C.DATA_LOSS: 500,
}

_FROM_HTTP: Final = {
    400: _C.INVALID_ARGUMENT,
    401: _C.UNAUTHENTICATED,
    403: _C.PERMISSION_DENIED,
    404: _C.NOT_FOUND,
    405: _C.UNIMPLEMENTED,
    408: _C.DEADLINE_EXCEEDED,
    409: _C.ABORTED,
    413: _C.RESOURCE_EXHAUSTED,
    429: _C.RESOURCE_EXHAUSTED,
    431: _C.RESOURCE_EXHAUSTED,
    499: _C.CANCELLED,
    501: _C.UNIMPLEMENTED,
    503: _C.UNAVAILABLE,
    504: _C.DEADLINE_EXCEEDED,
}
