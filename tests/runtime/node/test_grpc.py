"""The gRPC server: both listeners, the interceptor chain, streaming, health, reflection, drain."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from msuite.runtime.errors import StartError
from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, prepare, running
from msuite.spec import load_manifest


@pytest.fixture
async def echo(echo_manifest: Path) -> AsyncIterator[Harness]:
    async with running(echo_manifest) as harness:
        yield harness


async def test_the_same_services_answer_on_tcp_and_unix(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    for kind in ("tcp", "unix"):
        async with grpc.aio.insecure_channel(echo.target(kind)) as channel:
            reply = await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(text=kind))
            assert reply.text == f"echo: {kind}"
            assert reply.role == "none"
    servicer = echo.node.grpc.server.servicers["echo.v1.Echo"]
    assert servicer.finished == 2  # one instance serves both listeners
    assert [k for k, _ in echo.node.listeners()] == ["grpc.tcp", "grpc.unix", "http"]


async def test_an_exception_becomes_internal_without_its_details(
    echo: Harness, echo_pb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    echo_pb2, _ = echo_pb
    with caplog.at_level(logging.ERROR, logger="msuite.grpc"), pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo.clients.echo().Say(echo_pb2.Ping(text="x", action="raise"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
    assert "secret" not in str(caught.value.debug_error_string())
    logged = [r for r in caplog.records if r.name == "msuite.grpc"]
    assert logged and logged[0].exc_info is not None
    assert "secret detail" in str(logged[0].exc_info[1])


@pytest.mark.parametrize("code", ["NOT_FOUND", "INVALID_ARGUMENT", "ALREADY_EXISTS", "UNAVAILABLE"])
async def test_statuses_set_by_the_handler_pass_through(echo: Harness, echo_pb: Any, code: str) -> None:
    echo_pb2, _ = echo_pb
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo.clients.echo().Say(echo_pb2.Ping(action=f"abort:{code}"))
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert caught.value.details() == "asked to fail"


async def test_all_streaming_kinds(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, _ = echo_pb
    stub = echo.clients.echo()
    replies = [r.seen async for r in stub.Repeat(echo_pb2.Ping(text="r", count=4))]
    assert replies == [0, 1, 2, 3]

    async def pings() -> AsyncIterator[Any]:
        for text in ("a", "b", "c"):
            yield echo_pb2.Ping(text=text)

    collected = await stub.Collect(pings())
    assert (collected.text, collected.seen) == ("echo: a,b,c", 3)
    chatted = [(r.text, r.seen) async for r in stub.Chat(pings())]
    assert chatted == [("echo: a", 1), ("echo: b", 2), ("echo: c", 3)]


async def test_errors_mid_stream_are_recovered_too(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, _ = echo_pb
    call = echo.clients.echo().Repeat(echo_pb2.Ping(text="r", count=5, action="raise"))
    seen = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in call:
            seen.append(reply.seen)
    assert seen == [0, 1]
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"


async def test_methods_the_impl_leaves_out_are_unimplemented(echo: Harness, echo_pb: Any) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    stub = echo_pb2_grpc.AdminStub(echo.node.grpc.client("echo.v1.Admin"))
    meta = echo.metadata("admin")
    assert (await stub.Reset(echo_pb2.Ping(), metadata=meta)).text == "reset"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Wipe(echo_pb2.Ping(), metadata=meta)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/echo.v1.Admin/Wipe is not implemented by echo_service:Admin" in str(caught.value.details())


async def test_a_missing_method_is_named_in_a_startup_warning(
    echo_manifest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="msuite.grpc"):
        async with running(echo_manifest):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "echo_service:Admin does not implement /echo.v1.Admin/Wipe: calls answer UNIMPLEMENTED"
    ]


async def test_health_is_serving_then_not_serving_while_draining(echo: Harness) -> None:
    async with grpc.aio.insecure_channel(echo.target("tcp")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "echo.v1.Echo"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await echo.node.grpc.server.draining()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_services(echo: Harness) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(echo.target("tcp")) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[Any]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for reply in stub.ServerReflectionInfo(ask()):
            names = {s.name for s in reply.list_services_response.service}
            break
    assert {"echo.v1.Echo", "echo.v1.Admin", "grpc.health.v1.Health"} <= names


async def test_health_and_reflection_can_be_turned_off(echo_manifest: Path, tmp_path: Path) -> None:
    manifest = prepare(load_manifest(echo_manifest), tmp_path)
    assert manifest.grpc is not None
    manifest = manifest.model_copy(
        update={"grpc": manifest.grpc.model_copy(update={"health": False, "reflection": False})}
    )
    async with running(manifest) as echo, grpc.aio.insecure_channel(echo.target("tcp")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_taken_tcp_port_fails_instead_of_sharing_it(
    echo: Harness, echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    port = int(echo.target("tcp").rsplit(":", 1)[1])
    manifest = prepare(load_manifest(echo_manifest), tmp_path)
    assert manifest.grpc is not None and manifest.grpc.tcp is not None
    grpc_settings = manifest.grpc.model_copy(
        update={"tcp": manifest.grpc.tcp.model_copy(update={"port": port}), "unix": None}
    )
    second = Node(manifest.model_copy(update={"grpc": grpc_settings}))
    with pytest.raises(StartError) as caught:
        await second.start()
    assert caught.value.component == "grpc"
    assert f"cannot listen on 127.0.0.1:{port}" in str(caught.value)
    assert "msuite.yaml:" in str(caught.value) and "grpc.tcp.port" in str(caught.value)
    # the first node still answers every call (with SO_REUSEPORT it would lose some)
    echo_pb2, _ = echo_pb
    for _ in range(10):
        assert (await echo.clients.echo().Say(echo_pb2.Ping(text="still"))).text == "echo: still"


async def test_a_unix_socket_in_use_is_refused_and_a_stale_one_replaced(
    echo: Harness, tmp_path: Path
) -> None:
    path = echo.target("unix")[len("unix:") :]
    manifest = echo.node.manifest
    assert manifest.grpc is not None
    with pytest.raises(StartError, match="is in use by another running server"):
        await Node(manifest.model_copy(update={"repo": str(tmp_path / "r2")})).start()
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens
    assert manifest.grpc.unix is not None and manifest.grpc.tcp is not None
    settings = manifest.grpc.model_copy(
        update={
            "unix": manifest.grpc.unix.model_copy(update={"path": str(stale)}),
            "tcp": manifest.grpc.tcp.model_copy(update={"port": 0}),
        }
    )
    revived = Node(manifest.model_copy(update={"grpc": settings, "http": None, "repo": str(tmp_path / "r3")}))
    async with revived, grpc.aio.insecure_channel(f"unix:{stale}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # the first node's socket was left alone: it still answers there
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_message_size_limits(echo_manifest: Path, tmp_path: Path, echo_pb: Any) -> None:
    manifest = prepare(load_manifest(echo_manifest), tmp_path)
    assert manifest.grpc is not None
    small = manifest.model_copy(
        update={"grpc": manifest.grpc.model_copy(update={"max_receive_message_size": 1024})}
    )
    echo_pb2, _ = echo_pb
    async with running(small) as echo:
        assert (await echo.clients.echo().Say(echo_pb2.Ping(text="x" * 900))).text.endswith("x")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo.clients.echo().Say(echo_pb2.Ping(text="x" * 2000))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_stop_lets_in_flight_calls_finish_and_refuses_new_ones(
    echo_manifest: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    async with running(echo_manifest) as echo:
        target = echo.target("tcp")
        async with grpc.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Say(echo_pb2.Ping(text="warm"))
            slow = asyncio.ensure_future(stub.Say(echo_pb2.Ping(text="slow", action="sleep:0.5")))
            await asyncio.sleep(0.1)
            stopping = asyncio.ensure_future(echo.node.stop())
            await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Say(echo_pb2.Ping(text="late"), timeout=1)
            assert (await slow).text == "echo: slow"
            await stopping
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert echo.node.state == "stopped"


async def test_a_failing_call_hook_is_recovered_like_a_handler(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    class Broken:
        def prepare(self, method: str, kind: str) -> Any:
            def begin(context: Any) -> Any:
                raise RuntimeError("hook secret")

            return begin

    node = Node(prepare(load_manifest(echo_manifest), tmp_path))
    node.grpc.server.hooks.append(Broken())
    echo_pb2, echo_pb2_grpc = echo_pb
    async with node, grpc.aio.insecure_channel(node.grpc.server.local_target) as channel:
        for call in (
            echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping()),
            echo_pb2_grpc.EchoStub(channel).Repeat(echo_pb2.Ping(count=1)).read(),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert caught.value.details() == "internal error"


async def test_a_failed_unix_listener_leaves_no_tcp_port_bound(echo: Harness, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifest = echo.node.manifest  # its Unix socket is in use by `echo`
    assert manifest.grpc is not None and manifest.grpc.tcp is not None
    settings = manifest.grpc.model_copy(update={"tcp": manifest.grpc.tcp.model_copy(update={"port": port})})
    node = Node(manifest.model_copy(update={"grpc": settings, "http": None, "repo": str(tmp_path / "r")}))
    with pytest.raises(StartError, match="in use by another running server"):
        await node.start()
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # free: nothing of the failed node listens


async def test_a_hook_failing_to_begin_ends_the_hooks_that_began(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    ended: list[str] = []

    class Recording:
        def prepare(self, method: str, kind: str) -> Any:
            def begin(context: Any) -> Any:
                return lambda code, elapsed: ended.append(code.name)

            return begin

    class Broken:
        def prepare(self, method: str, kind: str) -> Any:
            def begin(context: Any) -> Any:
                raise RuntimeError("no")

            return begin

    node = Node(prepare(load_manifest(echo_manifest), tmp_path))
    node.grpc.server.hooks.extend([Recording(), Broken()])
    echo_pb2, echo_pb2_grpc = echo_pb
    async with node, grpc.aio.insecure_channel(node.grpc.server.local_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping())
    assert ended == ["INTERNAL"]


async def test_a_service_whose_proto_declares_no_messages_of_its_own_is_served(tmp_path: Path) -> None:
    """Its _pb2_grpc module does not import its _pb2 (nothing to import), so the service's file was
    never in the descriptor pool: `Couldn't find service` at start."""
    from msuite.codegen import generate
    from msuite.runtime.loading import import_from
    from msuite.runtime.testing import running

    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "noown_types.proto").write_text(
        'syntax = "proto3";\npackage noown.v1;\nmessage Ask { string text = 1; }\nmessage Said { string text = 1; }\n'
    )
    (tmp_path / "protos" / "noown_service.proto").write_text(
        'syntax = "proto3";\npackage noown.v1;\nimport "noown_types.proto";\n'
        "service Parrot { rpc Say(Ask) returns (Said); }\n"
    )
    (tmp_path / "parrot.py").write_text(
        "from gen import noown_types_pb2, noown_service_pb2_grpc\n\n"
        "class Parrot(noown_service_pb2_grpc.ParrotServicer):\n"
        "    async def Say(self, request, context):\n"
        "        return noown_types_pb2.Said(text='parrot: ' + request.text)\n"
    )
    (tmp_path / "msuite.yaml").write_text(
        "name: parrot\nservices:\n  noown.v1.Parrot:\n    proto: protos/noown_service.proto\n"
        "    impl: parrot:Parrot\ngrpc:\n  tcp: {port: 0}\n"
    )
    generate(load_manifest(tmp_path / "msuite.yaml"))
    async with running(tmp_path / "msuite.yaml") as harness:
        types = import_from(tmp_path, "gen.noown_types_pb2")
        stubs = import_from(tmp_path, "gen.noown_service_pb2_grpc")
        async with grpc.aio.insecure_channel(harness.target("tcp")) as channel:
            reply = await stubs.ParrotStub(channel).Say(types.Ask(text="hi"))
        assert reply.text == "parrot: hi"


def _impl_project(tmp_path: Path, body: str) -> Path:
    """A copy of the echo node whose Echo impl is a subclass with ``body`` (lifecycle hooks)."""
    from tests.runtime.conftest import ECHO

    folder = tmp_path / "echo"
    shutil.copytree(ECHO, folder, ignore=shutil.ignore_patterns("gen", ".msuite"))
    (folder / "hooked.py").write_text(
        "import asyncio\nfrom echo_service import Echo as Base\n\nEVENTS = []\n\n"
        "class Echo(Base):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    manifest = folder / "msuite.yaml"
    manifest.write_text(manifest.read_text().replace("echo_service:Echo", "hooked:Echo"))
    from msuite.codegen import generate

    generate(load_manifest(manifest))
    return manifest


async def test_impls_start_before_the_first_call_and_stop_after_the_last(tmp_path: Path) -> None:
    manifest = _impl_project(
        tmp_path,
        """
        async def on_start(self):
            await asyncio.sleep(0)
            EVENTS.append(("on_start", self.node.state, self.node.tasks is not None))

        def on_stop(self):
            EVENTS.append(("on_stop", self.node.state))
        """,
    )
    from msuite.runtime.loading import import_from

    node = Node(prepare(load_manifest(manifest), tmp_path / "run"))
    node.build()
    events = import_from(manifest.parent, "hooked").EVENTS
    assert events == []
    async with node:
        assert events == [("on_start", "starting", True)]
    assert events == [("on_start", "starting", True), ("on_stop", "draining")]


async def test_an_impl_failing_to_start_is_located_and_nothing_is_served(tmp_path: Path) -> None:
    manifest = _impl_project(
        tmp_path,
        """
        async def on_start(self):
            raise RuntimeError("no cache")
        """,
    )
    node = Node(prepare(load_manifest(manifest), tmp_path / "run"))
    with pytest.raises(StartError) as caught:
        await node.start()
    assert caught.value.component == "grpc"
    first, *frames = str(caught.value).splitlines()
    assert "services['echo.v1.Echo'].impl: hooked:Echo.on_start() raised RuntimeError: no cache" in first
    assert frames[0].startswith(f'  File "{manifest.parent / "hooked.py"}", line ')
    assert node.components == [] and node.grpc.server.listeners == []


async def test_every_on_stop_runs_and_their_errors_come_together(tmp_path: Path) -> None:
    manifest = _impl_project(
        tmp_path,
        """
        def on_stop(self):
            raise ValueError("flush failed")
        """,
    )
    node = Node(prepare(load_manifest(manifest), tmp_path / "run"))
    await node.start()
    with pytest.raises(ExceptionGroup) as caught:
        await node.stop()
    messages = [str(e) for e in caught.value.exceptions]
    assert any("hooked:Echo.on_stop() raised ValueError: flush failed" in m for m in messages), messages
    assert node.state == "stopped"
