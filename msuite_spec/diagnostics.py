"""Located manifest errors and the three ways of printing them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from msuite import MsuiteError

from .source import Path, format_path, printable

__all__ = ["Diagnostic", "ManifestError", "OutputFormat", "render"]

OutputFormat = Literal["text", "json", "github"]


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a manifest, at ``file:line:column`` and a dotted ``path``.

    ``message`` never contains the value of a secret field. ``line`` and
    ``column`` are 0 when there is no file (a manifest built in Python).
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __post_init__(self) -> None:
        # one problem, one line: editors and CI parse these line by line
        object.__setattr__(self, "message", " ".join(printable(self.message).split()))

    @classmethod
    def at(cls, file: str, line: int, column: int, path: Path | str, message: str) -> Diagnostic:
        """Build a diagnostic from a path tuple or its text form."""
        text = path if isinstance(path, str) else format_path(path)
        return cls(file, line, column, text, message)

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.file}: {self.path}: {self.message}"
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class ManifestError(MsuiteError):
    """A manifest could not be loaded or built; ``diagnostics`` lists every problem found.

    Not a ValueError on purpose: pydantic wraps ValueErrors raised inside
    validation into its own error, which carries the raw input (secrets included).
    """

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = list(dict.fromkeys(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def _github_escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_escape_property(text: str) -> str:
    return _github_escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(diagnostics: Iterable[Diagnostic], fmt: OutputFormat = "text") -> str:
    """Format diagnostics for a terminal (``text``), tools (``json``) or GitHub Actions."""
    items = list(diagnostics)
    if fmt == "json":
        return json.dumps([asdict(d) for d in items], indent=2)
    if fmt == "github":
        return "\n".join(
            f"::error file={_github_escape_property(d.file)},line={d.line},col={d.column}"
            f"::{_github_escape_data(f'{d.path}: {d.message}')}"
            for d in items
        )
    return "\n".join(str(d) for d in items)
