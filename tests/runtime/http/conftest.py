"""Gateway fixtures: the chat and probe cases generated and imported, a real gRPC server, a real aiohttp app."""

from __future__ import annotations

import asyncio
import base64
import importlib
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from msuite.codegen import generate
from msuite.runtime.http.gateway import Gateway
from msuite.runtime.wiring import Route
from msuite.spec import load_manifest
from tests.helpers import REPO

HERE = Path(__file__).parent
PACKAGES = ("chat_gen", "probe_gen")

Client = TestClient[web.Request, web.Application]


@dataclass
class Generated:
    chat: ModuleType  # chat_gen.wiring
    chat_pb2: ModuleType
    types_pb2: ModuleType
    probe: ModuleType  # probe_gen.wiring
    probe_pb2: ModuleType
    chat_grpc: ModuleType
    probe_grpc: ModuleType

    @property
    def routes(self) -> tuple[Route, ...]:
        return (*self.chat.ROUTES, *self.probe.ROUTES)


def _ours(name: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in PACKAGES)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """The chat codegen case and the probe case, generated into a tmp dir and imported.

    The chat case gets its own package name (``chat_gen``) so it can't meet
    another test's ``gen``; sys.path and sys.modules are restored afterwards.
    """
    root = tmp_path_factory.mktemp("gateway")
    chat = root / "chat"
    shutil.copytree(REPO / "tests" / "codegen" / "cases" / "chat", chat)
    with (chat / "msuite.yaml").open("a") as manifest:
        manifest.write("codegen: {out: chat_gen}\n")
    probe = root / "probe"
    shutil.copytree(HERE / "cases" / "probe", probe)
    for folder in (chat, probe):
        assert generate(load_manifest(folder / "msuite.yaml")).written
    assert not [name for name in sys.modules if _ours(name)]
    sys.path[:0] = [str(chat), str(probe)]
    try:
        yield Generated(
            chat=importlib.import_module("chat_gen.wiring"),
            chat_pb2=importlib.import_module("chat_gen.acme.chat.v1.chat_pb2"),
            types_pb2=importlib.import_module("chat_gen.acme.common.v1.types_pb2"),
            chat_grpc=importlib.import_module("chat_gen.acme.chat.v1.chat_pb2_grpc"),
            probe=importlib.import_module("probe_gen.wiring"),
            probe_pb2=importlib.import_module("probe_gen.probe.v1.probe_pb2"),
            probe_grpc=importlib.import_module("probe_gen.probe.v1.probe_pb2_grpc"),
        )
    finally:
        for path in (str(chat), str(probe)):
            sys.path.remove(path)
        for name in [name for name in sys.modules if _ours(name)]:
            del sys.modules[name]


# --------------------------------------------------------------------------- servicers

Context = grpc.aio.ServicerContext[Any, Any]


def _metadata_of(context: Context) -> dict[str, str]:
    seen: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        seen[key] = base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return seen


async def _act(text: str, context: Context) -> None:
    """Behave as ``text`` asks: ``status:NAME`` aborts, ``redirect`` / ``redirect-initial`` set ``location``."""
    if text.startswith("status:"):
        await context.abort(grpc.StatusCode[text.removeprefix("status:")], f"boom {text}")
    if text == "redirect":
        context.set_trailing_metadata((("location", "https://example.com/next"),))
    if text == "redirect-initial":
        await context.send_initial_metadata((("location", "/v1/rooms/moved"),))
    if text == "redirect-and-fail":
        context.set_trailing_metadata((("location", "/nowhere"),))
        await context.abort(grpc.StatusCode.NOT_FOUND, "gone")
    if text == "slow":
        await asyncio.sleep(2)


