"""Servicer of the two-process events test: publishes NoteCreated events, records those it is given."""

from __future__ import annotations

from typing import Any

from gen import events_pair_pb2, events_pair_pb2_grpc
from gen.events import NoteCreated


class Notes(events_pair_pb2_grpc.NotesServicer):
    def __init__(self, node: Any) -> None:
        self.node = node
        self.seen: list[events_pair_pb2.Seen] = []
        node.events.on(NoteCreated, self.record)  # registered while the node starts

    async def record(self, event: NoteCreated) -> None:
        meta = event.meta
        assert meta is not None
        self.seen.append(
            events_pair_pb2.Seen(
                id=event.id,
                title=event.title,
                publisher=meta.publisher,
                local=meta.local,
                seq=meta.seq or 0,
                cls=f"{type(event).__module__}.{type(event).__qualname__}",
            )
        )

    async def Publish(self, request: events_pair_pb2.Note, context: Any) -> events_pair_pb2.Published:
        meta = await self.node.events.publish(NoteCreated(id=request.id, title=request.title))
        return events_pair_pb2.Published(id=meta.id, seq=meta.seq or 0, publisher=meta.publisher)

    async def Received(self, request: events_pair_pb2.Empty, context: Any) -> events_pair_pb2.Inbox:
        counts = self.node.events.status()["types"]["NoteCreated"]
        return events_pair_pb2.Inbox(
            events=self.seen,
            peer_id=self.node.p2p.peer_id,
            mesh=counts["mesh"],
            published=counts["published"],
            received=counts["received"],
            missed=counts["missed"],
            dropped=counts["dropped"],
        )
