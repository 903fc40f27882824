"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> float:
    """Wait until ``condition()`` is true, polling every 5 ms; return how long it took.

    Raises AssertionError naming the condition when it is still false after ``timeout`` seconds.
    """
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            name = getattr(condition, "__name__", repr(condition))
            raise AssertionError(f"{name} still false after {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - began
