"""Where each key and value of a loaded manifest stands in its file.

Paths are tuples of mapping keys (``str``) and list indexes (``int``), such as
``("grpc", "tcp", "port")`` or ``("p2p", "bootstrap", 0)``. Their text form is
what error messages print: ``grpc.tcp.port``, ``p2p.bootstrap[0]``,
``services['notes.v1.Notes'].impl`` (keys that are not identifiers are
quoted, so dotted service names stay unambiguous).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path as FilePath

__all__ = ["Path", "PathLike", "Position", "SourceMap", "format_path", "parse_path", "printable"]

Path = tuple[str | int, ...]
"""A location inside the manifest: keys and list indexes from the top."""

PathLike = Path | str
"""A path as a tuple, or its text form (``"grpc.tcp.port"``)."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PATH_TOKEN = re.compile(
    r"""\.?(?P<name>[A-Za-z_][A-Za-z0-9_-]*)   # .name
      | \[(?P<index>\d+)\]                   # [3]
      | \[(?P<quote>['"])(?P<key>(?:\\.|(?!(?P=quote)).)*)(?P=quote)\]  # ['a.b']
    """,
    re.VERBOSE,
)


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x00``), so a message stays one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True, order=True)
class Position:
    """A place in a file: 1-based line and column, as compilers print them."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


def format_path(path: Iterable[str | int]) -> str:
    """Text form of a path: ``grpc.tcp.port``, ``p2p.bootstrap[0]``, ``auth.acl['/a.B/C']``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}" if out else part)
        else:
            escaped = printable(part.replace("\\", "\\\\").replace("'", "\\'"))
            out.append(f"['{escaped}']")
    return "".join(out) or "<root>"


def parse_path(text: str) -> Path:
    """Inverse of :func:`format_path`."""
    if text in ("", "<root>"):
        return ()
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _PATH_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"not a manifest path: {text!r}")
        if match.group("name") is not None:
            parts.append(match.group("name"))
        elif match.group("index") is not None:
            parts.append(int(match.group("index")))
        else:
            parts.append(re.sub(r"\\(.)", r"\1", match.group("key")))
        pos = match.end()
    return tuple(parts)


def _as_path(path: PathLike) -> Path:
    return parse_path(path) if isinstance(path, str) else tuple(path)


class SourceMap:
    """Positions of every key and value of one manifest file.

    Built by the loader; codegen and the runtime use it to report problems
    at the manifest's own ``file:line:col``.
    """

    __slots__ = ("_keys", "_values", "file")

    def __init__(
        self,
        file: str,
        keys: Mapping[Path, Position] | None = None,
        values: Mapping[Path, Position] | None = None,
    ) -> None:
        self.file = file
        self._keys: dict[Path, Position] = dict(keys or {})
        self._values: dict[Path, Position] = dict(values or {})

    def _record(self, path: Path, *, key: Position | None, value: Position) -> None:
        if key is not None:
            self._keys[path] = key
        self._values[path] = value

    def key(self, path: PathLike) -> Position | None:
        """Position of the key that names ``path`` (None for list items and the root)."""
        return self._keys.get(_as_path(path))

    def value(self, path: PathLike) -> Position | None:
        """Position of the value at ``path``, or None when the file has no such value."""
        return self._values.get(_as_path(path))

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str | tuple):
            return False
        return _as_path(path) in self._values

    def locate(self, path: PathLike, *, prefer_key: bool = False) -> Position:
        """Best position for a problem at ``path``.

        The value's position (or the key's, with ``prefer_key``); for a path the
        file does not contain (a missing field), the nearest enclosing value.
        """
        p = _as_path(path)
        if prefer_key and p in self._keys:
            return self._keys[p]
        while p:
            if p in self._values:
                return self._values[p]
            p = p[:-1]
        return self._values.get((), Position(1, 1))

    def where(self, path: PathLike, *, prefer_key: bool = False) -> str:
        """``file:line:col`` for ``path``, ready to print."""
        return f"{self.file}:{self.locate(path, prefer_key=prefer_key)}"

    def paths(self) -> list[Path]:
        """Every path that has a value in the file, in file order."""
        return sorted(self._values, key=lambda p: self._values[p])

    def __repr__(self) -> str:
        return f"SourceMap({FilePath(self.file).name!r}, {len(self._values)} values)"
