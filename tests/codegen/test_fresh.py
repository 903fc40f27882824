"""``is_current``: the generated package against its sources, from the header's hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from msuite.codegen import generate, is_current
from msuite.spec import load_manifest
from tests.helpers import REPO


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "hello"
    shutil.copytree(
        REPO / "samples" / "hello", folder, ignore=shutil.ignore_patterns(".msuite", "__pycache__")
    )
    return folder


def test_the_committed_sample_is_current() -> None:
    assert is_current(load_manifest(REPO / "samples" / "hello" / "msuite.yaml"))


def test_a_changed_proto_or_manifest_is_stale_until_regenerated(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    manifest_path = folder / "msuite.yaml"
    assert is_current(load_manifest(manifest_path))
    proto = folder / "protos" / "hello.proto"
    proto.write_text(proto.read_text() + "// a comment changes the hash\n")
    assert not is_current(load_manifest(manifest_path))
    generate(load_manifest(manifest_path))
    assert is_current(load_manifest(manifest_path))
    manifest_path.write_text(manifest_path.read_text() + "# another comment\n")
    assert not is_current(load_manifest(manifest_path))


def test_missing_or_foreign_output_is_stale(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    wiring = folder / "gen" / "wiring.py"
    text = wiring.read_text()
    wiring.write_text(text.replace("(msuite ", "(msuite 0.0.0-other ", 1))
    assert not is_current(load_manifest(folder / "msuite.yaml"))
    wiring.write_text("# hand written\n")
    assert not is_current(load_manifest(folder / "msuite.yaml"))
    shutil.rmtree(folder / "gen")
    assert not is_current(load_manifest(folder / "msuite.yaml"))


def test_deleted_output_an_interpolated_input_or_a_shadowing_proto_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(tmp_path)
    manifest_path = folder / "msuite.yaml"
    (folder / "gen" / "hello_pb2.py").unlink()
    assert not is_current(load_manifest(manifest_path))
    generate(load_manifest(manifest_path))
    assert is_current(load_manifest(manifest_path))

    text = manifest_path.read_text().replace(
        "impl: hello_service:Greeter", "impl: ${IMPL:-hello_service:Greeter}"
    )
    manifest_path.write_text(text)
    generate(load_manifest(manifest_path))
    monkeypatch.setenv("IMPL", "other_module:Greeter")
    assert not is_current(load_manifest(manifest_path))  # the same bytes, another impl
    monkeypatch.delenv("IMPL")
    assert is_current(load_manifest(manifest_path))

    # an earlier include root ("protos" before ".") gains a file a later one provided
    (folder / "common.proto").write_text('syntax = "proto3";\npackage common;\nmessage C {}\n')
    proto = folder / "protos" / "hello.proto"
    proto.write_text(
        proto.read_text().replace('import "google/api', 'import "common.proto";\nimport "google/api')
    )
    generate(load_manifest(manifest_path))
    assert is_current(load_manifest(manifest_path))
    (folder / "protos" / "common.proto").write_text('syntax = "proto3";\npackage common;\nmessage C {}\n')
    assert not is_current(load_manifest(manifest_path))
