"""User code of the shared-store end-to-end test nodes: the shared namespace ``app`` over HTTP.

The impl of ``kv.v1.KV`` adds these routes to ``node.http.router`` in its constructor:

- ``PUT /kv/{id}``: the body (text) becomes item ``id``'s text (created, or updated when this
  node already holds it); answers 200 ``{"id", "text"}`` once the local write is done;
- ``DELETE /kv/{id}``: 200, or 404 when this node does not hold it;
- ``GET /kv``: 200, JSON ``{id: text}`` of every item this node holds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web
from gen import kv_pb2, kv_pb2_grpc
from pydantic import BaseModel

from msuite.runtime.store import AlreadyExists, NotFound


class Item(BaseModel):
    store_namespace: ClassVar[str] = "items"
    id: str | None = None
    text: str


class KV(kv_pb2_grpc.KVServicer):
    def __init__(self, node: Any) -> None:
        self.store = node.shared("app")
        router = node.http.router
        router.add_put("/kv/{id}", self.put)
        router.add_delete("/kv/{id}", self.delete)
        router.add_get("/kv", self.all)

    async def put(self, request: web.Request) -> web.Response:
        item = Item(id=request.match_info["id"], text=await request.text())
        for _ in range(3):  # a peer's write or delete of the item may land in between
            try:
                await self.store.create(item)
            except AlreadyExists:
                try:
                    await self.store.update(item)
                except NotFound:
                    continue
            return web.json_response({"id": item.id, "text": item.text})
        raise web.HTTPConflict(text=f"item {item.id} keeps changing")

    async def delete(self, request: web.Request) -> web.Response:
        try:
            await self.store.delete(Item, request.match_info["id"])
        except NotFound:
            raise web.HTTPNotFound(text=f"no item {request.match_info['id']}") from None
        return web.json_response({"deleted": request.match_info["id"]})

    async def all(self, request: web.Request) -> web.Response:
        items = await self.store.list(Item, limit=0)
        return web.json_response({item.id: item.text for item in items})

    async def Count(self, request: kv_pb2.CountRequest, context: Any) -> kv_pb2.CountReply:
        return kv_pb2.CountReply(items=await self.store.count(Item))
