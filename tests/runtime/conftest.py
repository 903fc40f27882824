"""Fixtures of the runtime tests: the echo project (tests/runtime/node/echo), generated once per session."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import pytest

from msuite.codegen import generate
from msuite.spec import load_manifest

ECHO = Path(__file__).parent / "node" / "echo"


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


@pytest.fixture(scope="session")
def echo_pb(echo_project: Path) -> tuple[ModuleType, ModuleType]:
    """The echo project's generated ``echo_pb2`` and ``echo_pb2_grpc`` modules."""
    from msuite.runtime.loading import import_from

    return import_from(echo_project, "gen.echo_pb2"), import_from(echo_project, "gen.echo_pb2_grpc")
