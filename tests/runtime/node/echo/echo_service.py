"""Servicers of the echo test node: each Ping's `action` says how to misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from gen import echo_pb2, echo_pb2_grpc

from msuite.runtime.auth import current_principal

calls: list[str] = []


def _pong(node: Any, ping: echo_pb2.Ping, seen: int = 0) -> echo_pb2.Pong:
    principal = current_principal()
    return echo_pb2.Pong(
        text=node.config["prefix"] + ping.text,
        subject=principal.subject or "",
        role=str(principal.role),
        seen=seen,
    )


async def _act(ping: echo_pb2.Ping, context: Any) -> None:
    action = ping.action
    if action == "raise":
        raise ValueError("secret detail that must not reach the client")
    if action.startswith("abort:"):
        await context.abort(getattr(grpc.StatusCode, action[len("abort:") :]), "asked to fail")
    if action.startswith("sleep:"):
        await asyncio.sleep(float(action[len("sleep:") :]))
    if action.startswith("location:"):
        await context.send_initial_metadata((("location", action[len("location:") :]),))


class Echo(echo_pb2_grpc.EchoServicer):
    def __init__(self, node: Any) -> None:
        self.node = node
        self.finished = 0

    async def Say(self, request: echo_pb2.Ping, context: Any) -> echo_pb2.Pong:
        calls.append("Say")
        await _act(request, context)
        self.finished += 1
        return _pong(self.node, request)

    async def Shout(self, request: echo_pb2.Ping, context: Any) -> echo_pb2.Pong:
        await _act(request, context)
        return _pong(self.node, echo_pb2.Ping(text=request.text.upper()))

    async def Repeat(self, request: echo_pb2.Ping, context: Any) -> AsyncIterator[echo_pb2.Pong]:
        for i in range(request.count):
            if i == 2:
                await _act(request, context)
            yield _pong(self.node, request, seen=i)

    async def Collect(self, request_iterator: Any, context: Any) -> echo_pb2.Pong:
        texts = []
        async for ping in request_iterator:
            await _act(ping, context)
            texts.append(ping.text)
        return _pong(self.node, echo_pb2.Ping(text=",".join(texts)), seen=len(texts))

    async def Chat(self, request_iterator: Any, context: Any) -> AsyncIterator[echo_pb2.Pong]:
        seen = 0
        async for ping in request_iterator:
            await _act(ping, context)
            seen += 1
            yield _pong(self.node, ping, seen=seen)


class Admin(echo_pb2_grpc.AdminServicer):
    async def Reset(self, request: echo_pb2.Ping, context: Any) -> echo_pb2.Pong:
        return echo_pb2.Pong(text="reset")
