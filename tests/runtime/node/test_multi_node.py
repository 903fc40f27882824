"""Several nodes in one process (docs/multi-node.md): each runs its own code; protobuf clashes are located.

Every project here is written into ``tmp_path`` with ``codegen.out: gen`` and an
impl module named ``service``, so all of them collide in ``sys.modules``.
protobuf's descriptor pool lives as long as the pytest process, so proto file
names and packages carry a token unique to the test (``fresh``); the clash
tests make their clash on purpose, inside that token.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from msuite.codegen import generate
from msuite.runtime.errors import NodeError
from msuite.runtime.testing import Harness, prepare, running
from msuite.spec import load_manifest, loads_manifest

PROTO = """syntax = "proto3";
package {package};
service Greeter {{
  rpc Say(Req) returns (Rep);
}}
message Req {{ string name = 1; }}
message Rep {{ string message = 1;{extra} }}
"""

IMPL = """from gen{parent} import {module}_pb2, {module}_pb2_grpc

TAG = {tag!r}


class Greeter({module}_pb2_grpc.GreeterServicer):
    def __init__(self, node):
        self.repo = node.manifest.repo

    async def Say(self, request, context):
        package = {module}_pb2.DESCRIPTOR.package
        return {module}_pb2.Rep(message=f"{{TAG}} {{package}} {{self.repo}} {{request.name}}")
"""

# the proto value stands at line 4, column 12
MANIFEST = """name: {name}
services:
  {service}:
    proto: protos/{proto}
    impl: service:Greeter
grpc:
  tcp: {{port: 0}}
