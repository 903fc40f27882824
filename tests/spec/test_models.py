"""The models as a Python API: defaults, typed values, frozen, secrets kept secret."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from msuite.spec import (
    GRPC,
    HTTP,
    JWT,
    P2P,
    Auth,
    Locker,
    Manifest,
    ManifestError,
    Role,
    SecretURL,
    TCPListener,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from msuite.spec import models as models_module

SECRET = "s3cr3t-value-that-is-long-enough-32b"


def test_a_manifest_needs_only_a_name() -> None:
    m = Manifest(name="web", http=HTTP(port=8080))
    assert m.http is not None and m.http.port == 8080 and m.http.host == "127.0.0.1"
    assert m.api_version == "msuite/v1"
    assert m.grpc is None and m.p2p is None and m.auth is None and m.locker is None
    assert m.tasks.max_workers == 20 and m.tasks.idle_timeout == timedelta(seconds=15)
    assert m.shutdown.grace == timedelta(seconds=10)
    assert m.kv_backend == "leveldb" and not m.in_memory
    assert m.source is None


def test_name_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        Manifest()  # type: ignore[call-arg]
    assert info.value.errors()[0]["loc"] == ("name",)


def test_apiversion_alias_and_python_name_both_work() -> None:
    assert Manifest.model_validate({"apiVersion": "msuite/v1", "name": "a"}).api_version == "msuite/v1"
    assert Manifest(name="a", api_version="msuite/v1").api_version == "msuite/v1"


def test_models_are_frozen_and_refuse_unknown_keys() -> None:
    m = Manifest(name="web")
    with pytest.raises(ValidationError):
        m.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        HTTP(port=1, gatway=True)  # type: ignore[call-arg]


def test_every_listener_binds_loopback_by_default() -> None:
    assert TCPListener().host == "127.0.0.1"
    assert HTTP().host == "127.0.0.1"
    assert P2P().host == "127.0.0.1"


def test_true_turns_a_section_on_with_defaults() -> None:
    m = Manifest.model_validate({"name": "a", "p2p": True, "http": {}, "diagnostics": {"metrics": True}})
    assert m.p2p == P2P()
    assert m.diagnostics.metrics is not None and m.diagnostics.metrics.latency is False
    assert Manifest.model_validate({"name": "a", "p2p": False}).p2p is None


def test_every_field_has_a_description() -> None:
    missing = []
    for name in dir(models_module):
        model = getattr(models_module, name)
        if (
            isinstance(model, type)
            and issubclass(model, BaseModel)
            and model.__module__ == models_module.__name__
        ):
            missing += [f"{name}.{f}" for f, info in model.model_fields.items() if not info.description]
    assert missing == []


def test_only_name_and_section_keys_are_required() -> None:
    required = [f for f, info in Manifest.model_fields.items() if info.is_required()]
    assert required == ["name"]


def test_semantic_rules_apply_to_python_built_manifests() -> None:
    with pytest.raises(ManifestError) as info:
        Manifest(name="a", grpc=GRPC(p2p=True))
    assert str(info.value) == (
        "<python>: grpc.p2p: gRPC over libp2p needs a `p2p` section (libp2p host); "
        "add `p2p: true` or remove this"
    )
    with pytest.raises(ManifestError, match=r"already used by grpc\.tcp\.port"):
        Manifest(name="a", grpc=GRPC(tcp=TCPListener(port=9000)), http=HTTP(port=9000))
    with pytest.raises(ManifestError, match="leveldb needs an on-disk repo"):
        Manifest.model_validate({"name": "a", "repo": ":memory:", "storage": {"kv": "leveldb"}})


def test_rule_errors_do_not_carry_the_input() -> None:
    # pydantic would wrap a ValueError with the whole input dict, secrets included
    data = {
        "name": "a",
        "grpc": {"p2p": True},
        "auth": {"jwt": {"secret": SECRET}},
        "locker": {"backend": "redis", "url": "redis://:hunter2pass@127.0.0.1:6379/0"},
    }
    with pytest.raises(ManifestError) as info:
        Manifest.model_validate(data)
    assert info.value.__context__ is None
    assert SECRET not in repr(info.value.diagnostics) and "hunter2pass" not in str(info.value)


def test_ephemeral_ports_never_clash() -> None:
    m = Manifest(name="a", grpc=GRPC(tcp=TCPListener(port=0)), http=HTTP(port=0), p2p=P2P(port=0))
    assert m.http is not None and m.http.port == 0


def test_same_port_on_different_hosts_is_allowed() -> None:
    Manifest(
        name="a",
        grpc=GRPC(tcp=TCPListener(host="127.0.0.1", port=9000)),
        http=HTTP(host="::1", port=9000),
    )


def test_memory_repo_defaults_to_memory_store() -> None:
    assert Manifest(name="a", repo=":memory:").kv_backend == "memory"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15),
        ("24h", 86400),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("2d", 172800),
        ("250us", 0.00025),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    value = parse_duration(text)
    assert value == timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["15", "s", "1 h", "1x", "-1s", "", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_serialises_as_text() -> None:
    assert Manifest(name="a").model_dump(mode="json")["shutdown"]["grace"] == "10s"
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(milliseconds=500)) == "500ms"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256KiB", 262144),
        ("4MiB", 4194304),
        ("1GB", 10**9),
        ("1 kb", 1000),
        ("10B", 10),
        (1024, 1024),
        ("1.5KiB", 1536),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["4 MiBs", "1.3B", "lots", True, -1])
def test_bad_sizes(text: object) -> None:
    with pytest.raises((ValueError, ValidationError)):
        GRPC(tcp=TCPListener(), max_send_message_size=text)  # type: ignore[arg-type]


def test_size_formatting() -> None:
    assert format_size(262144) == "256KiB"
    assert format_size(1000) == "1000"


@pytest.mark.parametrize(
    "addr",
    [
        "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
        "/ip6/::1/tcp/4001",
        "/dns4/node.example/tcp/4001/ws",
        "/unix/tmp/node.sock",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
    ],
)
def test_good_multiaddrs(addr: str) -> None:
    assert P2P(bootstrap=[addr]).bootstrap == (addr,)


@pytest.mark.parametrize(
    "addr", ["ip4/127.0.0.1", "/ip4/300.1.1.1/tcp/1", "/ip4/127.0.0.1/tcp/99999", "/foo/1", "/ip4", "/tcp/1/"]
)
def test_bad_multiaddrs(addr: str) -> None:
    with pytest.raises(ValidationError):
        P2P(bootstrap=[addr])


def test_roles_are_ordered() -> None:
    order = [r.value for r in Role]
    assert order == [
        "none",
        "public_read",
        "public_write",
        "authenticated_read",
        "authenticated_write",
        "admin",
    ]
    assert Role.ADMIN.allows(Role.AUTHENTICATED_WRITE)
    assert not Role.AUTHENTICATED_WRITE.allows(Role.ADMIN)
    assert Role.NONE.allows(Role.NONE)
    assert Auth(acl={"/a.B/C": "admin"}).acl["/a.B/C"] == "admin"


def test_jwt_secret_is_never_shown() -> None:
    m = Manifest(name="a", auth=Auth(jwt=JWT(secret=SECRET)))  # type: ignore[arg-type]
    assert m.auth is not None and m.auth.jwt is not None
    assert m.auth.jwt.secret.get_secret_value() == SECRET
    for text in (repr(m), str(m), m.model_dump_json(), str(m.model_dump())):
        assert SECRET not in text


def test_short_jwt_secret_error_does_not_echo_it() -> None:
    with pytest.raises(ValidationError) as info:
        JWT(secret="tiny-secret-1234")  # type: ignore[arg-type]
    assert "tiny-secret-1234" not in str(info.value)
    assert "at least 32 bytes" in str(info.value)


def test_password_in_url_is_masked() -> None:
    locker = Locker(backend="redis", url="redis://user:hunter2pass@127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert locker.url is not None
    assert locker.url.get_secret_value() == "redis://user:hunter2pass@127.0.0.1:6379/0"
    assert str(locker.url) == "redis://user:***@127.0.0.1:6379/0"
    for text in (repr(locker), locker.model_dump_json(), str(locker.model_dump())):
        assert "hunter2pass" not in text
    assert SecretURL("redis://127.0.0.1:6379/0").masked == "redis://127.0.0.1:6379/0"


def test_bad_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ValidationError) as info:
        Locker(backend="redis", url="redis://:hunter2pass@127.0.0.1:notaport/0")  # type: ignore[arg-type]
    assert "hunter2pass" not in str(info.value)


def test_locker_password_is_secret() -> None:
    locker = Locker(backend="redis", url="redis://127.0.0.1:6379/0", password="hunter2pass")  # type: ignore[arg-type]
    assert "hunter2pass" not in repr(locker) and "hunter2pass" not in locker.model_dump_json()


def test_config_is_free_form() -> None:
    m = Manifest(name="a", config={"nested": {"list": [1, 2]}, "x": None})
    assert m.config["nested"]["list"] == [1, 2]
