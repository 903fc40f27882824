"""The hello.v1.Greeter service of the hello node."""

from __future__ import annotations

from typing import Any

import grpc

# Written by `msuite generate` from protos/hello.proto.
from gen import hello_pb2, hello_pb2_grpc


class Greeter(hello_pb2_grpc.GreeterServicer):
    """Greets with `config.greeting` from msuite.yaml."""

    def __init__(self, node: Any) -> None:
        self.greeting = str(node.config.get("greeting", "Hello"))

    async def SayHello(
        self, request: hello_pb2.HelloRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> hello_pb2.HelloReply:
        return hello_pb2.HelloReply(message=f"{self.greeting}, {request.name or 'world'}!")