"""


@dataclass(frozen=True)
class Project:
    manifest: Path
    package: str
    service: str
    proto: str
    tag: str


def project(folder: Path, *, package: str, proto: str, tag: str, extra: str = "") -> Project:
    """A generated project in ``folder``: service ``<package>.Greeter`` in ``protos/<proto>``,
    answering ``"<tag> <package of the reply's module> <repo> <name>"``."""
    path = folder / "protos" / proto
    path.parent.mkdir(parents=True)
    path.write_text(PROTO.format(package=package, extra=extra))
    *folders, module = proto[: -len(".proto")].replace("-", "_").split("/")
    parent = "".join(f".{f}" for f in folders)
    (folder / "service.py").write_text(IMPL.format(parent=parent, module=module, tag=tag))
    service = f"{package}.Greeter"
    manifest = folder / "msuite.yaml"
    manifest.write_text(MANIFEST.format(name=folder.name, service=service, proto=proto))
    generate(load_manifest(manifest))
    return Project(manifest, package, service, proto, tag)


@pytest.fixture
def fresh() -> str:
    """A token that makes proto names and packages unique in this process."""
    return f"mn{uuid.uuid4().hex[:10]}"


async def say(harness: Harness, service: str, name: str) -> str:
    """``Say`` over a real gRPC channel to the node's own TCP port; messages come from the pool.

    Returns the reply without its repository part, which is checked to be the node's.
    """
    package = service.rpartition(".")[0]
    pool = descriptor_pool.Default()
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Req"))
    reply = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Rep"))
    async with grpc.aio.insecure_channel(harness.target("tcp")) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = channel.unary_unary(
            f"/{service}/Say",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        answer = await call(request(name=name), timeout=10)
    text: str = answer.message  # type: ignore[attr-defined]  # a class built from the pool
    tag, package, repo, echoed = text.split(" ")
    assert repo == harness.node.manifest.repo
    return f"{tag} {package} {echoed}"


@asynccontextmanager
async def side_by_side(*manifests: Path) -> AsyncIterator[list[Harness]]:
    """Start a node of each manifest at the same time (their builds and starts interleave)."""
    async with AsyncExitStack() as stack:
        yield list(await asyncio.gather(*(stack.enter_async_context(running(m)) for m in manifests)))


# ----------------------------------------------------------------------------- working

PAIRS = {
    # each node's impl says `from gen import <its module>`: another node's gen must not answer
    "different protos": ("alpha.proto", "beta.proto"),
    # both generate gen/<x>_y_pb2.py, under two different names in protobuf's pool
    "one module name": ("x-y.proto", "x_y.proto"),
}


@pytest.mark.parametrize("pair", list(PAIRS.values()), ids=list(PAIRS))
async def test_nodes_of_two_manifests_each_serve_their_own_code(
    tmp_path: Path, fresh: str, pair: tuple[str, str]
) -> None:
    a = project(tmp_path / "a", package=f"{fresh}.alpha.v1", proto=f"{fresh}_{pair[0]}", tag="A")
    b = project(tmp_path / "b", package=f"{fresh}.beta.v1", proto=f"{fresh}_{pair[1]}", tag="B")
    async with side_by_side(a.manifest, b.manifest) as (ha, hb):
        assert ha.target("tcp") != hb.target("tcp")
        assert await say(ha, a.service, "x") == f"A {a.package} x"
        assert await say(hb, b.service, "y") == f"B {b.package} y"
        assert ha.wiring is not None and hb.wiring is not None
        assert ha.wiring.__file__ == str(a.manifest.parent / "gen" / "wiring.py")
        assert hb.wiring.__file__ == str(b.manifest.parent / "gen" / "wiring.py")
    # a third node of the first manifest, after the second: its own code again
    async with running(a.manifest) as again:
        assert await say(again, a.service, "z") == f"A {a.package} z"


async def test_two_nodes_of_one_manifest_run_side_by_side(tmp_path: Path, fresh: str) -> None:
    a = project(tmp_path / "a", package=f"{fresh}.v1", proto=f"{fresh}.proto", tag="A")
    async with side_by_side(a.manifest, a.manifest) as (one, two):
        assert one.target("tcp") != two.target("tcp")
        assert one.node.manifest.repo != two.node.manifest.repo
        assert one.wiring is two.wiring  # the folder's code is imported once
        assert await say(one, a.service, "1") == f"A {a.package} 1"
        assert await say(two, a.service, "2") == f"A {a.package} 2"


async def test_the_same_proto_in_two_projects_is_registered_once(tmp_path: Path, fresh: str) -> None:
    """Same name, same contents: protobuf takes the second registration as the first."""
    a = project(tmp_path / "a", package=f"{fresh}.v1", proto=f"{fresh}.proto", tag="A")
    b = project(tmp_path / "b", package=f"{fresh}.v1", proto=f"{fresh}.proto", tag="B")
    async with side_by_side(a.manifest, b.manifest) as (ha, hb):
        assert await say(ha, a.service, "x") == f"A {a.package} x"
        assert await say(hb, b.service, "y") == f"B {b.package} y"


# ----------------------------------------------------------------------------- refused


async def test_a_different_proto_under_a_taken_name_is_refused_at_its_manifest_key(
    tmp_path: Path, fresh: str
) -> None:
    a = project(tmp_path / "a", package=f"{fresh}.alpha.v1", proto=f"{fresh}.proto", tag="A")
    b = project(tmp_path / "b", package=f"{fresh}.beta.v1", proto=f"{fresh}.proto", tag="B")
    async with running(a.manifest) as ha:
        with pytest.raises(NodeError) as refused:
            async with running(b.manifest):
                pytest.fail("the second node started")
        assert await say(ha, a.service, "still") == f"A {a.package} still"
    name = f"{fresh}.proto"
    assert str(refused.value) == (
        f"{b.manifest}:4:12: services['{b.service}'].proto: protos/{name} cannot be loaded: "
        f"this process already holds a different proto file named {name}, "
        f"from {a.manifest.parent / 'gen' / f'{fresh}_pb2.py'} (node a, {a.manifest}); "
        "protobuf keeps one file per name and one definition per full name in a process: give "
        f"each proto a path matching its package ({fresh}/beta/v1/{name} for package "
        f"{fresh}.beta.v1), give different definitions different packages, or run these nodes "
        "in separate processes (docs/multi-node.md; protobuf: Couldn't build proto file into "
        f"descriptor pool: duplicate file name {name})"
    )


async def test_a_second_definition_of_a_full_name_is_refused_at_its_manifest_key(
    tmp_path: Path, fresh: str
) -> None:
    a = project(tmp_path / "a", package=f"{fresh}.v1", proto=f"{fresh}_a.proto", tag="A")
    b = project(
        tmp_path / "b", package=f"{fresh}.v1", proto=f"{fresh}_b.proto", tag="B", extra=" int32 n = 2;"
    )
    async with running(a.manifest):
        with pytest.raises(NodeError) as refused:
            async with running(b.manifest):
                pytest.fail("the second node started")
    message = str(refused.value)
    assert message.startswith(
        f"{b.manifest}:4:12: services['{b.service}'].proto: protos/{fresh}_b.proto cannot be loaded: "
        f"this process already holds a definition of {fresh}.v1.Req (in proto file {fresh}_a.proto), "
        f"from {a.manifest.parent / 'gen' / f'{fresh}_a_pb2.py'} (node a, {a.manifest}); "
    )
    assert message.endswith(f"duplicate symbol '{fresh}.v1.Req')")


# ----------------------------------------------------------------------------- the harness


def test_prepare_frees_the_p2p_port(tmp_path: Path) -> None:
    manifest = loads_manifest("name: p\nrepo: ':memory:'\np2p: {port: 4123, host: 127.0.0.1}\n")
    prepared = prepare(manifest, tmp_path)
    assert prepared.p2p is not None
    assert prepared.p2p.port == 0
    assert prepared.p2p.host == "127.0.0.1"
    assert prepare(loads_manifest("name: q\n"), tmp_path).p2p is None


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on for the test's length."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


async def test_two_prepared_p2p_nodes_of_one_manifest_start_side_by_side(
    tmp_path: Path, busy_port: int
) -> None:
    pytest.importorskip("libp2p")
    manifest = tmp_path / "msuite.yaml"
    manifest.write_text(f"name: peer\np2p: {{port: {busy_port}}}\n")
    async with side_by_side(manifest, manifest) as (one, two):
        ports = {int(h.node.p2p.addrs[0].split("/")[4]) for h in (one, two)}
        assert len(ports) == 2
        assert busy_port not in ports
        assert one.node.p2p.peer_id != two.node.p2p.peer_id


def test_importing_the_harness_leaves_codegen_unimported() -> None:
    code = "import sys, json, msuite.runtime.testing; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout)
    assert "msuite.runtime.testing" in modules
    assert [m for m in modules if m.startswith(("msuite.codegen", "jinja2", "grpc_tools"))] == []
