"""The file routes of the node's HTTP server, present when ``files`` and ``http`` are both on.

- ``GET /ipfs/<cid>[/<path>]`` (and ``HEAD``): the file's bytes, fetched from peers as needed,
  streamed as they come. ``ETag`` is the quoted CID of what was served (content never changes
  under a CID, so ``Cache-Control`` says immutable and ``If-None-Match`` gets 304);
  ``Content-Type`` from the file name's extension when the path has one, else
  ``application/octet-stream``; one ``Range: bytes=...`` range gets 206 (416 when it is
  unsatisfiable). A directory gets a JSON listing of its entries.
- ``POST /ipfs``: the request body (streamed to the blockstore, never held whole) is added and
  pinned; 201 with ``{"cid": ..., "size": ...}``.

Errors are JSON ``{"error": ...}``: 400 for a malformed CID or range, 404 for a path not in a
directory, 504 when no peer delivered a block within ``files.timeout``, 507 when a
delivered block could not be stored (a full disk). When the node has
``auth``, the ACL applies to these paths as to any other (``/ipfs``).
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from msuite import MsuiteError
from msuite.runtime.http.ranges import BadRange, Unsatisfiable, etag_matches, parse_range

from .bitswap import FetchError, FetchTimeout
from .files import FilesError, NotFound

if TYPE_CHECKING:
    from .files import Files

__all__ = ["add_routes", "stream_file"]

log = logging.getLogger("msuite.files")

PIECE = 1024 * 1024


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _TooLarge(MsuiteError):
    """A request body went over ``http.max_body_size`` while it was read (answered 413)."""


async def stream_file(
    request: web.Request,
    files: Files,
    cid: str,
    offset: int,
    length: int,
    *,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Answer ``request`` with ``length`` bytes of file ``cid`` from ``offset``, streamed as its
    blocks arrive (nothing for HEAD). Once the headers are out, an error can only cut the body
    short: it is logged and the connection closed, which the client sees as a body shorter than
    its ``Content-Length``."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    if request.method == "HEAD" or length == 0:
        await response.write_eof()
        return response
    try:
        async for piece in files.get(cid, offset=offset, length=length):
            await response.write(piece)
    except (FilesError, FetchTimeout, FetchError) as exc:
        log.warning("%s %s failed after the headers were sent: %s", request.method, request.path, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def add_routes(router: web.UrlDispatcher, files: Files, *, max_body_size: int | None = None) -> None:
    """Register the file routes on ``router``."""

    async def get(request: web.Request) -> web.StreamResponse:
        target = request.match_info["path"]
        try:
            info = await files.stat(target)
            if info.kind == "directory":
                entries = await files.ls(target)
                return web.json_response(
                    {"cid": info.cid, "entries": [e._asdict() for e in entries]},
                    headers={"ETag": f'"{info.cid}"', "Cache-Control": "public, max-age=29030400, immutable"},
                )
        except NotFound as exc:
            return _error(404, str(exc))
        except FetchTimeout as exc:
            return _error(504, str(exc))
        except FetchError as exc:
            return _error(507, str(exc))
        except FilesError as exc:
            return _error(400, str(exc))
        etag = f'"{info.cid}"'
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=29030400, immutable",
            "Accept-Ranges": "bytes",
            "X-Content-Type-Options": "nosniff",
        }
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return web.Response(status=304, headers=headers)
        name = target.rstrip("/").rsplit("/", 1)[-1] if "/" in target.strip("/") else ""
        kind = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
        offset, length, status = 0, info.size, 200
        if "Range" in request.headers:
            try:
                offset, length = parse_range(request.headers["Range"], info.size)
            except BadRange as exc:
                return _error(400, str(exc))
            except Unsatisfiable as exc:
                return web.Response(
                    status=416, text=str(exc), headers={**headers, "Content-Range": f"bytes */{info.size}"}
                )
            status = 206
            headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{info.size}"
        headers["Content-Type"] = kind
        return await stream_file(request, files, info.cid, offset, length, status=status, headers=headers)

    async def post(request: web.Request) -> web.Response:
        size = 0
        too_large = f"the body is over http.max_body_size ({max_body_size} bytes)"
        if max_body_size is not None and (request.content_length or 0) > max_body_size:
            return _error(413, too_large)

        async def body() -> AsyncIterator[bytes]:
            nonlocal size
            async for piece in request.content.iter_chunked(PIECE):
                size += len(piece)
                if max_body_size is not None and size > max_body_size:
                    raise _TooLarge  # a chunked body: counted as it comes (nothing is pinned)
                yield piece

        try:
            cid = await files.add(body())
        except _TooLarge:
            return _error(413, too_large)
        except FilesError as exc:
            return _error(400, str(exc))
        return web.json_response({"cid": str(cid), "size": size}, status=201)

    router.add_get("/ipfs/{path:.+}", get)  # aiohttp adds HEAD for a GET route
    router.add_post("/ipfs", post)