@dataclass
class Servicers:
    """What the servicers saw, and an event a streaming test releases."""

    calls: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def servicers(gen: Generated, seen: Servicers) -> dict[str, Any]:
    chat_pb2, types_pb2, probe_pb2 = gen.chat_pb2, gen.types_pb2, gen.probe_pb2

    class Chat(gen.chat_grpc.ChatServicer):  # type: ignore[name-defined,misc]
        async def Send(self, request: Any, context: Context) -> Any:
            seen.calls.append("Send")
            await _act(request.text, context)
            return chat_pb2.Ack(count=len(request.text))

        async def Tail(self, request: Any, context: Context) -> AsyncIterator[Any]:
            seen.calls.append("Tail")
            if request.id == "whoami":
                yield chat_pb2.Message(room=request.id, text=_metadata_of(context).get("authorization", "-"))
                return
            await _act(request.id, context)
            if request.id == "wait":
                yield chat_pb2.Message(room=request.id, text="first")
                try:
                    await seen.release.wait()
                except asyncio.CancelledError:
                    seen.calls.append("Tail cancelled")
                    raise
                yield chat_pb2.Message(room=request.id, text="second")
                return
            for i in range(3):
                if request.id == "fail-after-2" and i == 2:
                    await context.abort(grpc.StatusCode.DATA_LOSS, "lost the rest")
                yield chat_pb2.Message(room=request.id, text=f"m{i}")

        async def Upload(self, request_iterator: AsyncIterator[Any], context: Context) -> Any:
            seen.calls.append("Upload")
            texts = [message.text async for message in request_iterator]
            for text in texts:
                await _act(text, context)
            return chat_pb2.Ack(count=len(texts))

        async def Talk(self, request_iterator: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            seen.calls.append("Talk")
            async for message in request_iterator:
                await _act(message.text, context)
                yield chat_pb2.Message(room=message.room, text=message.text.upper())

    class Rooms(gen.chat_grpc.RoomsServicer):  # type: ignore[name-defined,misc]
        async def GetRoom(self, request: Any, context: Context) -> Any:
            seen.calls.append("GetRoom")
            if request.id == "whoami":
                return types_pb2.Room(id=request.id, title=_metadata_of(context).get("authorization", "-"))
            await _act(request.id, context)
            return types_pb2.Room(id=request.id, title="lobby")

        async def UpdateRoom(self, request: Any, context: Context) -> Any:
            seen.calls.append("UpdateRoom")
            return types_pb2.Room(id=request.id, title=f"{request.room.id}|{request.room.title}")

        async def DeleteRoom(self, request: Any, context: Context) -> Any:
            seen.calls.append(f"DeleteRoom {request.id}")
            from google.protobuf import empty_pb2

            return empty_pb2.Empty()

    class Probes(gen.probe_grpc.ProbesServicer):  # type: ignore[name-defined,misc]
        async def Echo(self, request: Any, context: Context) -> Any:
            seen.calls.append("Echo")
            return probe_pb2.ProbeReply(probe=request, metadata=_metadata_of(context))

        Only = Echo
        Plain = Echo

    return {"acme.chat.v1.Chat": Chat(), "acme.chat.v1.Rooms": Rooms(), "probe.v1.Probes": Probes()}


# --------------------------------------------------------------------------- the node


@dataclass
class Node:
    """A real gRPC server with the servicers, a channel to it, and the gateway served over HTTP."""

    gen: Generated
    seen: Servicers
    port: int
    channel: grpc.aio.Channel
    client: Client
    gateway: Gateway
    resources: list[str | None]
    serve: Callable[..., Any]


class AppServer(TestServer):
    """aiohttp's TestServer, with the runner's ``handler_cancellation`` chosen (TestServer forces True).

    The node's app runs with aiohttp's default, False: a handler is not
    cancelled when its client leaves, so the tests run that way too.
    """

    def __init__(self, app: web.Application, *, handler_cancellation: bool) -> None:
        super().__init__(app, host="127.0.0.1", port=0)
        self.handler_cancellation = handler_cancellation

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = self.handler_cancellation
        return web.AppRunner(self.app, **kwargs)


@asynccontextmanager
async def serving(
    gateway: Gateway, *, handler_cancellation: bool = False, **app_options: Any
) -> AsyncIterator[tuple[Client, list[str | None]]]:
    """An aiohttp app on 127.0.0.1 serving ``gateway``; also records ``resource_of`` of each request."""
    resources: list[str | None] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        resources.append(gateway.resource_of(request))
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[record], **app_options)
    gateway.add_to(app.router)
    client = TestClient(AppServer(app, handler_cancellation=handler_cancellation))
    await client.start_server()
    try:
        yield client, resources
    finally:
        await client.close()


@pytest.fixture
async def node(generated: Generated) -> AsyncIterator[Node]:
    seen = Servicers()
    server = grpc.aio.server()
    registered = servicers(generated, seen)
    generated.chat.register(server, registered)
    generated.probe.register(server, registered)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    gateway = Gateway(generated.routes, lambda: channel, timeout=10)
    try:
        async with serving(gateway) as (client, resources):
            yield Node(generated, seen, port, channel, client, gateway, resources, serving)
    finally:
        await channel.close()
        await server.stop(None)
