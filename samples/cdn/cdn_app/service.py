"""The impl of ``cdn.v1.Cdn``: the /cdn routes on the node's HTTP server, and ``Stat`` over libp2p.

Routes (errors are the node's JSON shape ``{"code", "message", "details"}``, ``code`` a gRPC code):

- ``PUT /cdn/files/{name}`` (role ``user``): the body, streamed into ``node.files`` (never held
  whole), becomes the file ``name`` (a new one, or the name now points to the new bytes);
  201 ``{name, cid, size, content_type, created}``. The upload's ``Content-Type`` is kept.
- ``GET /cdn/files/{name}``, ``GET /cdn/cid/{cid}`` (and ``HEAD``): the bytes, fetched from peers
  as needed and streamed as they come; ``ETag`` is the quoted CID, ``If-None-Match`` gets 304, one
  ``Range`` gets 206 (416 when unsatisfiable). By CID, ``Content-Type`` is that of a name pointing
  to the CID (``application/octet-stream`` when none does).
- ``GET /cdn/files[?prefix=P]``: ``{"files": [{name, cid, size, content_type, created}]}``, by name.
- ``DELETE /cdn/files/{name}`` (role ``user``): the name is gone on every node; 200 with what it
  pointed to. Its CID stays pinned while another name points to it; the blocks stay until
  ``node.files.gc()``.

Who may write is checked here, not in the manifest's ACL: an ACL entry covers a path for every
method, and downloads of the same paths are open.

Pins: an upload pins its CID (``node.files.add``); a CID no name points to any more is unpinned by
:meth:`Cdn._reconcile_pins` (after a delete or a replace, here or on another node), so ``gc`` can
take its blocks. The cdn owns the node's pins: ``POST /ipfs`` uploads (role ``user``) are unpinned
by the next reconcile too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiohttp import web

# Written by `msuite generate` from protos/cdn.proto.
from gen import cdn_pb2, cdn_pb2_grpc

from msuite.runtime.auth import current_principal
from msuite.runtime.codes import GrpcCode
from msuite.runtime.files.bitswap import FetchError, FetchTimeout
from msuite.runtime.files.files import FilesError
from msuite.runtime.files.gateway import stream_file
from msuite.runtime.http.errors import error_response
from msuite.runtime.http.ranges import BadRange, Unsatisfiable, etag_matches, parse_range
from msuite.runtime.store import AlreadyExists, NotFound

from .index import NAMESPACE, FileEntry, name_problem

__all__ = ["Cdn"]

log = logging.getLogger("cdn")

WRITER = "user"
"""The least role that may upload and delete."""

PIECE = 1024 * 1024
"""Bytes read from an upload at a time."""

RECONCILE_DELAY = 1.0
"""Seconds between a change that may leave a CID unnamed and the reconcile of the pins (several
changes in that time give one reconcile)."""

DEFAULT_TYPE = "application/octet-stream"


class TooLarge(Exception):
    """An upload over ``http.max_body_size``."""


def _error(status: int, code: GrpcCode, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return error_response(status, code, message, headers)


class Cdn(cdn_pb2_grpc.CdnServicer):
    """The cdn: files by name in ``node.files``, the name -> CID index in the shared store."""

    def __init__(self, node: Any) -> None:
        self.files = node.files
        self.roles = node.auth.roles
        self.max_body = int(node.manifest.http.max_body_size)
        self.index = node.shared(NAMESPACE, on_change=self._changed)
        self._uploads = 0
        self._pins_lock = asyncio.Lock()
        self._pins_dirty = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None
        router = node.http.router
        router.add_get("/cdn/files", self.list_files)
        router.add_put("/cdn/files/{name:.*}", self.upload)
        router.add_get("/cdn/files/{name:.*}", self.download_by_name)  # aiohttp adds HEAD
        router.add_delete("/cdn/files/{name:.*}", self.delete)
        router.add_get("/cdn/cid/{cid}", self.download_by_cid)

    async def on_start(self) -> None:
        self._reconciler = asyncio.create_task(self._reconcile_loop(), name="cdn pins")
        self._pins_dirty.set()  # names deleted while this node was away

    async def on_stop(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler

    # ------------------------------------------------------------------ gRPC

    async def Stat(
        self, request: cdn_pb2.StatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cdn_pb2.FileInfo:
        problem = name_problem(request.name)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            entry = await self.index.read(FileEntry, request.name)
        except NotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no file named {request.name!r}")
        return cdn_pb2.FileInfo(
            name=entry.id, cid=entry.cid, size=entry.size, content_type=entry.content_type
        )

    # ------------------------------------------------------------------ writes

    async def upload(self, request: web.Request) -> web.Response:
        refusal = self._refuse_unless_writer() or self._refuse_bad_name(request)
        if refusal is not None:
            return refusal
        name = request.match_info["name"]
        if request.content_length is not None and request.content_length > self.max_body:
            return self._too_large()
        content_type = request.headers.get("Content-Type") or DEFAULT_TYPE
        size = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal size
            async for piece in request.content.iter_chunked(PIECE):
                size += len(piece)
                if size > self.max_body:
                    raise TooLarge
                yield piece

        async with self._pins_lock:  # no reconcile runs between this add's pin and its name
            self._uploads += 1
        try:
            try:
                cid = str(await self.files.add(body()))
            except TooLarge:
                return self._too_large()
            except FilesError as exc:
                return _error(400, GrpcCode.INVALID_ARGUMENT, str(exc))
            entry = FileEntry(id=name, cid=cid, size=size, content_type=content_type)
            entry, replaced = await self._put(entry)
        finally:
            self._uploads -= 1
        if replaced is not None and replaced != cid:
            self._pins_dirty.set()
        return web.json_response(entry.to_json(), status=201)

    async def _put(self, entry: FileEntry) -> tuple[FileEntry, str | None]:
        """Create or replace ``entry``; it as stored, and the CID it replaced. Nothing else runs
        between the check and the write (no await yields before either returns), so another
        node's write can only be merged in afterwards, by the shared store's rule."""
        try:
            return await self.index.create(entry), None
        except AlreadyExists:
            old = await self.index.read(FileEntry, entry.id)
            return await self.index.update(entry), old.cid

    async def delete(self, request: web.Request) -> web.Response:
        refusal = self._refuse_unless_writer() or self._refuse_bad_name(request)
        if refusal is not None:
            return refusal
        name = request.match_info["name"]
        try:
            entry = await self.index.read(FileEntry, name)
            await self.index.delete(FileEntry, name)
        except NotFound:
            return self._not_found(name)
        self._pins_dirty.set()
        return web.json_response(entry.to_json())

    # ------------------------------------------------------------------ reads

    async def list_files(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        entries = await self.index.list(FileEntry, limit=0, prefix=prefix)
        return web.json_response({"files": [e.to_json() for e in sorted(entries, key=lambda e: e.id)]})

    async def download_by_name(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refuse_bad_name(request)
        if refusal is not None:
            return refusal
        name = request.match_info["name"]
        try:
            entry = await self.index.read(FileEntry, name)
        except NotFound:
            return self._not_found(name)
        # a name may point to other bytes later: caches revalidate (If-None-Match)
        return await self._serve(request, entry.cid, entry.size, entry.content_type, "no-cache")

    async def download_by_cid(self, request: web.Request) -> web.StreamResponse:
        try:
            info = await self.files.stat(request.match_info["cid"])
        except FetchTimeout as exc:
            return _error(504, GrpcCode.DEADLINE_EXCEEDED, str(exc))
        except FetchError as exc:
            return _error(507, GrpcCode.RESOURCE_EXHAUSTED, str(exc))
        except FilesError as exc:  # a malformed CID, an inconsistent DAG
            return _error(400, GrpcCode.INVALID_ARGUMENT, str(exc))
        if info.kind == "directory":
            return _error(400, GrpcCode.INVALID_ARGUMENT, f"{info.cid} is a directory, not a file")
        cid = info.cid
        named = await self.index.list(FileEntry, limit=1, filter=lambda e: e.cid == cid)
        content_type = named[0].content_type if named else DEFAULT_TYPE
        return await self._serve(request, cid, info.size, content_type, "public, max-age=29030400, immutable")

    async def _serve(
        self, request: web.Request, cid: str, size: int, content_type: str, cache: str
    ) -> web.StreamResponse:
        etag = f'"{cid}"'
        headers = {
            "ETag": etag,
            "Cache-Control": cache,
            "Accept-Ranges": "bytes",
            "X-Content-Type-Options": "nosniff",
        }
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            return web.Response(status=304, headers=headers)
        offset, length, status = 0, size, 200
        if "Range" in request.headers:
            try:
                offset, length = parse_range(request.headers["Range"], size)
            except BadRange as exc:
                return _error(400, GrpcCode.INVALID_ARGUMENT, str(exc))
            except Unsatisfiable as exc:
                headers["Content-Range"] = f"bytes */{size}"
                return _error(416, GrpcCode.OUT_OF_RANGE, str(exc), headers)
            status = 206
            headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
        headers["Content-Type"] = content_type  # as uploaded, parameters included
        return await stream_file(request, self.files, cid, offset, length, status=status, headers=headers)

    # ------------------------------------------------------------------ pins

    def _changed(self, key: Any, value: bytes | None, origin: str) -> None:
        """An index change applied here: one from another node may leave a CID unnamed."""
        if origin != "local":
            self._pins_dirty.set()

    async def _reconcile_loop(self) -> None:
        while True:
            await self._pins_dirty.wait()
            await asyncio.sleep(RECONCILE_DELAY)
            self._pins_dirty.clear()
            try:
                await self._reconcile_pins()
            except Exception:
                log.exception("reconciling the pins failed; retrying at the next change")

    async def _reconcile_pins(self) -> None:
        """Unpin every pinned CID no name points to (none while an upload runs: its CID is pinned
        before its name is written)."""
        async with self._pins_lock:
            if self._uploads:
                self._pins_dirty.set()  # again once they are done
                return
            pinned = {str(cid) for cid in await self.files.pins()}
            if not pinned:
                return
            named = {entry.cid for entry in await self.index.list(FileEntry, limit=0)}
            for cid in sorted(pinned - named):
                await self.files.unpin(cid)
                log.info("unpinned %s: no name points to it", cid)

    # ------------------------------------------------------------------ refusals

    def _refuse_unless_writer(self) -> web.Response | None:
        principal = current_principal()
        if not principal.authenticated:
            return _error(
                401,
                GrpcCode.UNAUTHENTICATED,
                f"uploads and deletes need a bearer token of role {WRITER!r} or higher",
                {"WWW-Authenticate": "Bearer"},
            )
        if not self.roles.allows(principal.role, WRITER):
            return _error(403, GrpcCode.PERMISSION_DENIED, f"role {principal.role!r} may not write files")
        return None

    @staticmethod
    def _refuse_bad_name(request: web.Request) -> web.Response | None:
        problem = name_problem(request.match_info["name"])
        return None if problem is None else _error(400, GrpcCode.INVALID_ARGUMENT, problem)

    def _too_large(self) -> web.Response:
        message = f"an upload has at most {self.max_body} bytes (http.max_body_size)"
        return _error(413, GrpcCode.RESOURCE_EXHAUSTED, message)

    @staticmethod
    def _not_found(name: str) -> web.Response:
        return _error(404, GrpcCode.NOT_FOUND, f"no file named {name!r}")
