"""Fixtures of the node tests: the echo project, generated once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from msuite.codegen import generate
from msuite.spec import load_manifest

ECHO = Path(__file__).parent / "echo"


@pytest.fixture(scope="session")
def echo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the echo project with its code generated: the folder holding msuite.yaml."""
    folder = tmp_path_factory.mktemp("echo") / "echo"
    shutil.copytree(ECHO, folder)
    generate(load_manifest(folder / "msuite.yaml"))
    return folder


@pytest.fixture
def echo_manifest(echo_project: Path) -> Path:
    return echo_project / "msuite.yaml"
