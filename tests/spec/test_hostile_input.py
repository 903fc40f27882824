"""Hostile and odd inputs found by review: each once crashed, leaked or misled."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from msuite.spec import (
    Locker,
    ManifestError,
    Shutdown,
    Tasks,
    load_manifest,
    loads_manifest,
)
from msuite.spec._yaml import MAX_PROBLEMS
from tests.helpers import errors_of, located


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[int, int, str, str]]:
    with pytest.raises(ManifestError) as info:
        loads_manifest(text, file="m.yaml", env=env or {})
    return [(d.line, d.column, d.path, d.message) for d in info.value.diagnostics]


# --------------------------------------------------------------------------- no tracebacks


def test_huge_integer_is_a_located_error() -> None:
    assert problems("name: x\nconfig: {a: " + "9" * 5000 + "}\n") == [
        (2, 13, "config.a", "number has more than 64 digits")
    ]


def test_huge_tagged_float_is_a_located_error() -> None:
    assert problems("name: x\nconfig: {a: !!float " + "9" * 400 + "}\n")[0][:3] == (2, 13, "config.a")


def test_huge_size_is_a_located_error() -> None:
    assert problems('name: x\nhttp: {max_body_size: "' + "9" * 400 + 'GiB"}\n') == [
        (2, 23, "http.max_body_size", "the size is too large")
    ]


def test_huge_duration_is_a_located_error() -> None:
    assert problems("name: x\nshutdown: {grace: 99999999999d}\n") == [
        (2, 19, "shutdown.grace", "the duration is too long")
    ]


@pytest.mark.parametrize(
    "text", ['name: "\\U00110000"\n', 'name: "\\UFFFFFFFF"\n', "%YAML 1.3\n---\nname: x\n"]
)
def test_parser_internal_errors_are_syntax_errors(text: str) -> None:
    ((line, _, path, message),) = problems(text)
    assert path == "<root>" and message.startswith("YAML syntax error")
    assert line >= 1


def test_unreadable_proto_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text(
        "name: x\ngrpc: {tcp: {port: 1}}\nservices: {a.B: {proto: '" + "a" * 300 + ".proto', impl: 'a:B'}}\n"
    )
    ((line, col, p, message),) = [(d.line, d.column, d.path, d.message) for d in errors_of(path)]
    assert (line, col, p) == (3, 25, "services['a.B'].proto")
    assert message.startswith("proto file cannot be read")


def test_nul_in_a_proto_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text('name: x\ngrpc: {tcp: {port: 1}}\nservices: {a.B: {proto: "a\\0b.proto", impl: "a:B"}}\n')
    ((_, _, p, message),) = [(d.line, d.column, d.path, d.message) for d in errors_of(path)]
    assert p == "services['a.B'].proto" and message == "proto file path contains a NUL character"


# --------------------------------------------------------------------------- secrets


def test_unicode_in_a_url_does_not_print_the_password() -> None:
    text = 'name: x\nlocker: {backend: redis, url: "redis://:hunter2pw\u2100@127.0.0.1:6379/0"}\n'
    ((_, _, path, message),) = problems(text)
    assert path == "locker.url" and "hunter2pw" not in message


def test_url_without_a_host_is_refused() -> None:
    # an unencoded '#' in the password leaves urlsplit with no host, and no mask
    with pytest.raises(ValidationError) as info:
        Locker(backend="redis", url="redis://:12#hunter2@127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value)
    assert "percent-encode" in str(info.value)


def test_password_in_the_query_is_masked() -> None:
    locker = Locker(backend="redis", url="redis://127.0.0.1:6379/0?password=hunter2&db=1")  # type: ignore[arg-type]
    assert str(locker.url) == "redis://127.0.0.1:6379/0?password=***&db=1"
    assert "hunter2" not in repr(locker) and "hunter2" not in locker.model_dump_json()


@pytest.mark.parametrize("value", ["TOPSECRET${pa ss}rest", "hun${ter2!}pw", "x${}y"])
def test_interpolation_errors_do_not_quote_the_value(value: str) -> None:
    ((_, _, path, message),) = problems(f"name: x\nlocker: {{backend: redis, password: '{value}'}}\n")
    assert path == "locker.password"
    for fragment in ("TOPSECRET", "rest", "ter2", "pa ss"):
        assert fragment not in message


def test_loader_error_keeps_no_validation_error_context() -> None:
    with pytest.raises(ManifestError) as info:
        loads_manifest("name: x\nauth: {jwt: {secret: tiny-secret-value}}\n")
    assert info.value.__context__ is None and info.value.__cause__ is None


# --------------------------------------------------------------------------- positions


def test_empty_value_is_reported_at_its_key_not_the_next_token() -> None:
    assert problems("name: x\nhttp:\n  port:\n\n  # the host\n  host: 127.0.0.1\n") == [
        (3, 3, "http.port", "must be a whole number")
    ]
    assert problems("name: x\ntasks:\n  # min_workers: 2\n\n\nlogging: {level: info}\n")[0][:3] == (
        2,
        1,
        "tasks",
    )


def test_discarded_duplicate_does_not_hide_an_error_in_the_kept_value() -> None:
    found = problems('name: x\nhttp: {port: notaport}\nhttp: {port: "${UNSET}"}\n')
    assert [(line, col, path) for line, col, path, _ in found] == [
        (2, 14, "http.port"),
        (3, 1, "http"),
        (3, 14, "http.port"),
    ]


# --------------------------------------------------------------------------- false or missing errors


def test_failed_interpolation_causes_no_false_rule_errors() -> None:
    assert [p[2] for p in problems('name: x\ngrpc: {tcp: "${UNSET}"}\n')] == ["grpc.tcp"]
    assert [p[2] for p in problems('name: x\np2p: "${UNSET}"\ngrpc: {p2p: true}\n')] == ["p2p"]


@pytest.mark.parametrize(
    "text",
    [
        "name: x\nconfig:\n  t: |\n    line\n    \tindented with a tab inside a block scalar\n",
        'name: x\nhttp: {cors: [\n\t"http://a"]}\n',
        'name: x\nconfig: {a: "one\n\ttwo"}\n',
    ],
)
def test_tabs_that_are_valid_yaml_are_accepted(text: str) -> None:
    loads_manifest(text)


def test_tab_indentation_is_still_refused() -> None:
    ((line, col, _, message),) = problems("name: x\nhttp:\n\tport: 1\n")
    assert (line, col) == (3, 1) and "tab" in message


def test_booleans_are_not_numbers() -> None:
    found = problems("name: x\nhttp: {port: true}\ntasks: {min_workers: true, max_workers: false}\n")
    assert [p[2] for p in found] == ["http.port", "tasks.min_workers", "tasks.max_workers"]


@pytest.mark.parametrize("host", ["999.999.999.999", "1.2.3"])
def test_impossible_ipv4_addresses_are_refused(host: str) -> None:
    assert problems(f"name: x\nhttp: {{host: '{host}'}}\n")[0][2] == "http.host"


def test_tracing_port_range() -> None:
    assert problems("name: x\ndiagnostics: {tracing: {jaeger: '127.0.0.1:99999'}}\n")[0][2] == (
        "diagnostics.tracing.jaeger"
    )


def test_localhost_and_loopback_clash() -> None:
    found = problems("name: x\nhttp: {host: localhost, port: 9000}\np2p: {host: 127.0.0.1, port: 9000}\n")
    assert found == [(3, 30, "p2p.port", "port 9000 is already used by http.port")]


def test_tags_on_keys_are_refused() -> None:
    assert problems("name: x\n!foo config: {a: 1}\n")[0][:3] == (2, 1, "config")


def test_multiaddr_port_with_non_ascii_digits() -> None:
    found = problems("name: x\np2p: {bootstrap: ['/ip4/1.2.3.4/tcp/\u00b2']}\n")
    assert found[0][3] == "bad value for multiaddr protocol 'tcp'"


def test_nan_sample_ratio() -> None:
    assert problems("name: x\ndiagnostics: {tracing: {sample_ratio: .nan}}\n")[0][2] == (
        "diagnostics.tracing.sample_ratio"
    )


def test_document_end_marker_then_more_content() -> None:
    ((_, _, _, message),) = problems("name: x\n...\nrepo: y\n")
    assert "one YAML document" in message and "---" not in message


def test_bare_document_marker_is_empty() -> None:
    ((_, _, _, message),) = problems("---\n")
    assert message.startswith("the manifest is empty")


def test_negative_durations_are_refused_from_python() -> None:
    with pytest.raises(ValidationError):
        Tasks(idle_timeout=timedelta(seconds=-5))
    with pytest.raises(ValidationError):
        Shutdown(grace=timedelta(days=-1))


# --------------------------------------------------------------------------- bounded work


def test_many_unknown_keys_stop_early(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text("name: x\n" + "".join(f"k{i}: 1\n" for i in range(2_000)))
    started = time.monotonic()
    found = errors_of(path)
    assert time.monotonic() - started < 10
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1].message == f"stopped after {MAX_PROBLEMS} problems"


def test_many_duplicate_keys_stop_early(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text("name: x\n" + "a: 1\n" * 2_000)
    found = errors_of(path)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1].message == f"stopped after {MAX_PROBLEMS} problems"
    assert located(found)[0] == (3, 1, "a")


def test_valid_manifest_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text("name: x\nhttp:\n  port: 8080\n  cors: ['*']\n")
    assert load_manifest(path).http is not None


def test_a_missing_proto_names_the_path_it_looked_for(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text(
        "name: x\ngrpc: {tcp: {port: 1}}\nservices: {a.B: {proto: protos/a.proto, impl: 'a:B'}}\n"
    )
    ((_, _, p, message),) = [(d.line, d.column, d.path, d.message) for d in errors_of(path)]
    assert p == "services['a.B'].proto"
    assert message == (
        f"proto file not found: looked for {tmp_path / 'protos' / 'a.proto'} "
        "(proto paths are relative to the manifest's folder)"
    )
