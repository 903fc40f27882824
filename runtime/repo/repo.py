"""The node's repository: its identity, data and blocks on disk (or in memory).

On-disk layout (format 1)::

    <repo>/
      version         the format version, "1"; a newer one is refused
      repo.lock       locked (flock) while a node has the repo open; holds its pid
      kv/             LevelDB: the store and other subsystems' keys
      blocks/         content blocks (file sharing)
      keys/node.key   the libp2p private key (mode 0600), created when p2p is on

Opening checks, in order, before anything is written: the path is a folder we
may read and write; its ``version`` is one we read (or the folder is new or
empty); no other node holds the lock. Only then are missing parts created.
``:memory:`` gives a repository with nothing on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from msuite import MsuiteError
from msuite.runtime.store import KV, KVError, LevelDB, Memory, Prefixed, Store

from .identity import ED25519, KeyFileError, check_key_file, create_node_key, read_key, read_seed

if TYPE_CHECKING:
    from msuite.runtime.files.blockstore import Blockstore
    from msuite.spec import Manifest

__all__ = ["FORMAT_VERSION", "MEMORY", "Repo", "RepoError", "RepoLocked", "repair"]

FORMAT_VERSION = 1
MEMORY = ":memory:"


class RepoError(MsuiteError):
    """The repository cannot be opened; the message says why and what to do."""


class RepoLocked(RepoError):
    """Another node (named by its pid) has the repository open."""


class Repo:
    """An open repository. Use :meth:`open` (or :meth:`for_manifest`), then :meth:`close`."""

    def __init__(
        self,
        path: Path | None,
        kv: KV,
        backend: Literal["leveldb", "memory"],
        *,
        lock_fd: int | None,
        key_path: Path | None,
        memory_seed: bytes | None = None,
    ) -> None:
        self.path = path
        self.kv = kv
        self.backend = backend
        self.key_path = key_path
        self._lock_fd = lock_fd
        self._memory_seed = memory_seed
        self._store: Store | None = None
        self._blocks: Blockstore | None = None
        self.closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str],
        *,
        kv: Literal["leveldb", "memory"] | None = None,
        sync: bool = True,
        node_key: bool = False,
        key_path: str | os.PathLike[str] | None = None,
    ) -> Repo:
        """Open (creating if new) the repository at ``location`` or ``":memory:"``.

        ``kv`` defaults to ``leveldb`` on disk and ``memory`` for ``":memory:"``.
        ``node_key`` makes sure a libp2p key exists (at ``key_path`` when given,
        else ``keys/node.key``).
        """
        if kv not in (None, "leveldb", "memory"):
            raise ValueError(f"kv is 'leveldb' or 'memory', not {kv!r}")
        if os.fspath(location) == MEMORY:
            return cls._open_memory(kv or "memory", node_key, key_path)
        kv = kv or "leveldb"
        path = Path(location).absolute()
        try:
            fresh = _check_folder(path)
            if fresh:  # the version file first: a folder holding it is a repository
                path.mkdir(parents=True, exist_ok=True)
                _write_atomically(path / "version", f"{FORMAT_VERSION}\n".encode())
            lock_fd = _lock(path)
        except OSError as exc:
            raise RepoError(
                f"{exc.filename or path}: cannot open the repository: {exc.strerror or exc}"
            ) from None
        try:
            for part in ("blocks", "keys"):
                if (path / part).exists() and not (path / part).is_dir():
                    raise RepoError(f"{path / part}: should be a folder, but is a file")
            (path / "blocks").mkdir(exist_ok=True)
            (path / "keys").mkdir(exist_ok=True, mode=0o700)
            key_file = Path(key_path).absolute() if key_path is not None else path / "keys" / "node.key"
            if node_key:
                if not key_file.exists():
                    create_node_key(key_file)
                check_key_file(key_file)
            # the database opens last: nothing after it can fail and leave it open
            store_kv: KV = LevelDB(path / "kv", sync=sync) if kv == "leveldb" else Memory()
        except (KVError, KeyFileError) as exc:
            _unlock(lock_fd)
            raise RepoError(str(exc)) from None
        except OSError as exc:
            _unlock(lock_fd)
            raise RepoError(f"{exc.filename or path}: {exc.strerror or exc}") from None
        except BaseException:
            _unlock(lock_fd)
            raise
        has_key = node_key or key_file.exists()
        return cls(path, store_kv, kv, lock_fd=lock_fd, key_path=key_file if has_key else None)

    @classmethod
    def _open_memory(cls, kv: str, node_key: bool, key_path: str | os.PathLike[str] | None) -> Repo:
        if kv == "leveldb":
            raise RepoError('an in-memory repository (":memory:") cannot use leveldb')
        explicit = Path(key_path).absolute() if key_path is not None else None
        seed = None
        if node_key:
            if explicit is None:
                seed = os.urandom(32)
            else:
                try:
                    if not explicit.exists():
                        create_node_key(explicit)
                    check_key_file(explicit)
                except KeyFileError as exc:
                    raise RepoError(str(exc)) from None
                except OSError as exc:
                    raise RepoError(f"{exc.filename or explicit}: {exc.strerror or exc}") from None
        return cls(None, Memory(), "memory", lock_fd=None, key_path=explicit, memory_seed=seed)

    @classmethod
    def for_manifest(cls, manifest: Manifest) -> Repo:
        """The repository a manifest declares (``repo``, ``storage``, ``p2p.key``)."""
        location = MEMORY if manifest.in_memory else manifest.resolve(manifest.repo)
        key_path = manifest.resolve(manifest.p2p.key) if manifest.p2p and manifest.p2p.key else None
        return cls.open(
            location,
            kv=manifest.kv_backend,
            sync=manifest.storage.sync,
            node_key=manifest.p2p is not None,
            key_path=key_path,
        )

    # ------------------------------------------------------------------ use

    def space(self, name: str) -> KV:
        """A key space of its own in the repository's database, for one subsystem."""
        return Prefixed(self.kv, _space_prefix(name))

    @property
    def store(self) -> Store:
        """The item store (key space ``store``)."""
        if self._store is None:
            self._store = Store(self.kv, prefix=_space_prefix("store"))  # the keys of space("store")
        return self._store

    def blockstore(self, *, sync: bool = False) -> Blockstore:
        """The content blocks (``blocks/``; file sharing), opened on first use (``sync``: flush
        each block to disk before it counts as stored; the first call decides)."""
        if self._blocks is None:
            from msuite.runtime.files.blockstore import FlatBlockstore, MemoryBlockstore

            if self.path is None:
                self._blocks = MemoryBlockstore()
            else:
                self._blocks = FlatBlockstore(self.path / "blocks", sync=sync)
        return self._blocks

    def node_seed(self) -> bytes:
        """The 32-byte Ed25519 seed of the node's libp2p key."""
        if self._memory_seed is not None:
            return self._memory_seed
        if self.key_path is None:
            raise RepoError("this repository has no node key: the manifest has no `p2p` section")
        return read_seed(self.key_path)

    def node_key(self) -> tuple[int, bytes]:
        """``(libp2p key type, 32-byte secret)`` of the node's key (Ed25519 or secp256k1)."""
        if self._memory_seed is not None:
            return ED25519, self._memory_seed
        if self.key_path is None:
            raise RepoError("this repository has no node key: the manifest has no `p2p` section")
        try:
            return read_key(self.key_path)
        except KeyFileError as exc:
            raise RepoError(str(exc)) from None

    def status(self) -> dict[str, Any]:
        """Layout and disk usage, for ``GET /status``. Walks the folder: call it off the loop."""
        if self.path is None:
            return {"path": MEMORY, "format": FORMAT_VERSION, "kv": {"backend": self.backend}}
        usage = shutil.disk_usage(self.path)
        blocks = _usage(self.path / "blocks")
        return {
            "path": str(self.path),
            "format": FORMAT_VERSION,
            "kv": {
                "backend": self.backend,
                "path": str(self.path / "kv"),
                "bytes": _usage(self.path / "kv")[1],
            },
            "blocks": {"path": str(self.path / "blocks"), "count": blocks[0], "bytes": blocks[1]},
            "node_key": str(self.key_path) if self.key_path else None,
            "bytes": _usage(self.path)[1],
            "disk": {"total": usage.total, "free": usage.free},
        }

    def close(self) -> None:
        """Close the database and release the lock (the last step of a node's stop)."""
        if self.closed:
            return
        self.closed = True
        self.kv.close()
        if self._lock_fd is not None:
            _unlock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Repo:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Repo({str(self.path) if self.path else MEMORY!r}, {self.backend})"


