"""The msuite command line, run as a real subprocess."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import pytest

from msuite.spec import manifest_schema_text
from tests.helpers import REPO

BAD = "name: n\ngrcp: {}\nhttp: {port: 70000}\n"


def msuite(*args: str, cwd: Path | None = None, module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "msuite"] if module else [str(Path(sys.executable).parent / "msuite")]
    return subprocess.run([*command, *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.fixture
def bad_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_validate_text_ok() -> None:
    result = msuite("validate", str(REPO / "samples/hello/msuite.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid (node hello)" in result.stdout
    assert result.stderr == ""


def test_validate_defaults_to_msuite_yaml_in_cwd() -> None:
    result = msuite("validate", cwd=REPO / "samples/hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("msuite.yaml: valid")


def test_validate_text_errors(bad_manifest: Path) -> None:
    result = msuite("validate", str(bad_manifest))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad_manifest}:2:1: grcp: unknown key 'grcp'; did you mean 'grpc'?",
        f"{bad_manifest}:3:14: http.port: must be at most 65535",
        "2 problems in 1 file",
    ]
    assert "Traceback" not in result.stderr


def test_validate_json(bad_manifest: Path) -> None:
    good = REPO / "samples/hello/msuite.yaml"
    result = msuite("validate", "--format", "json", str(good), str(bad_manifest))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["files"] == [
        {"file": str(good), "valid": True, "name": "hello"},
        {"file": str(bad_manifest), "valid": False, "errors": 2},
    ]
    assert report["diagnostics"][1] == {
        "file": str(bad_manifest),
        "line": 3,
        "column": 14,
        "path": "http.port",
        "message": "must be at most 65535",
    }


def test_validate_json_ok() -> None:
    result = msuite("validate", "--format", "json", str(REPO / "samples/hello/msuite.yaml"))
    assert result.returncode == 0
    assert json.loads(result.stdout)["valid"] is True


def test_validate_github(bad_manifest: Path) -> None:
    result = msuite("validate", "--format", "github", str(bad_manifest))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"::error file={bad_manifest},line=2,col=1::grcp: unknown key 'grcp'; did you mean 'grpc'?",
        f"::error file={bad_manifest},line=3,col=14::http.port: must be at most 65535",
    ]


def test_github_format_escapes_properties(tmp_path: Path) -> None:
    path = tmp_path / "a,b:c.yaml"
    path.write_text("name: n\nzz: 1\n")
    result = msuite("validate", "--format", "github", str(path))
    assert f"file={tmp_path}/a%2Cb%3Ac.yaml,line=2,col=1::" in result.stdout


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"- a\n",
        b"\xff\xfe",
        b"name: x\n\tbad: 1\n",
        b"name: x\nconfig: {a: &x 1, b: *x}\n",
        b"[" * 10000,
    ],
)
def test_bad_input_never_shows_a_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_bytes(content)
    result = msuite("validate", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{path}:")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    result = msuite("validate", str(tmp_path / "nope.yaml"), str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}:1:1: <root>: no such file" in result.stderr
    assert f"{tmp_path}:1:1: <root>: is a directory" in result.stderr


def test_python_dash_m_is_the_same_command(bad_manifest: Path) -> None:
    assert (
        msuite("validate", str(bad_manifest), module=True).stderr
        == msuite("validate", str(bad_manifest)).stderr
    )
    assert "usage: msuite" in msuite("--help", module=True).stdout


def test_usage_errors_exit_2() -> None:
    assert msuite("validate", "--format", "xml").returncode == 2
    assert msuite().returncode == 2


def test_schema_prints_the_committed_schema(tmp_path: Path) -> None:
    result = msuite("schema")
    assert result.returncode == 0
    assert result.stdout == manifest_schema_text()
    out = tmp_path / "schema.json"
    assert msuite("schema", "-o", str(out)).returncode == 0
    assert out.read_text() == (REPO / "schemas/msuite.schema.json").read_text()


def test_init_creates_the_hello_sample(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    result = msuite("init", str(target))
    assert result.returncode == 0, result.stderr
    comparison = filecmp.dircmp(target, REPO / "samples/hello", ignore=["__pycache__", ".msuite", "gen"])
    assert_same_tree(comparison)
    validated = msuite("validate", str(target / "msuite.yaml"))
    assert validated.returncode == 0, validated.stderr


def assert_same_tree(comparison: filecmp.dircmp[str]) -> None:
    assert comparison.left_only == [] and comparison.right_only == []
    _, mismatch, errors = filecmp.cmpfiles(
        comparison.left, comparison.right, comparison.common_files, shallow=False
    )
    assert mismatch == [] and errors == []
    for sub in comparison.subdirs.values():
        assert_same_tree(sub)


def test_init_declares_what_the_runtime_serves(tmp_path: Path) -> None:
    from msuite.spec import load_manifest

    msuite("init", str(tmp_path))
    m = load_manifest(tmp_path / "msuite.yaml")
    assert m.grpc is not None and m.grpc.tcp is not None and m.grpc.tcp.port != 0
    assert m.grpc.tcp.host == "127.0.0.1" and m.grpc.unix is not None
    assert m.http is not None and m.http.gateway and m.diagnostics.status
    assert list(m.services) == ["hello.v1.Greeter"]


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "msuite.yaml").write_text("name: mine\n")
    result = msuite("init", str(tmp_path))
    assert result.returncode == 1
    assert "would overwrite msuite.yaml" in result.stderr
    assert (tmp_path / "msuite.yaml").read_text() == "name: mine\n"
    assert msuite("init", "--force", str(tmp_path)).returncode == 0
    assert "name: hello" in (tmp_path / "msuite.yaml").read_text()


def test_init_with_a_name(tmp_path: Path) -> None:
    assert msuite("init", "--name", "greeter", str(tmp_path)).returncode == 0
    assert "\nname: greeter\n" in (tmp_path / "msuite.yaml").read_text()
    assert msuite("validate", str(tmp_path / "msuite.yaml")).returncode == 0
    assert msuite("init", "--name", "bad name", str(tmp_path / "x")).returncode == 2
