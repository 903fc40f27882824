"""Importing a node's code from its folder: each node folder has its own modules, nothing else is touched."""

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
def test_a_folders_module_imports_its_own_neighbours(tmp_path: Path) -> None:
    """As an impl doing ``from gen import x`` after another node's ``gen`` was imported."""
    for who in ("a", "b"):
        package = tmp_path / who / "lpkg"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"WHO = {who!r}\n")
        (tmp_path / who / "limpl.py").write_text("from lpkg import WHO as FROM\n")
    assert import_from(tmp_path / "a", "lpkg").WHO == "a"
    assert import_from(tmp_path / "b", "lpkg").WHO == "b"
    assert import_from(tmp_path / "a", "limpl").FROM == "a"
    assert import_from(tmp_path / "b", "limpl").FROM == "b"


@pytest.mark.usefixtures("clean")
def test_a_folders_modules_are_imported_once_and_put_back(tmp_path: Path) -> None:
    first = import_from(_module(tmp_path / "a", "a"), "lmod")
    assert import_from(_module(tmp_path / "b", "b"), "lmod").WHO == "b"
    assert import_from(tmp_path / "a", "lmod") is first
    assert sys.modules["lmod"] is first


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
