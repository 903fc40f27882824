"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from msuite.spec import Diagnostic, ManifestError, load_manifest

REPO = Path(__file__).resolve().parent.parent


def errors_of(path: Path, env: dict[str, str] | None = None) -> list[Diagnostic]:
    """The diagnostics loading ``path`` raises (fails the test if it loads)."""
    with pytest.raises(ManifestError) as info:
        load_manifest(path, env=env or {})
    assert info.value.diagnostics, "a ManifestError must carry diagnostics"
    return info.value.diagnostics


def located(diagnostics: list[Diagnostic]) -> list[tuple[int, int, str]]:
    """(line, column, path) of each diagnostic, in report order."""
    return [(d.line, d.column, d.path) for d in diagnostics]
