"""``node.files``: add, get, stat, pin and collect files by CID (asyncio side of file sharing).

::

    cid = await node.files.add(b"hello")             # bytes, a path, or an (async) iterator of bytes
    cid = await node.files.add(Path("photos"))        # a folder: a UnixFS directory
    async for chunk in node.files.get(cid):           # in order, fetched from peers as needed
        ...
    data = await node.files.cat(f"{cid}/2026/a.jpg")  # a path inside a directory
    info = await node.files.stat(cid)                 # kind, size, blocks

Files are cut and linked exactly as Kubo's ``ipfs add --cid-version=1
--raw-leaves`` does (see :mod:`.importer`), so a CID names the same bytes
here and on the IPFS network. Blocks live in the repository's blockstore
(``blocks/``), verified against their CID on every read. Added files are
pinned; :meth:`Files.gc` removes every block no pin reaches. Blocks this
node lacks come from peers over Bitswap (:mod:`.bitswap`), each batch within
``files.timeout``.

Reads and writes of blocks run in a worker thread when there are more than a
few (hashing and file I/O release the GIL), so a large add or get does not
hold the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat as stat_module
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msuite.runtime.errors import NodeError

from .cids import CidError, cid_from_str, cid_to_str, multihash_of
from .exporter import DirEntry, ExportError, ls, read_file, resolve, walk_cids
from .exporter import stat as export_stat
from .importer import Importer, ImportResult, build_directory

if TYPE_CHECKING:
    from multiformats import CID

    from msuite.runtime.p2p.host import P2PHost
    from msuite.runtime.repo.component import RepoComponent
    from msuite.spec import Manifest

    from .bitswap import Bitswap
    from .blockstore import Blockstore

__all__ = ["DirEntry", "FileStat", "Files", "FilesError", "GcResult", "NotFound"]

INLINE = 1024 * 1024
"""Data up to this size is imported on the event loop; larger goes to a worker thread."""

READ_PIECE = 1024 * 1024
"""Bytes read from a file at a time while adding it."""

RAW_PREFIX = b"\x01\x55"
"""CIDv1, raw: put before a multihash, it makes a CID of the block."""

PIN = b"pin/"
"""Key prefix of the pins in the repository's ``files`` key space (value: empty)."""


class FilesError(NodeError):
    """A file operation failed; the message says which CID or path and why."""


class NotFound(FilesError, LookupError):
    """A path inside a directory names nothing there."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What :meth:`Files.stat` tells of a CID."""

    cid: str
    kind: str
    """``file``, ``directory`` or ``raw`` (a single raw block)."""
    size: int
    """Bytes of the file's content (for a directory: the sum of its entries' sizes as linked)."""
    blocks: int
    """Blocks of the whole DAG."""
    local: bool
    """Every block is in this node's blockstore."""


@dataclass(frozen=True, slots=True)
class GcResult:
    """What :meth:`Files.gc` removed."""

    blocks: int
    bytes: int


def _cid_bytes(cid: CID | str | bytes) -> tuple[bytes, str]:
    """Binary CID and the rest of an ``<cid>/<path>`` string (``/ipfs/`` prefix allowed)."""
    if isinstance(cid, bytes | bytearray):
        return bytes(cid), ""
    text = str(cid).strip()
    if text.startswith("/ipfs/"):
        text = text[len("/ipfs/") :]
    head, _, rest = text.partition("/")
    try:
        return cid_from_str(head), rest.strip("/")
    except CidError as exc:
        raise FilesError(str(exc)) from None


def _to_cid(cid: bytes) -> CID:
    from multiformats import CID

    decoded = CID.decode(cid)
    return decoded if decoded.version == 0 else decoded.set(base="base32")


