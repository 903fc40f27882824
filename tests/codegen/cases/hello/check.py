"""Real calls through the generated wiring of the hello sample, on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio
from gen import hello_pb2, wiring
from hello_service import Greeter


class FakeNode:
    """Stands in for the node (not built yet): Greeter reads only node.config."""

    config: dict[str, Any] = {"greeting": "Hi"}


class Loopback:
    def __init__(self, port: int) -> None:
        self.port = port
        self.channels: list[grpc.aio.Channel] = []

    def channel(self, service: str) -> grpc.aio.Channel:
        assert service == "hello.v1.Greeter"
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.channels.append(channel)
        return channel


async def main() -> None:
    server = grpc.aio.server()
    wiring.register(server, {"hello.v1.Greeter": Greeter(FakeNode())})
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    source = Loopback(port)
    try:
        reply = await wiring.Clients(source).greeter().SayHello(hello_pb2.HelloRequest(name="msuite"))
        assert reply.message == "Hi, msuite!", reply.message
    finally:
        for channel in source.channels:
            await channel.close()
        await server.stop(None)
    (route,) = wiring.ROUTES
    assert (route.http_method, route.path, route.full_method) == ("GET", "/v1/hello/{name}", "/hello.v1.Greeter/SayHello")
    print("ok")


asyncio.run(main())
