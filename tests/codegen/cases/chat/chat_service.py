"""Servicers of the chat test case, typed against the generated stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from gen.acme.chat.v1 import chat_pb2, chat_pb2_grpc
from gen.acme.common.v1 import types_pb2
from google.protobuf import empty_pb2

Context = grpc.aio.ServicerContext[Any, Any]


class Chat(chat_pb2_grpc.ChatServicer):
    async def Send(self, request: chat_pb2.Message, context: Context) -> chat_pb2.Ack:
        return chat_pb2.Ack(count=len(request.text))

    async def Tail(self, request: chat_pb2.GetRoomRequest, context: Context) -> AsyncIterator[chat_pb2.Message]:
        for i in range(3):
            yield chat_pb2.Message(room=request.id, text=f"m{i}")

    async def Upload(self, request_iterator: AsyncIterator[chat_pb2.Message], context: Context) -> chat_pb2.Ack:
        count = 0
        async for _ in request_iterator:
            count += 1
        return chat_pb2.Ack(count=count)

    async def Talk(
        self, request_iterator: AsyncIterator[chat_pb2.Message], context: Context
    ) -> AsyncIterator[chat_pb2.Message]:
        async for message in request_iterator:
            yield chat_pb2.Message(room=message.room, text=message.text.upper())


class Rooms(chat_pb2_grpc.RoomsServicer):
    async def GetRoom(self, request: chat_pb2.GetRoomRequest, context: Context) -> types_pb2.Room:
        return types_pb2.Room(id=request.id, title="lobby")

    async def UpdateRoom(self, request: chat_pb2.UpdateRoomRequest, context: Context) -> types_pb2.Room:
        return types_pb2.Room(id=request.id, title=request.room.title)

    async def DeleteRoom(self, request: chat_pb2.GetRoomRequest, context: Context) -> empty_pb2.Empty:
        return empty_pb2.Empty()
