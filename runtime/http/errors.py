"""Error answers of the HTTP side: one JSON body shape.

Every error the node's HTTP server writes (authentication, recovery, the
gateway) has the body ``{"code": <gRPC code number>, "message": ..., "details": []}``,
the shape grpc-gateway uses, so a client reads one format whatever failed. No grpc
import here: an HTTP-only node answers errors without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

if TYPE_CHECKING:
    import grpc

__all__ = ["error_body", "error_response"]

_REASONS: Final = {499: "Client Closed Request"}


def error_body(code: grpc.StatusCode | int, message: str) -> dict[str, Any]:
    """``{"code", "message", "details"}`` for a gRPC status code (or its number)."""
    number = code if isinstance(code, int) else int(code.value[0])
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
