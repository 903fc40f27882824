"""Each class of manifest error, with the exact line, column and path it reports.

Lines and columns are 1-based. An unknown or duplicate key is reported at the
key; a bad value at the value; a missing key at the mapping that lacks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import WriteManifest
from tests.helpers import errors_of, located


@dataclass(frozen=True)
class Case:
    manifest: str
    expected: list[tuple[int, int, str, str]]  # line, column, path, words in the message
    env: dict[str, str] | None = None


CASES: dict[str, Case] = {
    "unknown top-level key, with a hint": Case(
        "name: n\ngrcp:\n  tcp: {port: 1}\n",
        [(2, 1, "grcp", "unknown key 'grcp'; did you mean 'grpc'?")],
    ),
    "unknown nested key, with a hint": Case(
        "name: n\nhttp:\n  port: 8080\n  gatway: true\n",
        [(4, 3, "http.gatway", "did you mean 'gateway'?")],
    ),
    "unknown key with no close match": Case(
        "name: n\nzzzzzz: 1\n",
        [(2, 1, "zzzzzz", "unknown key 'zzzzzz'")],
    ),
    "missing name": Case(
        "http: {port: 8080}\n",
        [(1, 1, "name", "required key is missing")],
    ),
    "missing nested key, at the mapping that lacks it": Case(
        "name: n\ngrpc: {tcp: {port: 1}}\nservices:\n  a.v1.S:\n    proto: p.proto\n",
        [(5, 5, "services['a.v1.S'].impl", "required key is missing")],
    ),
    "port out of range": Case(
        "name: n\nhttp: {port: 70000}\n",
        [(2, 14, "http.port", "must be at most 65535")],
    ),
    "mapping expected": Case(
        "name: n\ngrpc: 5\n",
        [(2, 7, "grpc", "must be a mapping")],
    ),
    "list expected": Case(
        "name: n\np2p:\n  bootstrap: /ip4/127.0.0.1/tcp/1\n",
        [(3, 14, "p2p.bootstrap", "must be a list")],
    ),
    "bad duration": Case(
        "name: n\nshutdown: {grace: 10 seconds}\n",
        [(2, 19, "shutdown.grace", "not a duration")],
    ),
    "duration without unit": Case(
        "name: n\ntasks:\n  idle_timeout: 15\n",
        [(3, 17, "tasks.idle_timeout", "a duration needs a unit")],
    ),
    "bad size": Case(
        "name: n\ngrpc:\n  tcp: {port: 1}\n  max_send_message_size: 4 MiBs\n",
        [(4, 26, "grpc.max_send_message_size", "not a size")],
    ),
    "bad multiaddr": Case(
        "name: n\np2p:\n  bootstrap:\n    - /ip4/999.0.0.1/tcp/1\n",
        [(4, 7, "p2p.bootstrap[0]", "bad value for multiaddr protocol 'ip4'")],
    ),
    "bad import path": Case(
        "name: n\ngrpc: {tcp: {port: 1}}\nservices:\n  a.v1.S: {proto: p.proto, impl: a.b.C}\n",
        [(4, 34, "services['a.v1.S'].impl", "module:Class")],
    ),
    "bad service name": Case(
        "name: n\ngrpc: {tcp: {port: 1}}\nservices:\n  a..S: {proto: p.proto, impl: a:C}\n",
        [(4, 3, "services['a..S']", "full proto service name")],
    ),
    "unknown role, with a hint": Case(
        "name: n\nauth:\n  acl:\n    /a.B/C: admn\n",
        [(4, 13, "auth.acl['/a.B/C']", "did you mean 'admin'?")],
    ),
    "a role of the manifest's own ladder, with a hint": Case(
        "name: n\nauth:\n  roles: [guest, user, editor, admin]\n  acl:\n    /a.B/C: editr\n    /a.B/D: none\n",
        [
            (
                5,
                13,
                "auth.acl['/a.B/C']",
                "unknown role 'editr'; did you mean 'editor'? (roles, lowest first: none, guest",
            )
        ],
    ),
    "a default role under a ladder that lacks it": Case(
        "name: n\nauth:\n  roles: [guest, admin]\n  acl: {/a.B/C: public_read}\n",
        [(4, 17, "auth.acl['/a.B/C']", "unknown role 'public_read'")],
    ),
    "a ladder listing none": Case(
        "name: n\nauth:\n  roles: [none, user]\n",
        [(3, 10, "auth.roles", "'none', the role of a caller without a token, is always the lowest")],
    ),
    "a ladder listing a role twice": Case(
        "name: n\nauth:\n  roles: [user, admin, user]\n",
        [(3, 10, "auth.roles", "role 'user' is listed twice")],
    ),
    "a role name that is not one": Case(
        "name: n\nauth:\n  roles: [user, Admin]\n",
        [(3, 17, "auth.roles[1]", "must be a role name")],
    ),
    "value outside a fixed set": Case(
        "name: n\nstorage: {kv: rocksdb}\n",
        [(2, 15, "storage.kv", "must be one of leveldb, memory")],
    ),
    "wrong apiVersion": Case(
        "apiVersion: msuite/v9\nname: n\n",
        [(1, 13, "apiVersion", "must be msuite/v1")],
    ),
    "bad node name": Case(
        "name: my node\n",
        [(1, 7, "name", "letters, digits")],
    ),
    "duplicate key": Case(
        "name: n\nhttp:\n  port: 1\n  port: 2\n",
        [(4, 3, "http.port", "duplicate key 'port' (first defined at line 3)")],
    ),
    "port used twice": Case(
        "name: n\ngrpc: {tcp: {port: 9000}}\nhttp: {port: 9000}\n",
        [(3, 14, "http.port", "port 9000 is already used by grpc.tcp.port")],
    ),
    "port used twice with a wildcard host": Case(
        "name: n\nhttp: {host: 0.0.0.0, port: 9000}\np2p: {port: 9000}\n",
        [(3, 13, "p2p.port", "already used by http.port")],
    ),
    "file sharing without p2p": Case(
        "name: n\nfiles: true\n",
        [(2, 8, "files", "needs a `p2p` section")],
    ),
    "events without p2p, at the key": Case(
        "name: n\nevents:\n  Created: {id: str}\n",
        [(2, 1, "events", "events need a `p2p` section")],
    ),
    "grpc.p2p, shared store, mdns and dht without p2p": Case(
        "name: n\ngrpc: {p2p: true}\nstorage:\n  shared: {channel: c}\ndiscovery: {mdns: true, dht: true}\n",
        [
            (2, 13, "grpc.p2p", "gRPC over libp2p needs"),
            (4, 3, "storage.shared", "shared store needs"),
            (5, 19, "discovery.mdns", "mDNS discovery needs"),
            (5, 30, "discovery.dht", "DHT discovery needs"),
        ],
    ),
    "leveldb with an in-memory repo": Case(
        'name: n\nrepo: ":memory:"\nstorage: {kv: leveldb}\n',
        [(3, 15, "storage.kv", "leveldb needs an on-disk repo")],
    ),
    "locker backend without its settings": Case(
        "name: n\nlocker: {backend: zookeeper}\n",
        [(2, 19, "locker.backend", "needs locker.hosts")],
    ),
    "locker settings of another backend": Case(
        "name: n\nlocker:\n  backend: zookeeper\n  hosts: 127.0.0.1:2181\n  url: redis://127.0.0.1:6379/0\n",
        [(5, 3, "locker.url", "locker.url is for backend redis")],
    ),
    "protocol limits out of range": Case(
        "name: n\np2p: {protocols: {timeout: 0s, max_message: 0, inbound_limit: 0}}\n",
        [
            (2, 28, "p2p.protocols.timeout", "the protocol timeout must be longer than 0"),
            (2, 45, "p2p.protocols.max_message", "must be at least 1"),
            (2, 63, "p2p.protocols.inbound_limit", "must be at least 1"),
        ],
    ),
    "proto file missing": Case(
        "name: n\ngrpc: {tcp: {port: 1}}\nservices:\n  a.v1.S:\n    proto: missing.proto\n    impl: m:C\n",
        [(5, 12, "services['a.v1.S'].proto", "proto file not found")],
    ),
    "grpc section without a listener": Case(
        "name: n\ngrpc: {health: false}\n",
        [(2, 1, "grpc", "gRPC has no listener")],
    ),
    "bad event field type": Case(
        "name: n\np2p: true\nevents:\n  Created: {id: uuid, tags: 'list[str] | None', at: datetime}\n",
        [(4, 17, "events.Created.id", "unknown event field type")],
    ),
    "bad nested event field type": Case(
        "name: n\np2p: true\nevents:\n  Created:\n    tags: list[set[str]]\n",
        [(5, 11, "events.Created.tags", "unknown event field type")],
    ),
    "ACL resource without a slash, at the key": Case(
        "name: n\nauth:\n  acl: {notes.v1.Notes/Get: admin}\n",
        [(3, 9, "auth.acl['notes.v1.Notes/Get']", "starting with '/'")],
    ),
    "min_workers above max_workers": Case(
        "name: n\ntasks: {min_workers: 9, max_workers: 3}\n",
        [(2, 22, "tasks.min_workers", "min_workers (9) is above max_workers (3)")],
    ),
    "bad static address": Case(
        "name: n\ndiscovery:\n  static: {billing.v1.Billing: 'localhost'}\n",
        [(3, 32, "discovery.static['billing.v1.Billing']", "an address is host:port")],
    ),
    "bad CORS origin": Case(
        "name: n\nhttp:\n  cors: [http://localhost:3000/app]\n",
        [(3, 9, "http.cors", "a CORS origin is")],
    ),
    "bad tracing address": Case(
        "name: n\ndiagnostics:\n  tracing: {jaeger: nohost}\n",
        [(3, 21, "diagnostics.tracing.jaeger", "must be host:port")],
    ),
    "two tracing exporters": Case(
        "name: n\ndiagnostics:\n  tracing:\n    jaeger: 127.0.0.1:6831\n    otlp: true\n",
        [(4, 5, "diagnostics.tracing.jaeger", "choose one exporter")],
    ),
    "OTLP endpoint that is not a URL": Case(
        "name: n\ndiagnostics:\n  tracing:\n    otlp: {endpoint: '127.0.0.1:4318'}\n",
        [(4, 22, "diagnostics.tracing.otlp.endpoint", "must be an http:// or https:// URL")],
    ),
    "OTLP/gRPC endpoint with a path": Case(
        "name: n\ndiagnostics:\n  tracing:\n    otlp: {endpoint: 'http://c:4317/v1/traces', protocol: grpc}\n",
        [(4, 22, "diagnostics.tracing.otlp.endpoint", "an OTLP/gRPC endpoint has no path")],
    ),
    "OTLP CA without https": Case(
        "name: n\ndiagnostics:\n  tracing:\n    otlp: {endpoint: 'http://c:4318', ca: ca.pem}\n",
        [
            (4, 39, "diagnostics.tracing.otlp.ca", "a CA file needs an https:// endpoint"),
            (4, 43, "diagnostics.tracing.otlp.ca", "CA file not found"),
        ],
    ),
    "OTLP header name with a space": Case(
        "name: n\ndiagnostics:\n  tracing:\n    otlp: {headers: {'api key': x}}\n",
        [(4, 21, "diagnostics.tracing.otlp.headers", "'api key' is not a valid header name")],
    ),
    "bootstrap peer without its ID": Case(
        "name: n\np2p:\n  bootstrap: [/ip4/127.0.0.1/tcp/4001]\n",
        [(3, 15, "p2p.bootstrap[0]", "needs its peer ID")],
    ),
    "metrics without an HTTP server": Case(
        "name: n\ndiagnostics:\n  metrics: true\n  profiling: true\n",
        [
            (3, 12, "diagnostics.metrics", "served by the HTTP server: add http:"),
            (4, 14, "diagnostics.profiling", "served by the HTTP server: add http:"),
        ],
    ),
    "unset environment variable, at the value": Case(
        "name: n\nrepo: ${REPO_DIR}\n",
        [(2, 7, "repo", "environment variable REPO_DIR is not set")],
    ),
    "required environment variable with a message": Case(
        "name: n\nconfig:\n  token: ${API_TOKEN:?ask ops for a token}\n",
        [(3, 10, "config.token", "API_TOKEN: ask ops for a token")],
    ),
    "malformed environment reference": Case(
        "name: n\nconfig:\n  a: ${NOT CLOSED\n",
        [(3, 6, "config.a", "unclosed '${'")],
    ),
    "YAML syntax error": Case(
        "name: n\nhttp: {port: 1\n",
        [(3, 1, "<root>", "YAML syntax error")],
    ),
    "unsupported tag": Case(
        "name: n\nconfig: {a: !!python/object:os.system ls}\n",
        [(2, 13, "config.a", "YAML tag !!python/object:os.system is not supported")],
    ),
    "a key that is not plain text": Case(
        "name: n\nconfig:\n  ? [a, b]\n  : 1\n",
        [(3, 5, "config", "a key must be plain text")],
    ),
    "second YAML document": Case(
        "name: n\n---\nname: m\n",
        [(2, 1, "<root>", "one YAML document")],
    ),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_error_is_located(case_id: str, write_manifest: WriteManifest) -> None:
    case = CASES[case_id]
    path = write_manifest(case.manifest)
    diagnostics = errors_of(path, env=case.env)
    assert located(diagnostics) == [(line, col, p) for line, col, p, _ in case.expected]
    for diagnostic, (_, _, _, words) in zip(diagnostics, case.expected, strict=True):
        assert words in diagnostic.message, diagnostic
        assert diagnostic.file == str(path)


def test_at_least_twenty_invalid_manifests_are_covered() -> None:
    assert len(CASES) >= 20


def test_services_without_grpc(write_manifest: WriteManifest, tmp_path: Path) -> None:
    (tmp_path / "p.proto").write_text('syntax = "proto3";\n')
    path = write_manifest("name: n\nservices:\n  a.v1.S: {proto: p.proto, impl: m:C}\n")
    assert located(errors_of(path)) == [(2, 1, "services")]


def test_every_error_is_reported_at_once(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        name: n
        grcp: {}
        http:
          port: -1
          prot: 1
          port: 2
        repo: ${UNSET}
        """
    )
    assert located(errors_of(path)) == [
        (2, 1, "grcp"),
        (4, 9, "http.port"),
        (5, 3, "http.prot"),
        (6, 3, "http.port"),
        (7, 7, "repo"),
    ]


def test_the_line_format_is_the_compilers(write_manifest: WriteManifest) -> None:
    path = write_manifest("name: n\nhttp: {port: 70000}\n")
    (diagnostic,) = errors_of(path)
    assert str(diagnostic) == f"{path}:2:14: http.port: must be at most 65535"


def test_crlf_line_endings_keep_positions(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_bytes(b"name: n\r\nhttp:\r\n  port: 8080\r\n  gatway: true\r\n")
    assert located(errors_of(path)) == [(4, 3, "http.gatway")]


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: n\nzz: 1\n")
    assert located(errors_of(path)) == [(2, 1, "zz")]


def test_interpolation_errors_are_not_repeated_by_the_schema(write_manifest: WriteManifest) -> None:
    # port: ${PORT} fails once (unset), not again as "must be a whole number"
    path = write_manifest("name: n\nhttp: {port: '${PORT}'}\n")
    assert located(errors_of(path)) == [(2, 14, "http.port")]
