"""Request line and header limits of the HTTP server, and the JSON answer to a request over them.

aiohttp parses a request before any middleware runs. Over its limits (8190
bytes per line or header by default) it logged a multi-line ``Error handling
request`` traceback per request and answered a text 400 that repeated the
first 100 bytes of the offending header, which may be a credential. msuite
sizes the limits from the manifest (:func:`header_limit`) and makes the
server's connection handlers answer such a request with a JSON error that
repeats nothing, logging one line.

How: the server's connection handlers are :class:`JsonErrors`
(``web.RequestHandler`` with its ``handle_error`` hook overridden; same slots,
so the class of each new handler can be switched), made so by
:func:`~.connections.guard`, which also keeps their timeouts. Nothing private
of aiohttp is touched.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from msuite.runtime.codes import GrpcCode

from .errors import error_response

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

    from msuite.spec import Manifest

__all__ = ["BEARER_OVERHEAD", "JsonErrors", "header_limit"]

log = logging.getLogger("msuite.http")

BEARER_OVERHEAD = 64
"""Room for ``Bearer `` and the header's name around a token of ``auth.jwt.max_token_size``."""


def header_limit(manifest: Manifest) -> int:
    """The longest request line or header accepted: ``http.max_header_size``, raised to fit a
    token of ``auth.jwt.max_token_size`` (so a token the JWT check accepts is never refused first)."""
    assert manifest.http is not None
    limit = manifest.http.max_header_size
    auth = manifest.auth
    if auth is not None and auth.jwt is not None:
        limit = max(limit, auth.jwt.max_token_size + BEARER_OVERHEAD)
    return limit


class JsonErrors(web.RequestHandler):
    """A connection handler answering requests it cannot parse with a JSON error."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status, code = 431, GrpcCode.RESOURCE_EXHAUSTED
            text = f"a request line or header is over {self.max_field_size} bytes"
        else:
            status, code = 400, GrpcCode.INVALID_ARGUMENT
            text = "malformed HTTP request"
        log.info("refused a request from %s: %s", request.remote, text)  # its text is never repeated
        response = error_response(status, code, text)
        response.force_close()
        return response
