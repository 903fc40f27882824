"""docs/diagnostics.md describes ``GET /status`` as it is: every key its tables name is in the
real answer of a running node with every component on, and every key of that answer is named.

The doc once said the report carries the node's ``name``; the key is ``node`` (issue 21, item 7).
The tables are parsed, so a key renamed in either place fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO
from tests.runtime.nodes import started

DOC = REPO / "docs" / "diagnostics.md"

EVERYTHING = """
locker: {backend: memory}
p2p: {port: 0}
events:
  Echoed: {text: str}
diagnostics:
  metrics: true
  profiling: true
  tracing: {jaeger: "127.0.0.1:6831"}
"""
"""Laid over the echo manifest (which has services, gRPC, HTTP and auth): the other components."""


def documented() -> dict[str, list[str]]:
    """Each key of the ``/status`` tables and the paths listed as its "keys inside"."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## `GET /status`", 1)[1].split("\n## ", 1)[0]
    keys: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.fullmatch(r"`[a-z_0-9]+`", cells[0]):
            continue
        key = cells[0].strip("`")
        assert key not in keys, f"{key} is in the tables twice"
        keys[key] = re.findall(r"`([^`]+)`", cells[2])
    return keys


def resolve(value: Any, path: list[str], where: str) -> None:
    """Fail unless ``path`` (``*``: every entry) leads somewhere in ``value``."""
    if not path:
        return
    step, rest = path[0], path[1:]
    if step == "*":
        entries = list(value.values()) if isinstance(value, dict) else value
        assert isinstance(entries, list) and entries, f"{where}: nothing for * to stand for"
        for number, entry in enumerate(entries):
            resolve(entry, rest, f"{where}.{number}")
        return
    assert isinstance(value, dict) and step in value, f"{where} has no key {step!r}"
    resolve(value[step], rest, f"{where}.{step}")


def test_the_tables_are_found() -> None:
    keys = documented()
    assert {"node", "version", "state", "uptime_s", "open_files", "services", "http"} <= set(keys)
    assert "name" not in keys


@pytest.fixture
def manifest(echo_project: Path) -> Path:
    """The echo project's manifest with every other component on, beside it (same generated code)."""
    text = (echo_project / "msuite.yaml").read_text().replace("tcp: {port: 0}", "tcp: {port: 0}\n  p2p: true")
    path = echo_project / "everything.yaml"
    path.write_text(text + EVERYTHING)
    return path


async def test_the_documented_status_keys_are_the_real_ones(manifest: Path, tmp_path: Path) -> None:
    async with started(manifest, tmp_path) as harness, harness.http.get("/status") as response:
        assert response.status == 200
        report = await response.json()
    keys = documented()
    assert list(report) == list(keys), "the tables and the report differ in their keys or their order"
    for key, paths in keys.items():
        for path in paths:
            resolve(report[key], path.split("."), key)
    assert report["node"] == "echo"
