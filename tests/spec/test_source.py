"""Positions of keys and values in a loaded manifest, and the path syntax."""

from __future__ import annotations

import pytest

from msuite.spec import Position, format_path, load_manifest, loads_manifest, parse_path, position_of
from tests.conftest import WriteManifest

TEXT = """\
name: notes
grpc:
  tcp: {port: 10001}
services:
  notes.v1.Notes:
    proto: notes.proto
    impl: notes.service:Notes
p2p:
  bootstrap:
    - /ip4/127.0.0.1/tcp/4001/p2p/12D3KooWFtKTgYvkasSUyiY6cgysStocEqRH7uJFofmxtNRHtHHi
auth:
  acl: {/notes.v1.Notes/Delete: admin}
"""


def test_positions_of_keys_and_values(write_manifest: WriteManifest) -> None:
    path = write_manifest(TEXT)
    (path.parent / "notes.proto").write_text('syntax = "proto3";\n')
    m = load_manifest(path)
    src = m.source
    assert src is not None and src.file == str(path)
    assert src.value("grpc.tcp.port") == Position(3, 15)
    assert src.key("grpc.tcp.port") == Position(3, 9)
    assert src.key(("services", "notes.v1.Notes", "impl")) == Position(7, 5)
    assert src.value("services['notes.v1.Notes'].impl") == Position(7, 11)
    assert src.value("p2p.bootstrap[0]") == Position(10, 7)
    assert src.key("p2p.bootstrap[0]") is None  # list items have no key
    assert src.key("auth.acl['/notes.v1.Notes/Delete']") == Position(12, 9)
    assert src.where("grpc.tcp.port") == f"{path}:3:15"
    assert position_of(m, "grpc.tcp") == Position(3, 8)
    # a path the file does not contain falls back to the nearest enclosing value
    assert src.locate("grpc.tcp.host") == Position(3, 8)
    assert "grpc.tcp.port" in src and "grpc.tcp.host" not in src
    assert m.base_dir == path.parent.resolve()
    assert m.resolve("notes.proto") == (path.parent / "notes.proto").resolve()


def test_python_built_manifest_has_no_source() -> None:
    from msuite.spec import Manifest

    m = Manifest(name="x")
    assert m.source is None and position_of(m, "name") is None


def test_string_manifests_name_their_source() -> None:
    m = loads_manifest("name: x\n", file="inline.yaml")
    assert m.source is not None and m.source.where("name") == "inline.yaml:1:7"


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        (("grpc", "tcp", "port"), "grpc.tcp.port"),
        (("p2p", "bootstrap", 0), "p2p.bootstrap[0]"),
        (("services", "notes.v1.Notes", "impl"), "services['notes.v1.Notes'].impl"),
        (("auth", "acl", "/a/b"), "auth.acl['/a/b']"),
        (("config", "it's"), "config['it\\'s']"),
        ((), "<root>"),
        (("max-size",), "max-size"),
    ],
)
def test_path_text_round_trips(parts: tuple[str | int, ...], text: str) -> None:
    assert format_path(parts) == text
    assert parse_path(text) == parts


def test_bad_path_text() -> None:
    with pytest.raises(ValueError):
        parse_path("grpc..tcp[")
