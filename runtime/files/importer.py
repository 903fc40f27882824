"""Files into UnixFS DAGs with the CIDs Kubo gives them: :class:`Importer`, :func:`build_directory`.

The layout is Kubo's ``ipfs add --cid-version=1 --raw-leaves`` (and js
ipfs-unixfs-importer with ``cidVersion: 1, rawLeaves: true``, fixed 262144-byte
chunks, the balanced builder with 174 children per node,
``reduceSingleLeafToSelf``):

- every chunk is a raw leaf (codec raw, CIDv1, sha2-256); a file of one chunk
  (or an empty file: one empty chunk) is that leaf;
- otherwise leaves are grouped 174 per parent in order, parents 174 per
  grandparent, and so on until one node is left. A group of one child above
  the leaves still gets its parent (175 chunks: a root over a node of 174
  leaves and a node of 1 leaf);
- a parent is a DAG-PB UnixFS File node (:func:`~msuite.runtime.files.unixfs.file_node`).

The import streams: each block goes to ``put(cid, block)`` as soon as it is
complete (leaves as they fill, parents when their group is), so memory is one
chunk plus ``max_links`` entries per level, whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from msuite import MsuiteError
from msuite.runtime.files.cids import RAW, make_cid
from msuite.runtime.files.unixfs import directory_node, file_node

__all__ = [
    "CHUNK_SIZE",
    "MAX_DIRECTORY_BLOCK",
    "MAX_LINKS",
    "ImportResult",
    "Importer",
    "ImporterError",
    "Put",
    "build_directory",
    "import_bytes",
]

CHUNK_SIZE = 262144
"""Kubo's default fixed chunk size (``size-262144``)."""
MAX_LINKS = 174
"""Kubo's (and js ipfs-unixfs-importer's) children per balanced-DAG node."""
MAX_DIRECTORY_BLOCK = 1 << 20
"""Largest basic-directory block written; a bigger one would need HAMT sharding."""

Put = Callable[[bytes, bytes], None]
"""Stores one block: ``put(cid, block)``."""


class ImporterError(MsuiteError, ValueError):
    """A file or directory cannot be imported as asked (bad name, too big a directory, misuse)."""


class ImportResult(NamedTuple):
    """An imported file or directory.

    ``size`` is the file's byte count (for a directory, the sum of its
    entries' cumulative sizes); ``blocks`` the number of ``put`` calls;
    ``tsize`` the cumulative size a parent directory links it with (the
    block's length plus its links' ``tsize``)."""

    cid: bytes
    size: int
    blocks: int
    tsize: int


_Entry = tuple[bytes, int, int]
"""A finished node: (cid, cumulative size, file bytes under it)."""


class Importer:
    """Imports one file fed in pieces of any size: ``feed(...)`` as often as needed, then ``finish()``."""

    def __init__(self, put: Put, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if max_links < 2:
            raise ValueError("max_links must be at least 2")
        self._put = put
        self._chunk_size = chunk_size
        self._max_links = max_links
        self._partial = bytearray()
        self._levels: list[list[_Entry]] = [[]]
        self._size = 0
        self._blocks = 0
        self._finished = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add the file's next bytes; whole chunks are stored at once, at most one partial chunk is kept."""
        if self._finished:
            raise ImporterError("feed() after finish()")
        view = memoryview(data).cast("B")
        self._size += len(view)
        pos = 0
        if self._partial:
            take = min(self._chunk_size - len(self._partial), len(view))
            self._partial += view[:take]
            pos = take
            if len(self._partial) < self._chunk_size:
                return
            self._leaf(bytes(self._partial))
            self._partial.clear()
        chunk = self._chunk_size
        while len(view) - pos >= chunk:
            self._leaf(bytes(view[pos : pos + chunk]))
            pos += chunk
        if pos < len(view):
            self._partial += view[pos:]

    def finish(self) -> ImportResult:
        """Store the last chunk and every open parent; the root's CID, the file's size, the block count."""
        if self._finished:
            raise ImporterError("finish() called twice")
        self._finished = True
        if self._partial or (self._size == 0 and not self._levels[0]):
            self._leaf(bytes(self._partial))
            self._partial.clear()
        levels = self._levels
        level = 0
        while True:
            entries = levels[level]
            higher = any(levels[above] for above in range(level + 1, len(levels)))
            if not higher and len(entries) == 1:
                cid, tsize, size = entries[0]
                return ImportResult(cid, size, self._blocks, tsize)
            if entries:
                self._flush(level)
            level += 1

    def _leaf(self, chunk: bytes) -> None:
        cid = make_cid(RAW, chunk)
        self._put(cid, chunk)
        self._blocks += 1
        self._add(0, (cid, len(chunk), len(chunk)))

    def _add(self, level: int, entry: _Entry) -> None:
        entries = self._levels[level]
        entries.append(entry)
        if len(entries) >= self._max_links:
            self._flush(level)

    def _flush(self, level: int) -> None:
        """Store a parent over every entry at ``level``, and add it one level up."""
        entries = self._levels[level]
        cid, block = file_node(entries)
        self._put(cid, block)
        self._blocks += 1
        tsize = len(block) + sum(tsize for _, tsize, _ in entries)
        size = sum(size for _, _, size in entries)
        entries.clear()
        if level + 1 == len(self._levels):
            self._levels.append([])
        self._add(level + 1, (cid, tsize, size))


def import_bytes(
    data: bytes | bytearray | memoryview,
    put: Put,
    *,
    chunk_size: int = CHUNK_SIZE,
    max_links: int = MAX_LINKS,
) -> ImportResult:
    """``data`` imported as one file (:class:`Importer` in one call)."""
    importer = Importer(put, chunk_size=chunk_size, max_links=max_links)
    importer.feed(data)
    return importer.finish()


def _check_name(name: str) -> None:
    if not name:
        raise ImporterError("a directory entry needs a name, not ''")
    if "/" in name or "\0" in name:
        raise ImporterError(f"a directory entry's name cannot contain '/' or NUL: {name!r}")
    if name in (".", ".."):
        raise ImporterError(f"a directory entry cannot be named {name!r}")


def build_directory(entries: Sequence[tuple[str, bytes, int]], put: Put) -> ImportResult:
    """A basic UnixFS directory of ``(name, cid, tsize)`` entries, stored with ``put``.

    Links are sorted by the names' UTF-8 bytes, each with its entry's
    cumulative size. Names must be non-empty, without '/' or NUL, and not
    '.' or '..'; two entries cannot share a name. No HAMT sharding: a
    directory whose block would be over 1 MiB (:data:`MAX_DIRECTORY_BLOCK`,
    about 10,000 entries with short names) raises :class:`ImporterError`."""
    seen: set[str] = set()
    for name, _, _ in entries:
        _check_name(name)
        if name in seen:
            raise ImporterError(f"two directory entries are named {name!r}")
        seen.add(name)
    cid, block = directory_node(entries)
    if len(block) > MAX_DIRECTORY_BLOCK:
        raise ImporterError(
            f"a directory of {len(entries)} entries is a {len(block)}-byte block, over the "
            f"{MAX_DIRECTORY_BLOCK}-byte limit of a basic directory (HAMT sharding is not supported)"
        )
    put(cid, block)
    total = sum(tsize for _, _, tsize in entries)
    return ImportResult(cid, total, 1, len(block) + total)
