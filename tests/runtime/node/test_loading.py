"""Importing impls from the manifest's folder: a neighbour node's module is replaced, nothing else."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from msuite.runtime.loading import import_from


@pytest.fixture
def clean() -> Iterator[None]:
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.path[:] = path


def _module(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lmod.py").write_text(f"WHO = {text!r}\n")
    return folder


@pytest.mark.usefixtures("clean")
def test_each_node_folder_gets_its_own_module_even_when_nested(tmp_path: Path) -> None:
    outer = _module(tmp_path / "nest", "outer")
    inner = _module(tmp_path / "nest" / "sub", "inner")
    assert import_from(inner, "lmod").WHO == "inner"
    assert import_from(outer, "lmod").WHO == "outer"
    assert import_from(inner, "lmod").WHO == "inner"


@pytest.mark.usefixtures("clean")
def test_modules_from_elsewhere_are_never_dropped(tmp_path: Path) -> None:
    from msuite.runtime import errors

    library = _module(tmp_path / "lib", "library")
    sys.path.insert(0, str(library))
    import lmod

    node = tmp_path / "node"
    node.mkdir()
    # a node folder without its own lmod: the library's module stays, the same object
    assert import_from(node, "lmod") is lmod
    assert import_from(node, "msuite.runtime.errors") is errors
