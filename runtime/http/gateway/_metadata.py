"""The gRPC metadata a request's headers carry (rules in the package's docstring, under Metadata)."""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from ...codes import GrpcCode
from ..errors import Refusal
from ._values import from_base64, quoted

_METADATA_PREFIX: Final = "grpc-metadata-"
_PREFIX_LENGTH: Final = len(_METADATA_PREFIX)
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_RESERVED: Final = frozenset(
    (
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    )
)


def _ascii(value: str, header: str) -> str:
    if not (value.isascii() and value.isprintable()):
        raise Refusal.invalid(f"header {header}: gRPC metadata must be printable ASCII")
    return value


def grpc_metadata(request: web.Request) -> tuple[tuple[str, str | bytes], ...]:
    """The gRPC metadata a request carries (see the package's docstring)."""
    headers = request.headers
    metadata: list[tuple[str, str | bytes]] = []
    credentials = headers.getall("Authorization", ())
    if len(credentials) > 1:  # refused whatever they hold: none may hide behind another
        raise Refusal(400, GrpcCode.UNAUTHENTICATED, "send one Authorization credential, not several")
    if credentials:
        metadata.append(("authorization", _ascii(credentials[0], "Authorization")))
    request_id = headers.get("X-Request-Id")
    if request_id is not None:
        metadata.append(("x-request-id", _ascii(request_id, "X-Request-Id")))
    for header, value in headers.items():
        if len(header) <= _PREFIX_LENGTH or header[:_PREFIX_LENGTH].lower() != _METADATA_PREFIX:
            continue
        key = header[_PREFIX_LENGTH:].lower()
        if not _METADATA_KEY.fullmatch(key):
            raise Refusal.invalid(f"header {header}: {quoted(key)} is not a valid gRPC metadata key")
        if key in _RESERVED or key.startswith("grpc-"):
            raise Refusal.invalid(f"header {header}: the metadata key {quoted(key)} is reserved")
        if key.endswith("-bin"):
            try:
                metadata.append((key, from_base64(value)))
            except ValueError as exc:
                raise Refusal.invalid(f"header {header}: {exc}") from None
        else:
            metadata.append((key, _ascii(value, header)))
    return tuple(metadata)