class Files:
    """Component ``files`` and ``node.files`` (see the module)."""

    name = "files"
    status_does_io = True
    """``status()`` counts the pins in LevelDB: the status board reads it in a worker thread."""

    def __init__(
        self, manifest: Manifest, host: P2PHost, repo: RepoComponent, requires: tuple[str, ...]
    ) -> None:
        from .bitswap import Bitswap

        assert manifest.files is not None
        self.config = manifest.files
        self.timeout = self.config.timeout.total_seconds()
        self.requires = requires
        self._host = host
        self._repo = repo
        self._store: Blockstore | None = None
        self.bitswap: Bitswap = Bitswap(self._open_store, dht=self._dht)
        host.add_service(self.bitswap)
        self._writers = 0
        self._gc_running = False
        self._changed = asyncio.Condition()
        self._keepers: list[Callable[[], Iterable[bytes]]] = []
        self.added = 0

    def keep_blocks(self, keeper: Callable[[], Iterable[bytes]]) -> None:
        """Make :meth:`gc` keep the blocks whose multihashes ``keeper()`` lists (another
        subsystem's blocks in the same blockstore, such as the shared store's deltas)."""
        self._keepers.append(keeper)

    # ------------------------------------------------------------------ lifecycle

    def _open_store(self) -> Blockstore:
        return self._repo.opened().blockstore(sync=self.config.sync)

    def _dht(self) -> Any:
        return self._host.service("dht")

    async def start(self) -> None:
        self._store = self._open_store()

    async def stop(self, grace: float) -> None:
        self._store = None

    @property
    def store(self) -> Blockstore:
        if self._store is None:
            raise FilesError("node.files works while the node runs")
        return self._store

    def status(self) -> dict[str, Any]:
        if self._store is None:
            return {"state": "stopped"}
        stats = self._store.stats()
        return {
            "state": "running",
            "blocks": stats.blocks,
            "bytes": stats.bytes,
            "corrupt_blocks": stats.corrupt,
            "pins": sum(1 for _ in self._pin_keys()),
            "added": self.added,
            "timeout": self.timeout,
            "bitswap": self.bitswap.status(),
        }

    # ------------------------------------------------------------------ adding

    async def add(
        self,
        source: bytes
        | bytearray
        | memoryview
        | str
        | os.PathLike[str]
        | AsyncIterable[bytes]
        | Iterable[bytes],
        *,
        pin: bool = True,
    ) -> CID:
        """Import ``source`` and return its CID (pinned unless ``pin=False``).

        ``source`` is the data itself (bytes), a path (``str`` or ``Path``: a file, or a folder,
        which becomes a UnixFS directory of everything in it), or an iterator or async iterator
        of bytes, which is never held in memory whole."""
        store = self.store
        async with self._writing():
            keys: list[bytes] = []

            def put(cid: bytes, block: bytes) -> None:
                if store.put(cid, block):
                    keys.append(multihash_of(cid))

            if isinstance(source, bytes | bytearray | memoryview):
                result = await self._import_bytes(bytes(source), put)
            elif isinstance(source, str | os.PathLike):
                result = await asyncio.to_thread(_import_path, Path(source), put)
            elif isinstance(source, AsyncIterable):
                result = await self._import_stream(source, put)
            elif isinstance(source, Iterable):
                result = await asyncio.to_thread(_import_iterable, source, put)
            else:
                raise TypeError(
                    f"add takes bytes, a path or an iterator of bytes, not {type(source).__name__}"
                )
            if pin:
                await asyncio.to_thread(self._pins().write, [(PIN + result.cid, b"")])
        self.added += 1
        self._announce(result.cid, keys)
        return _to_cid(result.cid)

    async def _import_bytes(self, data: bytes, put: Any) -> ImportResult:
        def run() -> ImportResult:
            importer = Importer(put)
            importer.feed(data)
            return importer.finish()

        return run() if len(data) <= INLINE else await asyncio.to_thread(run)

    async def _import_stream(self, source: AsyncIterable[bytes], put: Any) -> ImportResult:
        importer = Importer(put)
        pending: list[bytes] = []
        held = 0
        async for piece in source:
            if not isinstance(piece, bytes | bytearray | memoryview):
                raise TypeError(f"add's iterator gave {type(piece).__name__}, not bytes")
            pending.append(bytes(piece))
            held += len(piece)
            if held >= INLINE:
                batch, pending, held = pending, [], 0
                await asyncio.to_thread(_feed, importer, batch)
        _feed(importer, pending)
        return importer.finish()

    def _announce(self, root: bytes, keys: list[bytes]) -> None:
        """Tell the exchange about new blocks (peers may wait for them) and the DHT about the root."""
        bridge = self._host.bridge
        if not bridge.running:
            return
        if keys:
            bridge.run_sync_soon(self.bitswap.blocks_added, keys)
        dht = self._dht()
        if dht is not None and self.config.provide:
            bridge.run_sync_soon(dht.provide_key, multihash_of(root).hex())

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """Adds run side by side; gc waits for them and they for it (an add's blocks are
        unpinned until its root is pinned at the end)."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._gc_running)
            self._writers += 1
        try:
            yield
        finally:
            async with self._changed:
                self._writers -= 1
                self._changed.notify_all()

    # ------------------------------------------------------------------ reading

    async def _load(self, cids: Sequence[bytes], timeout: float | None = None) -> list[bytes]:
        """The blocks of ``cids``, in order: from the blockstore, else fetched from peers."""
        store = self.store
        blocks = await self._read(cids)
        missing = [cid for cid, block in zip(cids, blocks, strict=True) if block is None]
        if missing:
            if not self._host.bridge.running:
                raise FilesError(
                    f"block {cid_to_str(missing[0])} is not here and the p2p host is not running"
                )
            fetched = await self._host.bridge.run(
                self.bitswap.fetch, missing, self.timeout if timeout is None else timeout
            )
            blocks = [
                block if block is not None else fetched.get(cid) or store.get(cid)
                for cid, block in zip(cids, blocks, strict=True)
            ]
        out: list[bytes] = []
        for cid, block in zip(cids, blocks, strict=True):
            if block is None:  # fetched, then removed (gc) or found corrupt before we read it
                raise FilesError(f"block {cid_to_str(cid)} was fetched but could not be read back")
            out.append(block)
        return out

    async def _read(self, cids: Sequence[bytes]) -> list[bytes | None]:
        store = self.store
        if len(cids) <= 4:
            return [store.get(cid) for cid in cids]
        return await asyncio.to_thread(lambda: [store.get(cid) for cid in cids])

    def _loader(self, timeout: float | None) -> Any:
        async def load(cids: Sequence[bytes]) -> list[bytes]:
            return await self._load(cids, timeout)

        return load

    async def _root(self, cid: CID | str | bytes, path: str, timeout: float | None) -> bytes:
        root, rest = _cid_bytes(cid)
        inner = "/".join(p for p in (rest, path.strip("/")) if p)
        if not inner:
            return root
        try:
            return await resolve(root, inner, self._loader(timeout))
        except ExportError as exc:
            raise NotFound(f"{cid_to_str(root)}/{inner}: {exc}") from None

    async def get(
        self,
        cid: CID | str | bytes,
        *,
        path: str = "",
        offset: int = 0,
        length: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[bytes]:
        """The file's bytes, in order (``offset``/``length``: a range of them). ``cid`` may be
        ``<cid>/<path>`` inside a directory. Blocks this node lacks are fetched from peers;
        :class:`~.bitswap.FetchTimeout` when none delivers one within ``timeout`` seconds
        (default ``files.timeout``), naming it."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length are not negative")
        root = await self._root(cid, path, timeout)
        try:
            async for piece in read_file(root, self._loader(timeout), offset=offset, length=length):
                yield piece
        except ExportError as exc:
            raise FilesError(str(exc)) from None

    async def cat(
        self,
        cid: CID | str | bytes,
        *,
        path: str = "",
        max_size: int = 64 * 1024 * 1024,
        timeout: float | None = None,
    ) -> bytes:
        """The whole file as bytes (for small files; :class:`FilesError` over ``max_size``)."""
        root = await self._root(cid, path, timeout)
        info = await self._stat(root, timeout)
        if info.kind == "directory":
            raise FilesError(f"{cid_to_str(root)} is a directory")
        if info.size > max_size:
            raise FilesError(f"{cid_to_str(root)} is {info.size} bytes, over max_size={max_size}: use get()")
        return b"".join([piece async for piece in self.get(root, timeout=timeout)])

    async def stat(self, cid: CID | str | bytes, *, path: str = "", timeout: float | None = None) -> FileStat:
        """Kind, size and block count of a CID (fetching the DAG's inner nodes, not its leaves)."""
        root = await self._root(cid, path, timeout)
        return await self._stat(root, timeout)

    async def _stat(self, root: bytes, timeout: float | None) -> FileStat:
        load = self._loader(timeout)
        try:
            info = await export_stat(root, load)
            cids = [c async for c in walk_cids(root, load)]
        except ExportError as exc:
            raise FilesError(str(exc)) from None
        store = self.store
        local = all(store.has(c) for c in cids)
        return FileStat(cid_to_str(root), info.kind, info.size, len(cids), local)

    async def ls(
        self, cid: CID | str | bytes, *, path: str = "", timeout: float | None = None
    ) -> list[DirEntry]:
        """The entries of a directory: name, CID and cumulative size, sorted by name."""
        root = await self._root(cid, path, timeout)
        try:
            return await ls(root, self._loader(timeout))
        except ExportError as exc:
            raise FilesError(str(exc)) from None

    def has(self, cid: CID | str | bytes) -> bool:
        """Whether this node holds the block of ``cid`` (not the whole DAG: see :meth:`stat`)."""
        return self.store.has(_cid_bytes(cid)[0])

    # ------------------------------------------------------------------ pins and gc

    def _pins(self) -> Any:
        return self._repo.opened().space("files")

    def _pin_keys(self) -> Iterable[bytes]:
        snapshot = self._pins().snapshot()
        try:
            yield from (key[len(PIN) :] for key in snapshot.keys(PIN))
        finally:
            snapshot.close()

    async def pin(self, cid: CID | str | bytes, *, timeout: float | None = None) -> None:
        """Keep ``cid`` and everything it links to (fetched now if missing) through :meth:`gc`."""
        root, rest = _cid_bytes(cid)
        if rest:
            root = await self._root(cid, "", timeout)
        load = self._loader(timeout)
        async with self._writing():
            try:
                await fetch_dag(root, load)
            except ExportError as exc:
                raise FilesError(str(exc)) from None
            await asyncio.to_thread(self._pins().write, [(PIN + root, b"")])

    async def unpin(self, cid: CID | str | bytes) -> bool:
        """Stop keeping ``cid`` (its blocks go at the next :meth:`gc`); False if it was not pinned."""
        root = _cid_bytes(cid)[0]
        pins = self._pins()
        if pins.get(PIN + root) is None:
            return False
        await asyncio.to_thread(pins.write, [], [PIN + root])
        return True

    async def pins(self) -> list[CID]:
        """The pinned CIDs."""
        keys = await asyncio.to_thread(lambda: list(self._pin_keys()))
        return [_to_cid(key) for key in keys]

    async def gc(self) -> GcResult:
        """Remove every block no pin reaches; adds wait until it is done (and it for them)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._writers == 0 and not self._gc_running)
            self._gc_running = True
        try:
            return await asyncio.to_thread(self._collect)
        finally:
            async with self._changed:
                self._gc_running = False
                self._changed.notify_all()

    def _collect(self) -> GcResult:
        store = self.store
        keep: set[bytes] = set()
        for keeper in self._keepers:
            keep.update(keeper())

        async def local(cids: Sequence[bytes]) -> list[bytes]:
            blocks = [store.get(cid) for cid in cids]
            if any(block is None for block in blocks):
                raise ExportError("a pinned DAG is not whole here")
            return [b for b in blocks if b is not None]

        for root in list(self._pin_keys()):
            keep.add(multihash_of(root))
            try:
                asyncio.run(_collect_keys(root, local, keep))
            except ExportError:
                continue  # keep what was reached; a partly fetched pin keeps its blocks
        removed = freed = 0
        for key in list(store.keys()):
            if key in keep:
                continue
            cid = RAW_PREFIX + key  # the store keys blocks by multihash: any codec names the block
            size = store.size(cid)
            if store.delete(cid):
                removed += 1
                freed += size or 0
        return GcResult(removed, freed)


async def _collect_keys(root: bytes, load: Any, keep: set[bytes]) -> None:
    async for cid in walk_cids(root, load):
        keep.add(multihash_of(cid))


async def fetch_dag(root: bytes, load: Any, batch: int = 64) -> int:
    """Load every block of the DAG under ``root``, ``batch`` at a time; the number of blocks."""
    pending: list[bytes] = []
    count = 0
    async for cid in walk_cids(root, load):
        pending.append(cid)
        count += 1
        if len(pending) >= batch:
            await load(pending)
            pending = []
    if pending:
        await load(pending)
    return count


def _feed(importer: Importer, pieces: list[bytes]) -> None:
    for piece in pieces:
        importer.feed(piece)


def _import_iterable(source: Iterable[bytes], put: Any) -> ImportResult:
    importer = Importer(put)
    for piece in source:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError(f"add's iterator gave {type(piece).__name__}, not bytes")
        importer.feed(piece)
    return importer.finish()


def _import_file(path: Path, put: Any) -> ImportResult:
    importer = Importer(put)
    with path.open("rb") as file:
        while piece := file.read(READ_PIECE):
            importer.feed(piece)
    return importer.finish()


def _import_path(path: Path, put: Any) -> ImportResult:
    """A file, or a folder as a UnixFS directory (entries sorted by name, symlinks refused)."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise FilesError(f"cannot add {path}: {exc.strerror or exc}") from None
    if stat_module.S_ISLNK(info.st_mode):
        raise FilesError(f"cannot add {path}: it is a symbolic link (UnixFS symlinks are not supported)")
    if stat_module.S_ISREG(info.st_mode):
        return _import_file(path, put)
    if not stat_module.S_ISDIR(info.st_mode):
        raise FilesError(f"cannot add {path}: not a regular file or a folder")
    entries: list[tuple[str, bytes, int]] = []
    for child in sorted(path.iterdir(), key=lambda p: p.name.encode()):
        result = _import_path(child, put)
        entries.append((child.name, result.cid, result.tsize))
    return build_directory(entries, put)
