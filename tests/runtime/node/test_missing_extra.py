"""A subsystem whose extra is not installed: a located error naming the pip command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import pytest

from msuite.runtime.errors import NodeError
from msuite.runtime.node import Node
from msuite.runtime.testing import prepare
from msuite.spec import load_manifest


def test_metrics_without_prometheus_client_names_the_extra(
    echo_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = echo_manifest.with_name("metrics-missing.yaml")
    path.write_text(echo_manifest.read_text(encoding="utf-8") + "diagnostics:\n  metrics: true\n")
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "msuite.runtime.diagnostics.metrics", raising=False)
    node = Node(prepare(load_manifest(path), tmp_path))
    with pytest.raises(NodeError) as caught:
        node.metrics  # noqa: B018
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    assert "diagnostics.metrics: needs the metrics extra" in message
    assert "pip install 'msuite[metrics]'" in message


def test_an_unknown_missing_module_is_not_disguised(echo_manifest: Path, tmp_path: Path) -> None:
    from msuite.runtime.components import ComponentSpec
    from msuite.runtime.registry import COMPONENTS

    error = ModuleNotFoundError("No module named 'somethingelse'", name="somethingelse")

    def build(context: object) -> NoReturn:
        raise error

    table = (*COMPONENTS, ComponentSpec("broken", build))
    node = Node(prepare(load_manifest(echo_manifest), tmp_path), components=table)
    with pytest.raises(ModuleNotFoundError) as caught:
        node.build()
    assert caught.value is error
