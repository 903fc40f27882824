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


def rerun_without_privileges(request: pytest.FixtureRequest) -> bool:
    """As root (CI runs as root), run this test again in a child pytest inside a new user
    namespace (``unshare -U``), where the process is an ordinary user to the files of this
    machine: root reads and writes anything, so file-permission behaviour is only visible there.
    Returns True when it did (the caller returns at once); False when not root (test as usual)."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0:
        return False
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("as root this test needs `unshare -U` (util-linux) to run as an ordinary user")
    result = subprocess.run(
        [unshare, "-U", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], result.stdout
    return True
