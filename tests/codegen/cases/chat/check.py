"""Real calls through the generated wiring and stubs against a grpc.aio server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc.aio
from gen import events, wiring
from gen.acme.chat.v1 import chat_pb2

from chat_service import Chat, Rooms


class Loopback:
    """A ChannelSource that sends every service to one local server."""

    def __init__(self, port: int) -> None:
        self.channels: list[grpc.aio.Channel] = []
        self.port = port

    def channel(self, service: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.channels.append(channel)
        return channel


async def messages(n: int) -> AsyncIterator[chat_pb2.Message]:
    for i in range(n):
        yield chat_pb2.Message(room="r", text=f"t{i}")


async def main() -> None:
    server = grpc.aio.server()
    wiring.register(server, {"acme.chat.v1.Chat": Chat(), "acme.chat.v1.Rooms": Rooms()})
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    source = Loopback(port)
    clients = wiring.Clients(source)
    try:
        chat, rooms = clients.chat(), clients.rooms()
        ack = await chat.Send(chat_pb2.Message(room="r", text="hello"))
        assert ack.count == 5
        tail = [m.text async for m in chat.Tail(chat_pb2.GetRoomRequest(id="r"))]
        assert tail == ["m0", "m1", "m2"]
        uploaded = await chat.Upload(messages(4))
        assert uploaded.count == 4
        talk = [m.text async for m in chat.Talk(messages(2))]
        assert talk == ["T0", "T1"]
        room = await rooms.GetRoom(chat_pb2.GetRoomRequest(id="x"))
        assert (room.id, room.title) == ("x", "lobby")
    finally:
        for channel in source.channels:
            await channel.close()
        await server.stop(None)

    routes = {(r.http_method, r.path): (r.full_method, r.body, r.kind) for r in wiring.ROUTES}
    assert routes[("POST", "/v1/rooms/{room}/messages")] == ("/acme.chat.v1.Chat/Send", "*", "unary_unary")
    assert routes[("POST", "/acme.chat.v1.Chat/Tail")] == ("/acme.chat.v1.Chat/Tail", "*", "unary_stream")
    assert routes[("POST", "/acme.chat.v1.Chat/Upload")][2] == "stream_unary"
    assert routes[("POST", "/acme.chat.v1.Chat/Talk")][2] == "stream_stream"
    assert routes[("GET", "/v1/room-by-id/{id}")][0] == "/acme.chat.v1.Rooms/GetRoom"
    assert routes[("PATCH", "/v1/rooms/{id}")][1] == "room"
    assert routes[("DELETE", "/v1/rooms/{id}")][0] == "/acme.chat.v1.Rooms/DeleteRoom"
    assert [(a.resource, a.role) for a in wiring.ACL][1] == ("/acme.chat.v1.Rooms/DeleteRoom", "admin")

    posted = events.MessagePosted(room="r", text="hi", at=datetime(2026, 1, 2, tzinfo=UTC), tags=["a"])
    assert posted.reply_to is None
    assert events.MessagePosted.from_bytes(posted.to_bytes()) == posted
    assert posted.meta is None  # set on events that were published or received
    closed = events.RoomClosed(room="r", count=2, score=0.5, archived=True, blob=b"\x00\x01")
    assert events.RoomClosed.from_bytes(closed.to_bytes()) == closed
    assert set(events.EVENTS) == {"MessagePosted", "RoomClosed"}
    print("ok")


asyncio.run(main())
