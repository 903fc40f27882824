"""Files that are not manifests at all: each gets one located line, quickly."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from msuite.spec import MAX_MANIFEST_BYTES, ManifestError, load_manifest, loads_manifest
from msuite.spec._yaml import MAX_DEPTH, MAX_LINES, MAX_NODES, read_yaml
from tests.helpers import errors_of, located, rerun_without_privileges


def only_error(path: Path, env: dict[str, str] | None = None) -> tuple[int, int, str, str]:
    (diagnostic,) = errors_of(path, env)
    return diagnostic.line, diagnostic.column, diagnostic.path, diagnostic.message


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "msuite.yaml"
    path.write_bytes(content)
    return path


def test_empty_file(tmp_path: Path) -> None:
    assert only_error(write(tmp_path, b"")) == (
        1,
        1,
        "<root>",
        "the manifest is empty; it needs at least `name:`",
    )


def test_only_comments(tmp_path: Path) -> None:
    assert only_error(write(tmp_path, b"# nothing here\n\n"))[3].startswith("the manifest is empty")


def test_list_at_the_top(tmp_path: Path) -> None:
    line, col, path, message = only_error(write(tmp_path, b"# a list\n- name: x\n"))
    assert (line, col, path) == (2, 1, "<root>")
    assert "must be a mapping" in message and "not a list" in message


def test_scalar_at_the_top(tmp_path: Path) -> None:
    line, col, path, message = only_error(write(tmp_path, b"\n  hello\n"))
    assert (line, col, path) == (2, 3, "<root>")
    assert "not a single value" in message


def test_non_utf8_bytes_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: x\nconfig: {greeting: 'h\xe9llo'}\n")
    line, col, _, message = only_error(path)
    assert (line, col) == (2, 22)
    assert message == "not UTF-8: byte 0xe9 cannot be decoded"


def test_tab_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: x\nhttp:\n  \tport: 1\n")
    assert only_error(path)[:3] == (3, 3, "<root>")


def test_tab_inside_a_quoted_value_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, b'name: x\nconfig: {sep: "a\tb"}\n')
    assert load_manifest(path).config == {"sep": "a\tb"}


def test_anchor_and_alias_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: &n x\nconfig: {a: *n}\n")
    line, col, p, message = only_error(path)
    assert (line, col, p) == (1, 7, "name")
    assert "anchors and aliases are not supported" in message


def test_alias_bomb_never_expands(tmp_path: Path) -> None:
    # nine levels of nine aliases: 9**9 (387 million) strings if expanded
    lines = ["name: x", "config:", '  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"  a{i}: &a{i} [{refs}]")
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    line, col, p, message = only_error(path)
    assert time.monotonic() - started < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    assert (line, col, p) == (3, 7, "config.a0")
    assert "anchors and aliases" in message


def test_size_cap_is_checked_before_parsing(tmp_path: Path) -> None:
    body = b"name: x\nconfig:\n" + b"  k: v\n" * (MAX_MANIFEST_BYTES // 7 + 1)
    path = write(tmp_path, body)
    started = time.monotonic()
    line, col, p, message = only_error(path)
    assert time.monotonic() - started < 0.5  # nothing parsed
    assert (line, col, p) == (1, 1, "<root>")
    assert f"the limit is {MAX_MANIFEST_BYTES}" in message


def test_size_cap_applies_to_strings_too() -> None:
    with pytest.raises(ManifestError, match="the limit is"):
        loads_manifest("name: x\n" + "#" * MAX_MANIFEST_BYTES)


def test_a_manifest_at_the_node_cap_loads(tmp_path: Path) -> None:
    # the top mapping, name, its value, config, the config mapping: 5 nodes; then 2 per entry
    count = (MAX_NODES - 5) // 2
    lines = ["name: x", "config:"] + [f"  key{i:05d}: a setting" for i in range(count)]
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    assert len(load_manifest(path).config) == count


def test_one_node_over_the_cap_is_refused_where_it_starts(tmp_path: Path) -> None:
    count = (MAX_NODES - 5) // 2
    lines = ["name: x", "config:"] + [f"  key{i:05d}: v" for i in range(count)] + ["  extra: v"]
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    line, col, p, message = only_error(path)
    assert (line, col, p) == (len(lines), len("  extra: ") + 1, "config")  # node 5001: its value
    assert f"more than {MAX_NODES} YAML nodes" in message


def test_a_huge_flow_list_stops_at_the_node_cap(tmp_path: Path) -> None:
    # the reported case: 524k items under the byte cap of the time took 12-15 s to read
    items = MAX_MANIFEST_BYTES // 2 - 20
    path = write(tmp_path, b"name: x\nconfig: [" + b",".join([b"1"] * items) + b"]\n")
    assert os.path.getsize(path) <= MAX_MANIFEST_BYTES
    line, col, p, message = only_error(path)
    # the top mapping, name, x, config, the list: 5 nodes, so item MAX_NODES - 5 (from 0) is one too many
    assert (line, col, p) == (2, len("config: [") + 1 + 2 * (MAX_NODES - 5), "config")
    assert "YAML nodes" in message


def test_more_lines_than_the_cap_are_refused_before_parsing(tmp_path: Path) -> None:
    # blank lines cost the scanner as much as content: 1 MiB of them took 1.5 s
    path = write(tmp_path, b"name: x\n" + b"\n" * MAX_LINES)
    assert only_error(path) == (
        MAX_LINES + 1,
        1,
        "<root>",
        f"more than {MAX_LINES} lines: a manifest holds settings, not data",
    )
    trailing_newline_is_not_a_line = write(tmp_path, b"name: x\n" + b"#\n" * (MAX_LINES - 1))
    assert load_manifest(trailing_newline_is_not_a_line).name == "x"


def test_deep_flow_nesting_stops_at_the_limit(tmp_path: Path) -> None:
    depth = 60_000  # just under the byte cap
    path = write(tmp_path, b"name: x\nconfig: " + b"[" * depth + b"]" * depth + b"\n")
    line, col, p, message = only_error(path)
    assert line == 2
    assert col == len("config: ") + MAX_DEPTH  # the first list past the limit
    assert p.startswith("config[0][0]")
    assert f"nesting deeper than {MAX_DEPTH} levels" in message


def test_deep_block_nesting_stops_at_the_limit(tmp_path: Path) -> None:
    lines = ["name: x", "config:"] + ["  " * (i + 1) + f"k{i}:" for i in range(100)]
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    assert "nesting deeper than" in only_error(path)[3]


def test_missing_file(tmp_path: Path) -> None:
    assert only_error(tmp_path / "nope.yaml") == (1, 1, "<root>", "no such file")


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "msuite.yaml").write_text("name: x\n")
    line, col, p, message = only_error(tmp_path)
    assert (line, col, p) == (1, 1, "<root>")
    assert message.startswith("is a directory, not a manifest file")
    assert "did you mean" in message


def test_unset_variable_without_default(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: x\nhttp:\n  host: ${BIND_HOST}\n")
    assert only_error(path, env={})[:3] == (3, 9, "http.host")


def test_unreadable_file(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if rerun_without_privileges(request):  # root reads any file
        return
    path = write(tmp_path, b"name: x\n")
    path.chmod(0)
    assert only_error(path)[3].startswith("cannot read")


def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "msuite.yaml"
    os.mkfifo(fifo)
    assert only_error(fifo)[3] == "not a regular file"


def test_a_duplicate_key_keeps_the_first_value_and_its_positions(tmp_path: Path) -> None:
    text = "name: x\nhttp:\n  port: 1\nhttp:\n  port: 2\n  zz: 3\n"
    assert located(errors_of(write(tmp_path, text.encode()))) == [(4, 1, "http")]
    doc = read_yaml(text, "msuite.yaml", {})
    assert doc.data == {"name": "x", "http": {"port": 1}}
    assert str(doc.source.locate("http.port")) == "3:9"
    assert doc.source.value("http.zz") is None


def test_control_character_is_located_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: x\nconfig: {a: b\x00c}\n")
    line, col, p, message = only_error(path)
    assert (line, col, p) == (2, 14, "<root>")
    assert message == "U+0000 is not allowed in YAML text"


def test_keys_with_control_characters_are_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, b'name: x\n"a\\nb": 1\n')
    (diagnostic,) = errors_of(path)
    assert diagnostic.path == "['a\\nb']"
    assert diagnostic.message == "unknown key 'a\\nb'"
    assert "\n" not in str(diagnostic)


def test_set_flags_lay_settings_over_the_file_and_are_checked_like_it(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: x\nhttp: {port: 8080}\np2p: true\n")
    manifest = load_manifest(path, env={}, overrides=["http.port=0", "logging.level=debug", "p2p.port=0"])
    assert manifest.http is not None and manifest.http.port == 0
    assert manifest.logging.level == "debug"
    assert manifest.p2p is not None and manifest.p2p.port == 0
    cases = {
        "http.port=abc": (1, "http.port", "must be a whole number"),
        "http.prot=1": (1, "http.prot", "unknown key 'prot'; did you mean 'port'?"),
        "nonsense": (1, "<root>", "write --set dotted.path=value, e.g. --set http.port=0"),
    }
    for flag, (number, where, message) in cases.items():
        with pytest.raises(ManifestError) as caught:
            load_manifest(path, env={}, overrides=["logging.level=info", flag])
        ((diagnostic),) = caught.value.diagnostics
        assert (diagnostic.file, diagnostic.line, diagnostic.path) == ("--set", number + 1, where)
        assert diagnostic.message == message
    # a cross-field rule broken by a flag is located at the flag too
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, env={}, overrides=["repo=:memory:", "storage.kv=leveldb"])
    assert [(d.file, d.line, d.path) for d in caught.value.diagnostics] == [("--set", 2, "storage.kv")]


def test_set_takes_a_list_as_brackets(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: x\np2p: true\n")
    seed = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWMBAX9jnp1Pkzb89fRiMafXqCx7jc4yX72abBJpk1PN6s"
    other = seed.replace("4001", "4002")
    manifest = load_manifest(path, env={}, overrides=[f"p2p.bootstrap=[{seed}, {other}]"])
    assert manifest.p2p is not None and manifest.p2p.bootstrap == (seed, other)
    assert load_manifest(path, env={}, overrides=["p2p.bootstrap=[]"]).p2p.bootstrap == ()  # type: ignore[union-attr]
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, env={}, overrides=["p2p.bootstrap=[nowhere]"])
    ((diagnostic),) = caught.value.diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.path) == ("--set", 1, "p2p.bootstrap[0]")
