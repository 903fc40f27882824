"""Servicers of the two-node p2p test: each Ask calls the other node's service over libp2p."""

from __future__ import annotations

import os
import time
from typing import Any

from gen import pair_pb2, pair_pb2_grpc


async def _ask(node: Any, service: str, stub_class: Any) -> pair_pb2.Msg:
    static = service in node.manifest.discovery.static  # static addresses come first
    if not static:
        await node.p2p.find_service(service, timeout=10)
    stub = stub_class(node.grpc.client(service))
    reply: pair_pb2.Msg = await stub.Call(pair_pb2.Msg(text=node.name), timeout=10)
    return pair_pb2.Msg(text=f"{reply.text} via {'static unix' if static else 'p2p'}")


class Ping(pair_pb2_grpc.PingServicer):
    def __init__(self, node: Any) -> None:
        self.node = node
        # a slow constructor: the node's p2p host runs (and meets peers) while its gRPC server is not bound
        time.sleep(float(os.environ.get("PAIR_SLOW_START", "0")))

    async def Call(self, request: pair_pb2.Msg, context: Any) -> pair_pb2.Msg:
        return pair_pb2.Msg(text=f"ping from {self.node.name} to {request.text}")

    async def Ask(self, request: pair_pb2.Msg, context: Any) -> pair_pb2.Msg:
        return await _ask(self.node, "pair.v1.Pong", pair_pb2_grpc.PongStub)


class Pong(pair_pb2_grpc.PongServicer):
    def __init__(self, node: Any) -> None:
        self.node = node

    async def Call(self, request: pair_pb2.Msg, context: Any) -> pair_pb2.Msg:
        return pair_pb2.Msg(text=f"pong from {self.node.name} to {request.text}")

    async def Ask(self, request: pair_pb2.Msg, context: Any) -> pair_pb2.Msg:
        return await _ask(self.node, "pair.v1.Ping", pair_pb2_grpc.PingStub)
