"""Random mutations of valid manifests give either a manifest or located errors.

Never an uncaught exception, never a diagnostic without a position inside the
file, never a multi-line message.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from msuite.spec import Manifest, ManifestError, loads_manifest
from tests.helpers import REPO

SAMPLE_DIR = REPO / "samples" / "hello"
BASE = (SAMPLE_DIR / "msuite.yaml").read_text(encoding="utf-8")
RICH = """\
name: rich
grpc:
  tcp: {host: 127.0.0.1, port: 10001}
  unix: {path: rich.sock}
  p2p: true
http: {port: 8080, cors: ["http://localhost:3000"], max_body_size: 1MiB}
p2p:
  port: 10000
  bootstrap: [/ip4/127.0.0.1/tcp/10010/p2p/12D3KooWFtKTgYvkasSUyiY6cgysStocEqRH7uJFofmxtNRHtHHi]
auth:
  jwt: {secret: "${JWT_SECRET:-0123456789abcdef0123456789abcdef}", ttl: 24h}
  acl: {/a.v1.S/Delete: admin, /admin/: admin}
storage: {kv: leveldb, shared: {channel: rich}}
files: true
events:
  Created: {id: str, tags: "list[str]", at: "datetime | None"}
locker: {backend: redis, url: "redis://:pw@127.0.0.1:6379/0"}
tasks: {min_workers: 2, max_workers: 20, idle_timeout: 15s}
discovery: {static: {b.v1.B: "127.0.0.1:10101"}, mdns: true, dht: true}
diagnostics: {metrics: {latency: true}, tracing: {jaeger: "127.0.0.1:6831"}}
logging: {level: info, format: json}
shutdown: {grace: 10s}
config: {greeting: hello, nested: {a: [1, 2, 3]}}
"""
SEEDS = [BASE, RICH]
YAML_BITS = list(":{}[],&*!|>'\"%@\t\n #-?$\\") + [
    "${",
    "}",
    ": ",
    "\n  ",
    "- ",
    "---\n",
    "&a ",
    "*a",
    "!!str ",
    "null",
    "true",
    "0",
    "-1",
    "99999",
    "1e9",
    ".inf",
    "\x00",
    "\xff",
    "é",
]


def check_outcome(text: str) -> None:
    try:
        result = loads_manifest(text, file="m.yaml", base_dir=SAMPLE_DIR, env={})
    except ManifestError as exc:
        assert exc.diagnostics
        lines = text.splitlines() or [""]
        for d in exc.diagnostics:
            assert d.file == "m.yaml"
            assert 1 <= d.line <= len(lines) + 1, d
            assert d.column >= 1, d
            assert d.message and "\n" not in d.message, d
            assert d.path, d
        return
    assert isinstance(result, Manifest)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        action = draw(st.sampled_from(["insert", "delete", "replace", "dup_line", "drop_line"]))
        if action == "insert":
            text = text[:at] + draw(st.sampled_from(YAML_BITS)) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 12)) :]
        elif action == "replace":
            text = text[:at] + draw(st.sampled_from(YAML_BITS)) + text[at + 1 :]
        else:
            lines = text.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            if action == "dup_line":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            text = "".join(lines)
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_text_mutations_give_a_manifest_or_located_errors(text: str) -> None:
    check_outcome(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def paths_of(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths_of(v, (*prefix, i))
    return out


def dump(data: Any) -> str:
    stream = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, stream)
    return stream.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.data())
def test_value_mutations_give_a_manifest_or_located_errors(seed: str, data: st.DataObject) -> None:
    tree = YAML(typ="safe", pure=True).load(seed)
    path = data.draw(st.sampled_from(paths_of(tree)[1:]))
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(json_values)
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=10))] = data.draw(json_values)
    check_outcome(dump(tree))


def test_the_seeds_are_valid() -> None:
    for seed in SEEDS:
        loads_manifest(seed, base_dir=SAMPLE_DIR, env={})


def test_sample_dir_exists() -> None:
    assert Path(SAMPLE_DIR, "protos", "hello.proto").is_file()
