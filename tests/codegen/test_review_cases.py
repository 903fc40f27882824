"""Layouts and inputs found by review of msuite generate: each failed before its fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.codegen.test_generate import BIN, msuite, run, write_case

SIMPLE = 'syntax = "proto3";\npackage {package};\nmessage {message} {{ string a = 1; }}\n'
SERVICE = (
    'syntax = "proto3";\npackage {package};\n{imports}message Req {{ string a = 1; }}\n'
    "service {service} {{\n  rpc Get(Req) returns (Req);\n}}\n"
)
HEAD = "name: x\ngrpc: {tcp: {port: 0}}\n"


def test_odd_but_valid_layouts_import_type_check_and_lint(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "project").mkdir()
    (shared / "linked.proto").write_text(SERVICE.format(package="linked.v1", imports="", service="Linked"))
    folder = write_case(
        tmp_path / "project",
        HEAD + "services:\n"
        "  p2.S: {proto: protos/p2.proto, impl: m:S}\n"
        "  ed.T: {proto: protos/ed.proto, impl: m:T}\n"
        "  a.b.U: {proto: protos/a/b.proto, impl: m:U}\n"
        "  a_b.V: {proto: protos/a_b.proto, impl: m:V}\n"
        "  pub.W: {proto: protos/pub.proto, impl: m:W}\n"
        "  linked.v1.Linked: {proto: protos/linked.proto, impl: m:L}\n"
        "p2p: true\nevents:\n"
        "  A: {n: int}\n  Ev10: {n: int}\n  Ev9: {blob: bytes, ratio: float, ratios: 'list[float]'}\n",
        {
            "p2.proto": SERVICE.format(package="p2", imports="", service="S"),
            "ed.proto": SERVICE.format(package="ed", imports="", service="T"),
            "a/b.proto": SERVICE.format(package="a.b", imports="", service="U"),
            "a_b.proto": SERVICE.format(package="a_b", imports="", service="V"),
            "base.proto": SIMPLE.format(package="pub", message="Base"),
            "pub.proto": SERVICE.format(package="pub", imports='import public "base.proto";\n', service="W"),
        },
    )
    (folder / "protos" / "linked.proto").symlink_to(shared / "linked.proto")
    generated = msuite("generate", cwd=folder)
    assert generated.returncode == 0, generated.stderr
    script = (
        "import math\nfrom gen import wiring, events\nfrom gen import pub_pb2\n"
        "assert pub_pb2.Base(a='x').a == 'x'\n"
        "assert [b.name for b in wiring.SERVICES] == "
        "['p2.S', 'ed.T', 'a.b.U', 'a_b.V', 'pub.W', 'linked.v1.Linked']\n"
        "e = events.Ev9(blob=b'\\xff\\x00', ratio=math.inf, ratios=[math.nan, 1.0])\n"
        "back = events.Ev9.from_bytes(e.to_bytes())\n"
        "assert back.blob == b'\\xff\\x00' and back.ratio == math.inf and math.isnan(back.ratios[0])\n"
        "print('ok')\n"
    )
    result = run(sys.executable, "-c", script, cwd=folder)
    assert result.stdout.strip() == "ok", result.stderr
    typed = run(str(BIN / "mypy"), "--strict", "--cache-dir", str(tmp_path / ".mypy"), "gen", cwd=folder)
    assert typed.returncode == 0, typed.stdout
    linted = run(str(BIN / "ruff"), "check", "--isolated", "gen", cwd=folder)
    assert linted.returncode == 0, linted.stdout


@pytest.mark.parametrize("out", ["protos", "keep"])
def test_an_output_folder_that_is_not_ours_is_refused(tmp_path: Path, out: str) -> None:
    folder = write_case(
        tmp_path,
        HEAD + f"codegen: {{out: {out}}}\nservices:\n  p.S: {{proto: protos/p.proto, impl: m:S}}\n",
        {"p.proto": SERVICE.format(package="p", imports="", service="S")},
    )
    (folder / "keep").mkdir()
    (folder / "keep" / "mine.txt").write_text("precious")
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert result.stderr.startswith("msuite.yaml:3:16: codegen.out: ")
    assert (folder / "protos" / "p.proto").is_file() and (
        folder / "keep" / "mine.txt"
    ).read_text() == "precious"


@pytest.mark.parametrize("out", [".", "..", "/tmp/elsewhere", "msuite.yaml"])
def test_output_folders_outside_the_project_are_invalid(tmp_path: Path, out: str) -> None:
    folder = write_case(tmp_path, f"name: x\ncodegen: {{out: '{out}'}}\n", {})
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert "codegen.out: must be a folder inside the manifest's folder" in result.stderr
    assert (folder / "msuite.yaml").is_file()


def test_a_proto_folder_named_like_a_generated_module(tmp_path: Path) -> None:
    folder = write_case(
        tmp_path,
        HEAD + "services:\n  events.v1.S: {proto: protos/events/v1/s.proto, impl: m:S}\n",
        {"events/v1/s.proto": SERVICE.format(package="events.v1", imports="", service="S")},
    )
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert "protos/events/v1/s.proto:1:1: proto: its folder events/ would hide the generated events.py" in (
        result.stderr
    )


def test_names_python_cannot_use(tmp_path: Path) -> None:
    folder = write_case(
        tmp_path,
        HEAD
        + "services:\n  k.S: {proto: protos/async/k.proto, impl: m:S}\n  j.T: {proto: protos/j.proto, impl: m:T}\n",
        {
            "async/k.proto": SERVICE.format(package="k", imports="", service="S"),
            "j.proto": 'syntax = "proto3";\npackage j;\nmessage M { string a = 1; }\n'
            "service T {\n  rpc import(M) returns (M);\n}\n",
        },
    )
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert any(
        line.startswith("protos/async/k.proto:1:1: proto: gives the Python module async.k_pb2")
        for line in lines
    )
    assert "protos/j.proto:5:7: proto: method import is not a usable Python name: rename it" in lines


def test_two_protos_giving_one_module(tmp_path: Path) -> None:
    folder = write_case(
        tmp_path,
        HEAD
        + "services:\n  a.S: {proto: protos/a-b.proto, impl: m:S}\n  b.T: {proto: protos/a_b.proto, impl: m:T}\n",
        {
            "a-b.proto": SERVICE.format(package="a", imports="", service="S"),
            "a_b.proto": SERVICE.format(package="b", imports="", service="T"),
        },
    )
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert "1:1: proto: gives the same Python module as a-b.proto: rename one of them" in result.stderr


def test_event_and_field_names_that_would_break_the_classes(tmp_path: Path) -> None:
    folder = write_case(
        tmp_path,
        "name: x\np2p: true\nevents:\n  int: {y: int}\n  Ok: {str: 'str | None', _hidden: str, datetime: datetime}\n",
        {},
    )
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "msuite.yaml:4:3: events.int: 'int' cannot name an event class",
        "msuite.yaml:5:8: events.Ok.str: 'str' cannot name a field",
        "msuite.yaml:5:27: events.Ok._hidden: '_hidden' cannot name a field",
        "msuite.yaml:5:41: events.Ok.datetime: 'datetime' cannot name a field",
    ]


def test_service_declared_in_another_proto(tmp_path: Path) -> None:
    folder = write_case(
        tmp_path,
        HEAD + "services:\n  b.T: {proto: protos/a.proto, impl: m:T}\n",
        {
            "a.proto": 'syntax = "proto3";\npackage a;\nimport "b.proto";\n',
            "b.proto": SERVICE.format(package="b", imports="", service="T"),
        },
    )
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert "services['b.T']: protos/a.proto declares no service b.T (it is in b.proto)" in result.stderr


def test_acl_for_services_without_a_package(tmp_path: Path) -> None:
    folder = write_case(
        tmp_path,
        HEAD + "services:\n  Greeter: {proto: protos/g.proto, impl: m:G}\n"
        "auth:\n  acl: {/Greeter/Hii: admin, /v1/hello: admin}\n",
        {
            "g.proto": 'syntax = "proto3";\nmessage M { string a = 1; }\nservice Greeter {\n  rpc Hi(M) returns (M);\n}\n'
        },
    )
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "msuite.yaml:6:9: auth.acl['/Greeter/Hii']: service Greeter has no method Hii; did you mean 'Hi'?"
    ]


def test_http_rule_without_a_verb(tmp_path: Path) -> None:
    folder = write_case(
        tmp_path,
        HEAD + "services:\n  h.S: {proto: protos/h.proto, impl: m:S}\n",
        {
            "h.proto": 'syntax = "proto3";\npackage h;\nimport "google/api/annotations.proto";\n'
            "message M { string a = 1; }\nservice S {\n"
            '  rpc Get(M) returns (M) { option (google.api.http) = { body: "*" }; }\n}\n'
        },
    )
    result = msuite("generate", cwd=folder)
    assert result.returncode == 1
    assert "protos/h.proto:6:" in result.stderr and "needs a verb" in result.stderr
