"""Reading UnixFS DAGs from any block source: read_file, stat, resolve and walk_cids.

Blocks come from a :data:`Loader`, an async function that returns the blocks
of a batch of CIDs in order (verified against their CIDs: the local
blockstore, Bitswap, a dict in tests). Nothing here imports asyncio: the
functions only await the loader, so they run under any event loop.

:func:`read_file` asks for up to ``window`` blocks per call, ahead of the
bytes it is yielding, so a network loader has many blocks in flight; it
holds at most ``window`` leaves at a time, plus inner nodes (a few KiB each)
and the CIDs of the nodes still to read (``depth * 174``). Inner nodes do not
count against the window, so a deep DAG still loads its leaves ``window`` at
a time. A range read uses the nodes' blocksizes to
skip every subtree outside the range: only the blocks it needs are loaded.

A DAG is trusted no further than it checks out: a File node's blocksizes
must match its links and add up to its filesize, and each child must produce
exactly the size its parent declares; anything else is an :class:`ExportError`
naming the CID, never wrong bytes. DAGs deeper than :data:`MAX_DEPTH` are
refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from msuite import MsuiteError
from msuite.runtime.files import dagpb
from msuite.runtime.files.cids import DAG_PB, RAW, CidError, cid_to_str, parse_cid
from msuite.runtime.files.unixfs import DataType, UnixFSData, UnixFSError, decode_data

__all__ = ["MAX_DEPTH", "ExportError", "FileStat", "Loader", "read_file", "resolve", "stat", "walk_cids"]

Loader = Callable[[Sequence[bytes]], Awaitable[list[bytes]]]
"""Given CIDs, their blocks in the same order, each verified against its CID."""

MAX_DEPTH = 64
"""Deepest DAG read (Kubo's balanced DAGs are 4 levels deep at 1 TiB)."""


class ExportError(MsuiteError, ValueError):
    """The DAG cannot be read as asked (not a file, not found, or inconsistent); the message names the CID."""


class FileStat(NamedTuple):
    """What a root block says: ``kind`` ('file', 'directory' or 'raw'), ``size`` and ``blocks_hint``.

    ``size`` is the file's byte count, or a directory's cumulative size;
    ``blocks_hint`` is the root block plus its direct links."""

    cid: bytes
    kind: Literal["file", "directory", "raw"]
    size: int
    blocks_hint: int


def _name(cid: bytes) -> str:
    try:
        return cid_to_str(cid)
    except CidError:
        return cid.hex()


async def _load(load: Loader, cids: Sequence[bytes]) -> list[bytes]:
    blocks = await load(cids)
    if len(blocks) != len(cids):
        raise ExportError(f"the loader returned {len(blocks)} blocks for {len(cids)} CIDs")
    return blocks


def _codec(cid: bytes) -> int:
    try:
        return parse_cid(cid).codec
    except CidError as exc:
        raise ExportError(f"a link to an invalid CID {cid.hex()}: {exc}") from None


def _decode(cid: bytes, block: bytes) -> tuple[dagpb.PBNode, UnixFSData]:
    """The DAG-PB node and UnixFS Data of ``block``."""
    try:
        node = dagpb.decode(block)
    except dagpb.DagPBError as exc:
        raise ExportError(f"{_name(cid)} is not a DAG-PB node: {exc}") from None
    if node.data is None:
        raise ExportError(f"{_name(cid)} is not a UnixFS node (no Data)")
    try:
        return node, decode_data(node.data)
    except UnixFSError as exc:
        raise ExportError(f"{_name(cid)} has malformed UnixFS Data: {exc}") from None


@dataclass(slots=True)
class _Pending:
    """A node still to read: its CID, the size its parent declares, the part of it wanted, its depth."""

    cid: bytes
    size: int | None
    skip: int
    take: int
    depth: int
    block: bytes | None = None


def _file_size(cid: bytes, unixfs: UnixFSData, node: dagpb.PBNode) -> int:
    """The size the File node says it has, checked against its own parts."""
    inline = len(unixfs.data or b"")
    if node.links and len(unixfs.blocksizes) != len(node.links):
        raise ExportError(f"{_name(cid)} has {len(node.links)} links but {len(unixfs.blocksizes)} blocksizes")
    total = inline + sum(unixfs.blocksizes) if node.links else inline
    if unixfs.filesize is not None and unixfs.filesize != total:
        raise ExportError(f"{_name(cid)} declares {unixfs.filesize} bytes but its parts add up to {total}")
    return total


async def read_file(
    root: bytes, load: Loader, *, offset: int = 0, length: int | None = None, window: int = 64
) -> AsyncIterator[bytes]:
    """The bytes of the file at ``root`` in order (``offset``/``length``: only that range).

    The root may be a raw block or a UnixFS File or Raw node; a directory or
    anything else raises :class:`ExportError`, as does an inconsistent DAG."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("offset and length cannot be negative")
    if window < 1:
        raise ValueError("window must be at least 1")
    end = None if length is None else offset + length
    take = (1 << 63) if end is None else end - offset
    if take == 0:
        return
    # The file still to yield, in order: bytes ready to go, and nodes (loaded or not).
    pending: deque[bytes | _Pending] = deque([_Pending(root, None, offset, take, 0)])
    held = 0  # leaves loaded and not yet yielded
    while pending:
        head = pending[0]
        if isinstance(head, _Pending) and head.block is None:
            held += await _fill(pending, load, max(1, window - held))
        head = pending.popleft()
        if isinstance(head, bytes):
            yield head
            continue
        if _is_leaf(head.cid):
            held -= 1
        pending.extendleft(reversed(_expand(head)))


async def _fill(pending: deque[bytes | _Pending], load: Loader, room: int) -> int:
    """Load up to ``room`` of the first unloaded nodes of ``pending``; the number of leaves loaded.

    Inner nodes already loaded are expanded in place on the way, so the
    children of the next parent join the batch before the current one is done."""
    batch: list[_Pending] = []
    index = 0
    while index < len(pending) and len(batch) < room:
        item = pending[index]
        if isinstance(item, _Pending):
            if item.block is None:
                batch.append(item)
            elif not _is_leaf(item.cid):
                del pending[index]
                for offset, part in enumerate(_expand(item)):
                    pending.insert(index + offset, part)
                continue
        index += 1
    blocks = await _load(load, [item.cid for item in batch])
    for item, block in zip(batch, blocks, strict=True):
        item.block = block
    return sum(1 for item in batch if _is_leaf(item.cid))


def _is_leaf(cid: bytes) -> bool:
    return len(cid) > 1 and cid[0] == 1 and cid[1] == RAW


def _expand(item: _Pending) -> list[bytes | _Pending]:
    """What a loaded node stands for: the wanted part of its bytes, then of its children, in order."""
    cid = item.cid
    block = item.block
    assert block is not None
    item.block = None
    codec = _codec(cid)
    if codec == RAW:
        if item.size is not None and len(block) != item.size:
            raise ExportError(f"{_name(cid)} is {len(block)} bytes, but its parent says {item.size}")
        piece = block[item.skip : item.skip + item.take]
        return [piece] if piece else []
    if codec != DAG_PB:
        raise ExportError(f"{_name(cid)} is neither a raw block nor a DAG-PB node (codec 0x{codec:x})")
    node, unixfs = _decode(cid, block)
    if unixfs.type in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        raise ExportError(f"{_name(cid)} is a directory")
    if unixfs.type not in (DataType.FILE, DataType.RAW):
        raise ExportError(f"{_name(cid)} is not a file (UnixFS type {unixfs.type.name.lower()})")
    size = _file_size(cid, unixfs, node)
    if item.size is not None and size != item.size:
        raise ExportError(f"{_name(cid)} holds {size} bytes, but its parent says {item.size}")
    if node.links and item.depth + 1 >= MAX_DEPTH:
        raise ExportError(f"{_name(cid)} is more than {MAX_DEPTH} levels deep")
    out: list[bytes | _Pending] = []
    start, stop = item.skip, item.skip + item.take
    inline = unixfs.data or b""
    piece = inline[start:stop]
    if piece:
        out.append(piece)
    position = len(inline)
    for link, child_size in zip(node.links, unixfs.blocksizes, strict=False):
        if position >= stop:
            break
        child_end = position + child_size
        if child_end > start:
            skip = max(start - position, 0)
            take = min(stop, child_end) - max(start, position)
            out.append(_Pending(link.hash, child_size, skip, take, item.depth + 1))
        position = child_end
    return out


async def stat(root: bytes, load: Loader) -> FileStat:
    """Kind and size of ``root``, from its block alone."""
    (block,) = await _load(load, [root])
    codec = _codec(root)
    if codec == RAW:
        return FileStat(root, "raw", len(block), 1)
    if codec != DAG_PB:
        raise ExportError(f"{_name(root)} is neither a raw block nor a DAG-PB node (codec 0x{codec:x})")
    node, unixfs = _decode(root, block)
    if unixfs.type in (DataType.FILE, DataType.RAW):
        return FileStat(root, "file", _file_size(root, unixfs, node), 1 + len(node.links))
    if unixfs.type in (DataType.DIRECTORY, DataType.HAMT_SHARD):
        total = len(block) + sum(link.tsize or 0 for link in node.links)
        return FileStat(root, "directory", total, 1 + len(node.links))
    raise ExportError(
        f"{_name(root)} is neither a file nor a directory (UnixFS type {unixfs.type.name.lower()})"
    )


class DirEntry(NamedTuple):
    """One entry of a directory: its name, CID (text) and cumulative size (its DAG's bytes)."""

    name: str
    cid: str
    size: int


async def ls(root: bytes, load: Loader) -> list[DirEntry]:
    """The entries of the directory ``root``, in the order it links them (by name)."""
    if _codec(root) != DAG_PB:
        raise ExportError(f"{_name(root)} is not a directory")
    (block,) = await _load(load, [root])
    node, unixfs = _decode(root, block)
    if unixfs.type == DataType.HAMT_SHARD:
        raise ExportError(f"{_name(root)} is a sharded directory, which is not supported")
    if unixfs.type != DataType.DIRECTORY:
        raise ExportError(f"{_name(root)} is not a directory")
    return [DirEntry(link.name or "", _name(link.hash), link.tsize or 0) for link in node.links]


async def resolve(root: bytes, path: str, load: Loader) -> bytes:
    """The CID at ``path`` ("a/b/c.txt") under the directory ``root``; :class:`ExportError` if none."""
    current = root
    walked: list[str] = []
    for segment in (part for part in path.split("/") if part):
        where = "/".join([_name(root), *walked])
        if _codec(current) != DAG_PB:
            raise ExportError(f"{where} is not a directory")
        (block,) = await _load(load, [current])
        node, unixfs = _decode(current, block)
        if unixfs.type == DataType.HAMT_SHARD:
            raise ExportError(f"{where} is a sharded directory, which is not supported")
        if unixfs.type != DataType.DIRECTORY:
            raise ExportError(f"{where} is not a directory")
        for link in node.links:
            if link.name == segment:
                current = link.hash
                break
        else:
            raise ExportError(f"{segment!r} not found in {where}")
        walked.append(segment)
    return current


async def walk_cids(root: bytes, load: Loader, *, window: int = 64) -> AsyncIterator[bytes]:
    """Every CID of the DAG under ``root``, each once, the root first (raw and DAG-PB blocks;
    a block of another codec is yielded and not descended into). Loads DAG-PB nodes only."""
    seen = {root}
    yield root
    todo: deque[tuple[bytes, int]] = deque([(root, 0)] if _codec(root) == DAG_PB else [])
    while todo:
        batch = [todo.popleft() for _ in range(min(window, len(todo)))]
        blocks = await _load(load, [cid for cid, _ in batch])
        for (cid, depth), block in zip(batch, blocks, strict=True):
            try:
                node = dagpb.decode(block)
            except dagpb.DagPBError as exc:
                raise ExportError(f"{_name(cid)} is not a DAG-PB node: {exc}") from None
            if node.links and depth + 1 >= MAX_DEPTH:
                raise ExportError(f"{_name(cid)} is more than {MAX_DEPTH} levels deep")
            for link in node.links:
                if link.hash in seen:
                    continue
                seen.add(link.hash)
                yield link.hash
                if _codec(link.hash) == DAG_PB:
                    todo.append((link.hash, depth + 1))
