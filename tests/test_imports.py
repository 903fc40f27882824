"""Import hygiene: every module imports on its own; the spec stays light."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import msuite
from tests.helpers import REPO

HEAVY = ("grpc", "aiohttp", "jinja2", "libp2p", "trio", "plyvel", "google.protobuf", "redis", "aiozk")


def all_modules() -> list[str]:
    names = ["msuite"]
    for info in pkgutil.walk_packages(msuite.__path__, "msuite."):
        if not info.name.startswith("msuite.templates.scaffold"):  # users' code, imports gen/
            names.append(info.name)
    return sorted(names)


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("statement", ["import msuite.spec", "import msuite.runtime.cli"])
def test_light_imports_pull_in_nothing_heavy(statement: str) -> None:
    modules = loaded_after(statement)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == []


def test_validate_command_stays_light() -> None:
    sample = REPO / "samples" / "hello" / "msuite.yaml"
    modules = loaded_after(
        f"from msuite.runtime.cli import main\nassert main(['validate', {str(sample)!r}]) == 0"
    )
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


@pytest.mark.parametrize("module", all_modules())
def test_each_module_imports_on_its_own(module: str) -> None:
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)


def test_module_list_is_complete() -> None:
    modules = all_modules()
    for expected in ("msuite.spec", "msuite.spec.loader", "msuite.codegen", "msuite.runtime.cli"):
        assert expected in modules


def test_every_msuite_exception_derives_from_the_one_root() -> None:
    """MsuiteError is the root of every exception class msuite defines (spec, codegen, runtime)."""
    import importlib
    import inspect

    from msuite.runtime import MsuiteError as exported

    assert exported is msuite.MsuiteError
    strays = []
    for name in all_modules():
        if name.startswith("msuite.runtime.testing"):
            continue
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            own_exception = value.__module__ == name and issubclass(value, BaseException)
            if own_exception and not issubclass(value, msuite.MsuiteError):
                strays.append(f"{name}.{value.__qualname__}")
    assert strays == []


# package -> packages of msuite it must never import (the layer order of docs/architecture.md)
LAYERS = {
    "msuite.spec": ("msuite.runtime", "msuite.codegen"),
    "msuite.runtime.store": ("msuite.runtime.p2p", "msuite.runtime.grpc", "msuite.runtime.http"),
    "msuite.runtime.repo": ("msuite.runtime.p2p", "msuite.runtime.grpc", "msuite.runtime.http"),
    "msuite.runtime.testing": ("msuite.codegen",),  # reached lazily, inside a function
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_lower_layers_never_import_higher_ones(package: str) -> None:
    modules = loaded_after(f"import {package}")
    for name in [m for m in all_modules() if m == package or m.startswith(package + ".")]:
        modules |= loaded_after(f"import {name}")
    assert sorted(m for m in modules if m.startswith(LAYERS[package])) == []


def test_a_bare_node_imports_no_optional_library() -> None:
    """A node of repo, tasks and clients only needs msuite's core install."""
    modules = loaded_after(
        "from msuite.runtime.node import Node\n"
        "from msuite.spec import Manifest\n"
        "Node(Manifest(name='bare', repo=':memory:')).build()"
    )
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY + ("jose", "prometheus_client")) == []