def repair(location: str | os.PathLike[str]) -> None:
    """Rebuild a damaged LevelDB from what its files still hold (plyvel.repair_db).

    Records in damaged files may be dropped; back the folder up first. The
    repository must not be open elsewhere.
    """
    import plyvel

    path = Path(location).absolute()
    if not path.is_dir() or _check_folder(path):
        raise RepoError(f"{path}: not an msuite repository")
    lock_fd = _lock(path)
    try:
        plyvel.repair_db(str(path / "kv"))
    except plyvel.Error as exc:
        raise RepoError(f"{path / 'kv'}: repair failed: {exc}") from None
    finally:
        _unlock(lock_fd)


# --------------------------------------------------------------------------- helpers


def _space_prefix(name: str) -> bytes:
    if not name or "\x00" in name:
        raise ValueError("a key space name is non-empty and has no NUL")
    return name.encode() + b"\x00"


_LEFTOVERS = {"repo.lock", "version.tmp"}
"""What an opening killed before writing ``version`` may leave: still a new repository."""


def _check_folder(path: Path) -> bool:
    """Refuse what is not (or cannot become) a repository; True when it is new."""
    if not path.exists():
        return True
    if not path.is_dir():
        raise RepoError(f"{path}: is a file, not a repository folder")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise RepoError(f"{path}: permission denied: msuite needs to read and write this folder")
    version_file = path / "version"
    try:
        raw = version_file.read_bytes()
    except FileNotFoundError:
        if {entry.name for entry in path.iterdir()} - _LEFTOVERS:
            raise RepoError(
                f"{path}: exists and is not an msuite repository (no version file); use a new or empty folder"
            ) from None
        return True
    except OSError as exc:
        raise RepoError(f"{version_file}: cannot read: {exc.strerror or exc}") from None
    try:
        version = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        version = 0
    if version < 1:
        raise RepoError(f"{version_file}: damaged (expected a format number such as 1)")
    if version > FORMAT_VERSION:
        raise RepoError(
            f"{path}: written by a newer msuite (repository format {version}); this msuite reads "
            f"format {FORMAT_VERSION} and leaves it untouched: upgrade msuite to open it"
        )
    return False


def _lock(path: Path) -> int:
    fd = os.open(path / "repo.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RepoLocked(
            f"{path}: in use by another msuite node (pid {holder}); stop it, or give this node another repo"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _usage(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.stat(os.path.join(root, name)).st_size
                files += 1
    return files, size
