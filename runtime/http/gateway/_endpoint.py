"""One gateway route: everything it needs, built once; its handler turns a request into a call and back."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Final

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from msuite.runtime.codes import GrpcCode
from msuite.runtime.wiring import Route

from ..errors import Refusal, error_body, error_response
from ._calls import Unavailable, client_left, status_response, wait, watch_client
from ._json import load_json, merge, read_body, to_json
from ._metadata import grpc_metadata
from ._templates import aiohttp_path, compile_template
from ._values import Target, quoted, resolve

if TYPE_CHECKING:
    from ._gateway import Gateway

log = logging.getLogger("msuite.http.gateway")

_JSON: Final = "application/json"
_NDJSON: Final = "application/x-ndjson"
_EOF: Final = grpc.aio.EOF


class Endpoint:
    """One route: everything it needs, built once; ``handle`` is its aiohttp handler."""

    def __init__(self, gateway: Gateway, route: Route, method: MethodDescriptor) -> None:
        self.gateway = gateway
        self.route = route
        self.kind = route.kind
        self.full_method = route.full_method
        self.message = method.input_type
        self.input = message_factory.GetMessageClass(method.input_type)
        self.output = message_factory.GetMessageClass(method.output_type)
        self.streams_in = method.client_streaming
        self.streams_out = method.server_streaming
        self.pieces, self.verb, self.params = compile_template(route.path, method.input_type)
        self.path = aiohttp_path(self.pieces, self.verb)
        self.path_keys = frozenset(target.key for _, target in self.params)
        self.body_field: FieldDescriptor | None = None
        if route.body not in ("", "*"):
            self.body_field = method.input_type.fields_by_name.get(route.body)
            if self.body_field is None:
                raise ValueError(f"body: {method.input_type.full_name} has no field {quoted(route.body)}")
        if self.streams_in and route.body != "*":
            raise ValueError(f'a client-streaming method needs body "*", not {quoted(route.body)}')
        self.response_field: FieldDescriptor | None = None
        if route.response_body:
            self.response_field = method.output_type.fields_by_name.get(route.response_body)
            if self.response_field is None:
                missing = quoted(route.response_body)
                raise ValueError(f"response_body: {method.output_type.full_name} has no field {missing}")
        self.query: dict[str, Target] = {}
        self.channel: grpc.aio.Channel | None = None
        self.multicallable: Any = None

    # ----------------------------------------------------------------- handling

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.serve(request)
        except Refusal as refusal:
            return refusal.response()
        except grpc.aio.AioRpcError as exc:
            return status_response(exc)
        except (Unavailable, grpc.RpcError, grpc.aio.BaseError) as exc:
            log.warning("%s %s -> %s: call failed: %s", request.method, request.path, self.full_method, exc)
            return error_response(503, GrpcCode.UNAVAILABLE, f"gRPC call failed: {exc}")
        except ConnectionResetError:  # the client left: nobody reads this
            return error_response(499, GrpcCode.CANCELLED, "the client closed the request")
        except Exception:
            log.exception("%s %s -> %s failed", request.method, request.path, self.full_method)
            return error_response(500, GrpcCode.INTERNAL, "internal error")

    async def serve(self, request: web.Request) -> web.StreamResponse:
        metadata = grpc_metadata(request)
        argument: Any = await (self.request_stream(request) if self.streams_in else self.request(request))
        call = self.bind()(argument, metadata=metadata, timeout=self.gateway.timeout)
        try:
            if self.streams_out:
                return await self.stream_reply(request, call)
            reply = await wait(call, call)
            return self.reply(reply, await call.initial_metadata(), await call.trailing_metadata())
        finally:
            if not call.done():
                call.cancel()

    def bind(self) -> Any:
        """The multicallable on the current channel (made again when ``channel()`` returns a new one)."""
        try:
            channel = self.gateway.channel_factory()
        except Exception as exc:
            log.warning("no gRPC channel for %s", self.full_method, exc_info=True)
            raise Unavailable(f"no channel: {exc}") from None
        if channel is not self.channel:
            # the route's kind names the channel's factory: channel.unary_unary(...) and so on
            make = getattr(channel, self.kind)
            put, get = self.input.SerializeToString, self.output.FromString
            self.multicallable = make(self.full_method, put, get, _registered_method=True)
            self.channel = channel
        return self.multicallable

    # ----------------------------------------------------------------- requests

    async def request(self, request: web.Request) -> Message:
        message = self.input()
        body = self.route.body
        if body == "*":
            if request.query_string:
                raise Refusal.invalid(
                    "this route takes its request from the body: query parameters are refused"
                )
            data = await read_body(request)
            if data.strip():
                merge(message, load_json(data, "the request body"), "the request body")
        else:
            if self.body_field is not None:
                data = await read_body(request)
                if data.strip():
                    field = self.body_field.name
                    merge(message, {field: load_json(data, "the request body")}, "the request body")
            if request.query_string:
                self.apply_query(message, request)
        self.apply_path(message, request)
        return message

    async def request_stream(self, request: web.Request) -> list[Message]:
        if request.query_string:
            raise Refusal.invalid("this route takes its requests from the body: query parameters are refused")
        try:
            text = (await read_body(request)).decode()
        except UnicodeDecodeError as exc:
            raise Refusal.invalid(f"the request body is not UTF-8: {exc}") from None
        messages: list[Message] = []
        if text.lstrip().startswith("["):
            items = load_json(text, "the request body")
            for index, item in enumerate(items):
                message = self.input()
                merge(message, item, f"item {index} of the request body")
                messages.append(message)
        else:
            for number, line in enumerate(text.split("\n"), 1):
                if line.strip():
                    where = f"line {number} of the request body"
                    message = self.input()
                    merge(message, load_json(line, where), where)
                    messages.append(message)
        if self.params:
            for message in messages:
                self.apply_path(message, request)
        return messages

    def apply_path(self, message: Message, request: web.Request) -> None:
        match = request.match_info
        for name, target in self.params:
            target.assign(message, (match[name],), "path parameter")

    def apply_query(self, message: Message, request: web.Request) -> None:
        query = request.query
        given: dict[tuple[str, ...], tuple[Target, list[str]]] = {}
        oneofs: dict[tuple[tuple[str, ...], str], str] = {}
        for key in dict.fromkeys(query):
            target = self.query_target(key)
            values = query.getall(key)
            if target.key in given:
                given[target.key][1].extend(values)
                continue
            oneof = target.leaf.containing_oneof
            if oneof is not None:
                other = oneofs.setdefault((target.parents, oneof.full_name), key)
                if other != key:
                    raise Refusal.invalid(
                        f"query parameters {other} and {key} both set the oneof {oneof.name}"
                    )
            given[target.key] = (target, values)
        for target, values in given.values():
            target.assign(message, values, "query parameter")

    def query_target(self, key: str) -> Target:
        target = self.query.get(key)
        if target is None:
            try:
                target = resolve(self.message, key, path=False)
            except ValueError as exc:
                raise Refusal.invalid(f"query parameter {key}: {exc}") from None
            if len(self.query) < 256:  # the names are the client's: keep the cache bounded
                self.query[key] = target
        if target.key in self.path_keys:
            raise Refusal.invalid(f"query parameter {key}: the path sets it")
        if self.body_field is not None and target.key[0] == self.body_field.name:
            raise Refusal.invalid(f"query parameter {key}: the request body sets {self.body_field.name}")
        return target

    # ----------------------------------------------------------------- replies

    def render(self, reply: Message) -> Any:
        field = self.response_field
        if field is None:
            return to_json(reply)
        if field.message_type is not None and not field.is_repeated:
            return to_json(getattr(reply, field.name))
        return to_json(reply).get(field.json_name)

    def reply(self, reply: Message, *metadata: grpc.aio.Metadata | None) -> web.Response:
        body = json.dumps(self.render(reply), ensure_ascii=False, separators=(",", ":")).encode()
        for received in metadata:
            location = received.get("location") if received is not None else None
            if isinstance(location, str) and location:
                return web.Response(status=302, body=body, content_type=_JSON, headers={"Location": location})
        return web.Response(body=body, content_type=_JSON)

    def line(self, reply: Message) -> bytes:
        return json.dumps(self.render(reply), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    async def stream_reply(self, request: web.Request, call: Any) -> web.StreamResponse:
        watcher = asyncio.ensure_future(watch_client(request, call))
        try:
            return await self.stream_lines(request, call)
        finally:
            watcher.cancel()

    async def stream_lines(self, request: web.Request, call: Any) -> web.StreamResponse:
        try:
            reply = await wait(call, call.read())  # a call failing at once gets its own HTTP status
        except Unavailable:
            if client_left(request):
                return error_response(499, GrpcCode.CANCELLED, "the client closed the request")
            raise
        response = web.StreamResponse()
        response.content_type = _NDJSON
        error: dict[str, Any] | None = None
        try:
            await response.prepare(request)
            while reply is not _EOF:
                await response.write(self.line(reply))
                reply = await wait(call, call.read())
        except grpc.aio.AioRpcError as exc:
            error = error_body(exc.code(), exc.details() or "")
        except ConnectionResetError:
            call.cancel()  # the client left
            return response
        except (Unavailable, grpc.RpcError, grpc.aio.BaseError) as exc:
            if client_left(request):
                return response
            log.warning("%s %s -> %s: stream failed: %s", request.method, request.path, self.full_method, exc)
            error = error_body(GrpcCode.UNAVAILABLE, f"gRPC call failed: {exc}")
        except Exception:
            log.exception("%s %s -> %s: stream failed", request.method, request.path, self.full_method)
            error = error_body(GrpcCode.INTERNAL, "internal error")
        try:
            if error is not None:
                line = json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":"))
                await response.write(line.encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response
