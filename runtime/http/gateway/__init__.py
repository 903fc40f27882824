"""JSON over HTTP to gRPC: the ``ROUTES`` table of ``gen/wiring.py``, served on an aiohttp router.

``Gateway(wiring.ROUTES, channel).add_to(app.router)`` registers one aiohttp
route per :class:`~msuite.runtime.wiring.Route`, in table order. Each request
becomes a call on the node's own gRPC server, through ``channel()``, with the
caller's ``Authorization`` header as metadata: the server's interceptors
authenticate it and check the ACL against the gRPC method itself, so HTTP and
gRPC callers meet the same rules. Everything a route needs (path pattern,
message classes, field converters) is built once, in ``__init__``; a route
that cannot work (unknown service, method or field, a kind that does not match
the proto) is a ``ValueError`` naming the route, raised there.

Paths
    Templates follow ``google.api.http``: ``{field}`` is one segment,
    ``{field=shelves/*/books/*}`` a pattern whose whole match is the value
    (``*`` one segment, ``**`` the rest of the path), ``{a.b}`` sets the
    nested field ``a.b``, bare ``*``/``**`` segments match without binding, a
    trailing ``:verb`` is literal. Values are URL-decoded (``%2F`` too) and
    converted to the field's type: integers in decimal, floats (``NaN``,
    ``Infinity`` and ``-Infinity`` too), bools (``true``/``false``, ``1``/``0``,
    ``t``/``f``...), enums by name or number, bytes as base64 (standard or
    URL-safe, padding optional), ``Timestamp``/``Duration``/``FieldMask`` in
    their JSON form, wrappers as their value. A value that does not convert is
    a 400 naming the parameter. aiohttp's router tries the longest literal
    prefix first, then table order; as in grpc-gateway, a path whose last
    segment ends in a ``:verb`` some route of that HTTP method declares is
    not matched by routes whose last segment is a variable without a verb
    (``/v1/books/b1:publish`` reaches ``{name=books/*}:publish``, not
    ``/v1/books/{id}``).

Requests
    - body ``*``: the JSON body is the whole request (protobuf's JSON mapping,
      proto or lowerCamelCase names, unknown fields refused); an empty body is
      an empty request. The query string is refused (every field comes from
      the body).
    - body ``field``: the JSON body is that field (an empty body leaves it
      unset); the query string fills the other fields.
    - body ``""``: no body is read; the query string fills the fields:
      ``?a=1&b.c=x&rep=1&rep=2`` (proto or JSON names, values converted as in
      paths). Refused with a 400: an unknown field, a field the path or the
      body sets, a message field other than the well-known types above (set
      its fields instead), a map, a second value for a singular field, two
      members of one oneof.
    - Path values are applied last: they fill, or override, their fields.
    - Invalid JSON, or JSON that does not fit the message: 400 with the parser's
      message. The body is read whole, bounded by the app's ``client_max_size``
      (413 beyond it). The Content-Type is not checked.

Metadata sent with each call
    ``Authorization`` as ``authorization`` (verbatim: the server's auth
    accepts what it accepts), ``X-Request-Id`` as ``x-request-id``, and each
    ``Grpc-Metadata-<key>`` header (grpc-gateway's convention) as ``<key>``,
    base64-decoded when the key ends in ``-bin``. Refused with a 400: a key
    gRPC reserves (``grpc-*``, ``content-type``, ``te``, ``user-agent``...),
    ``Grpc-Metadata-Authorization`` (the credential comes only from the
    ``Authorization`` header, so the HTTP middleware and the gRPC server judge
    the same one) and values that are not printable ASCII.

Replies
    Protobuf's JSON mapping: lowerCamelCase names, 64-bit integers as
    strings, enums by name, ``Content-Type: application/json``. Fields without
    presence are always written, with their default when unset (``{"count":
    0}``, ``"tags": []``): clients see one stable shape, as with grpc-gateway
    v2's default (``EmitUnpopulated``). Unset message fields and ``optional``
    scalars (fields with presence) are left out. ``response_body`` selects one
    field as the whole reply.

Redirects (go-msuite)
    A unary reply (``unary_unary``, ``stream_unary``) whose initial or trailing
    metadata has ``location`` is answered ``302 Found`` with that
    ``Location``; the body is still the JSON reply, as go-msuite wrote it,
    for clients that do not follow redirects. A failed call never redirects,
    nor does a streamed reply (its headers are sent before its end).

Errors
    A gRPC status becomes :data:`HTTP_STATUS`'s HTTP status (grpc-gateway's
    table) with ``{"code": <grpc code>, "message": <details>, "details": []}``;
    the gateway's own refusals use the same body (code 3, INVALID_ARGUMENT,
    with a 400). A call that fails without a status (channel closed, no
    channel): 503, code 14. Anything unexpected: 500 ``{"code": 13,
    "message": "internal error"}``, logged with its stack on the
    ``msuite.http.gateway`` logger; never a traceback to the client.

Streaming
    - Server streaming (``unary_stream``, ``stream_stream``): the reply is
      NDJSON (``application/x-ndjson``), one JSON message per line, each
      written as it arrives. The gateway waits for the first message (or the
      end) before answering, so a call that fails at once (denied, not
      found...) gets its HTTP status like a unary call; an error after that
      ends the body with one last line ``{"error": {"code", "message",
      "details"}}`` (the status is already 200).
    - Client streaming (``stream_unary``, ``stream_stream``): the body is the
      request stream, either a JSON array of messages or NDJSON (one JSON
      message per line, blank lines skipped); it is read and checked whole
      before the call starts, so a bad message is a 400 and nothing is sent.
      Path values apply to every message. HTTP/1.1 clients send their whole
      body first anyway: the gateway is not full-duplex.
    - ``timeout`` bounds every call, streams included (504 when it expires).
    - A client that leaves a streamed reply cancels its call (checked every
      second, since aiohttp doesn't cancel handlers by default); a unary call
      runs to its end or its deadline.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, cast

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from msuite.runtime.wiring import Route

from ..errors import error_body, error_response

__all__ = ["HTTP_STATUS", "Gateway"]

log = logging.getLogger("msuite.http.gateway")

_C = grpc.StatusCode

HTTP_STATUS: Final[Mapping[grpc.StatusCode, int]] = MappingProxyType(
    {
        _C.OK: 200,
        _C.CANCELLED: 499,
        _C.UNKNOWN: 500,
        _C.INVALID_ARGUMENT: 400,
        _C.DEADLINE_EXCEEDED: 504,
        _C.NOT_FOUND: 404,
        _C.ALREADY_EXISTS: 409,
        _C.PERMISSION_DENIED: 403,
        _C.UNAUTHENTICATED: 401,
        _C.RESOURCE_EXHAUSTED: 429,
        _C.FAILED_PRECONDITION: 400,
        _C.ABORTED: 409,
        _C.OUT_OF_RANGE: 400,
        _C.UNIMPLEMENTED: 501,
        _C.INTERNAL: 500,
        _C.UNAVAILABLE: 503,
        _C.DATA_LOSS: 500,
    }
)
"""HTTP status of each gRPC status code (grpc-gateway's mapping)."""

_JSON: Final = "application/json"
_NDJSON: Final = "application/x-ndjson"
_EOF: Final = grpc.aio.EOF
_CLIENT_POLL: Final = 1.0
"""Seconds between two checks that the client of a streamed reply is still there."""

# --------------------------------------------------------------------------- errors


class _Refused(Exception):
    """A request the gateway answers itself, as a gRPC status (a 400 unless told otherwise)."""

    def __init__(self, message: str, code: grpc.StatusCode = _C.INVALID_ARGUMENT, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class _Unavailable(Exception):
    """The call failed without a gRPC status (no channel, channel closed): a 503."""


def _status_response(exc: grpc.aio.AioRpcError) -> web.Response:
    code = exc.code()
    return error_response(HTTP_STATUS.get(code, 500), code, exc.details() or "")


# --------------------------------------------------------------------------- values from text

_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_SPECIAL: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT32_MAX: Final = 3.4028234663852886e38
_BOOL: Final = {
    **dict.fromkeys(("true", "True", "TRUE", "t", "T", "1"), True),
    **dict.fromkeys(("false", "False", "FALSE", "f", "F", "0"), False),
}
_T = FieldDescriptor
_INT_RANGE: Final = {
    **dict.fromkeys((_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_T.TYPE_UINT32, _T.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_T.TYPE_UINT64, _T.TYPE_FIXED64), (0, 2**64 - 1)),
}
_WRAPPERS: Final = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_FROM_JSON_STRING: Final = frozenset(
    ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask")
)
_NOT_OBJECTS: Final = _WRAPPERS | _FROM_JSON_STRING | {"google.protobuf.Value", "google.protobuf.ListValue"}

Convert = Callable[[str], Any]


def _quoted(raw: str) -> str:
    return json.dumps(raw, ensure_ascii=False)


def _integer(low: int, high: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        if not _INTEGER.fullmatch(raw):
            raise ValueError(f"{_quoted(raw)} is not an integer")
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"{raw} is out of range [{low}, {high}]")
        return value

    return convert


def _floating(single: bool) -> Convert:
    def convert(raw: str) -> float:
        special = _FLOAT_SPECIAL.get(raw)
        if special is not None:
            return special
        if not _FLOAT.fullmatch(raw):
            raise ValueError(f"{_quoted(raw)} is not a number")
        value = float(raw)
        if math.isinf(value) or (single and abs(value) > _FLOAT32_MAX):
            raise ValueError(f"{raw} is out of range")
        return value

    return convert


def _boolean(raw: str) -> bool:
    value = _BOOL.get(raw)
    if value is None:
        raise ValueError(f"{_quoted(raw)} is not a bool (true or false)")
    return value


def _bytes(raw: str) -> bytes:
    text = raw.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{_quoted(raw)} is not base64") from None


def _string(raw: str) -> str:
    return raw


def _enum(field: FieldDescriptor) -> Convert:
    enum = field.enum_type
    assert enum is not None
    numbers = _integer(-(2**31), 2**31 - 1)

    def convert(raw: str) -> int:
        value = enum.values_by_name.get(raw)
        if value is not None:
            return int(value.number)
        if _INTEGER.fullmatch(raw):
            number = numbers(raw)
            if number in enum.values_by_number or not enum.is_closed:
                return number
        names = ", ".join(enum.values_by_name)
        raise ValueError(f"{_quoted(raw)} is not a value of {enum.full_name} ({names})")

    return convert


def _scalar(field: FieldDescriptor) -> Convert:
    kind = field.type
    if kind in _INT_RANGE:
        return _integer(*_INT_RANGE[kind])
    if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return _floating(kind == _T.TYPE_FLOAT)
    if kind == _T.TYPE_BOOL:
        return _boolean
    if kind == _T.TYPE_ENUM:
        return _enum(field)
    if kind == _T.TYPE_BYTES:
        return _bytes
    return _string


def _well_known(message: Descriptor) -> Convert | None:
    """A converter to a well-known message set from one text value, or None."""
    cls = message_factory.GetMessageClass(message)
    if message.full_name in _WRAPPERS:
        inner = _scalar(message.fields_by_name["value"])
        return lambda raw: cls(value=inner(raw))
    if message.full_name in _FROM_JSON_STRING:

        def convert(raw: str) -> Message:
            value = cls()
            try:
                json_format.ParseDict(cast(Any, raw), value)
            except json_format.ParseError as exc:
                raise ValueError(f"{_quoted(raw)}: {exc}") from None
            return value

        return convert
    return None


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


@functools.cache
def _fields(message: Descriptor) -> Mapping[str, FieldDescriptor]:
    """A message's fields by proto name and by JSON name."""
    names = {field.json_name: field for field in message.fields}
    names.update(message.fields_by_name)
    return names


class _Target:
    """A field reached by a dotted path from the request message, set from text values."""

    __slots__ = ("convert", "key", "label", "leaf", "message", "parents")

    def __init__(self, label: str, chain: Sequence[FieldDescriptor], convert: Convert) -> None:
        self.label = label
        self.parents = tuple(field.name for field in chain[:-1])
        self.leaf = chain[-1]
        self.key = (*self.parents, self.leaf.name)
        self.message = self.leaf.message_type is not None
        self.convert = convert

    def assign(self, message: Message, values: Sequence[str], what: str) -> None:
        leaf = self.leaf
        if not leaf.is_repeated and len(values) > 1:
            raise _Refused(f"{what} {self.label}: one value expected, got {len(values)}")
        target = message
        for name in self.parents:
            target = getattr(target, name)
        try:
            if leaf.is_repeated:
                converted = [self.convert(value) for value in values]
                if self.message:
                    for item in converted:
                        getattr(target, leaf.name).add().CopyFrom(item)
                else:
                    getattr(target, leaf.name).extend(converted)
            elif self.message:
                getattr(target, leaf.name).CopyFrom(self.convert(values[0]))
            else:
                setattr(target, leaf.name, self.convert(values[0]))
        except (ValueError, TypeError) as exc:
            raise _Refused(f"{what} {self.label}: {exc}") from None


def _target(message: Descriptor, label: str, *, path: bool) -> _Target:
    """Resolve ``a.b.c`` from ``message``; ValueError says why it can't be set from text."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in label.split("."):
        if current is None:
            raise ValueError(f"{chain[-1].name} is not a message")
        field = (current.fields_by_name if path else _fields(current)).get(part)
        if field is None:
            raise ValueError(f"{current.full_name} has no field {_quoted(part)}")
        if chain and chain[-1].is_repeated:
            raise ValueError(f"{chain[-1].name} is repeated")
        chain.append(field)
        current = field.message_type
    leaf = chain[-1]
    if _is_map(leaf):
        raise ValueError(f"{leaf.name} is a map")
    if leaf.is_repeated and path:
        raise ValueError(f"{leaf.name} is repeated")
    if leaf.message_type is None:
        return _Target(label, chain, _scalar(leaf))
    convert = _well_known(leaf.message_type)
    if convert is None:
        raise ValueError(f"{leaf.name} is a message ({leaf.message_type.full_name}): set its fields instead")
    return _Target(label, chain, convert)


# --------------------------------------------------------------------------- path templates

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[^/{}*=]+")


def _split(path: str) -> list[str]:
    """Split at the ``/`` outside braces (``{name=a/*}`` stays one segment)."""
    segments, current, depth = [], "", 0
    for char in path:
        if char == "{":
            depth += 1
            if depth > 1:
                raise ValueError("nested braces")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced braces")
        if char == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ValueError("unbalanced braces")
    segments.append(current)
    return segments


def _pattern(segments: str) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            parts.append(".*")
        elif _LITERAL.fullmatch(segment):
            parts.append(re.escape(segment))
        else:
            raise ValueError(f"bad segment {_quoted(segment)}")
    return "/".join(parts)


def _compile(template: str, message: Descriptor) -> tuple[list[str], str, tuple[tuple[str, _Target], ...]]:
    """A google.api.http template's aiohttp path pieces, its verb, and (variable, field) per ``{field}``."""
    if not template.startswith("/"):
        raise ValueError("the path must start with /")
    last = _split(template)[-1]
    verb = ""
    if ":" in last and not (last.startswith("{") and last.endswith("}")):
        verb = last[last.rindex(":") :]
        template = template[: len(template) - len(verb)]
        if not _LITERAL.fullmatch(verb[1:]):
            raise ValueError(f"bad verb {_quoted(verb)}")
    out: list[str] = []
    params: list[tuple[str, _Target]] = []
    seen: set[tuple[str, ...]] = set()
    for index, segment in enumerate(_split(template)[1:]):
        if segment.startswith("{") and segment.endswith("}"):
            label, _, segments = segment[1:-1].partition("=")
            if not all(_IDENT.fullmatch(part) for part in label.split(".")):
                raise ValueError(f"bad field path {_quoted(label)}")
            target = _target(message, label, path=True)
            if target.key in seen:
                raise ValueError(f"{label} is bound twice")
            seen.add(target.key)
            name = f"p{len(params)}"
            out.append(f"{{{name}:{_pattern(segments or '*')}}}")
            params.append((name, target))
        elif segment in ("*", "**"):
            out.append(f"{{_w{index}:{_pattern(segment)}}}")
        elif _LITERAL.fullmatch(segment):
            out.append(segment)
        else:
            raise ValueError(f"bad segment {_quoted(segment)}")
    return out, verb, tuple(params)


def _aiohttp_path(pieces: Sequence[str], verb: str, verbs: Sequence[str] = ()) -> str:
    """The aiohttp path; ``verbs``: the ``:verb`` suffixes a verbless last variable must not end with."""
    if verbs and not verb and pieces[-1].startswith("{"):
        guard = "".join(f"(?<!{re.escape(other)})" for other in verbs)
        pieces = [*pieces[:-1], pieces[-1][:-1] + guard + "}"]
    return "/" + "/".join(pieces) + verb


# --------------------------------------------------------------------------- request parts

_METADATA_PREFIX: Final = "grpc-metadata-"
_PREFIX_LENGTH: Final = len(_METADATA_PREFIX)
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_RESERVED: Final = frozenset(
    (
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    )
)


def _ascii(value: str, header: str) -> str:
    if not (value.isascii() and value.isprintable()):
        raise _Refused(f"header {header}: gRPC metadata must be printable ASCII")
    return value


def _metadata(request: web.Request) -> tuple[tuple[str, str | bytes], ...]:
    """The gRPC metadata a request carries (see the module's docstring)."""
    headers = request.headers
    metadata: list[tuple[str, str | bytes]] = []
    authorization = headers.get("Authorization")
    if authorization is not None:
        metadata.append(("authorization", _ascii(authorization, "Authorization")))
    request_id = headers.get("X-Request-Id")
    if request_id is not None:
        metadata.append(("x-request-id", _ascii(request_id, "X-Request-Id")))
    for header, value in headers.items():
        if len(header) <= _PREFIX_LENGTH or header[:_PREFIX_LENGTH].lower() != _METADATA_PREFIX:
            continue
        key = header[_PREFIX_LENGTH:].lower()
        if not _METADATA_KEY.fullmatch(key):
            raise _Refused(f"header {header}: {_quoted(key)} is not a valid gRPC metadata key")
        if key in _RESERVED or key.startswith("grpc-"):
            raise _Refused(f"header {header}: the metadata key {_quoted(key)} is reserved")
        if key.endswith("-bin"):
            try:
                metadata.append((key, _bytes(value)))
            except ValueError as exc:
                raise _Refused(f"header {header}: {exc}") from None
        else:
            metadata.append((key, _ascii(value, header)))
    return tuple(metadata)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise _Refused(exc.text or "request body too large", _C.RESOURCE_EXHAUSTED, 413) from None


def _load_json(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise _Refused(f"invalid JSON in {where}: nested too deeply") from None
    except ValueError as exc:
        raise _Refused(f"invalid JSON in {where}: {exc}") from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a bool", str: "a string", list: "an array", dict: "an object"}.get(type(value), "a number")


def _merge(message: Message, data: Any, where: str) -> None:
    """Merge JSON ``data`` into ``message`` (protobuf's JSON mapping, unknown fields refused)."""
    full_name = message.DESCRIPTOR.full_name
    if not isinstance(data, dict) and full_name not in _NOT_OBJECTS:
        raise _Refused(f"{where}: expected a JSON object ({full_name}), got {_json_type(data)}")
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise _Refused(f"{where}: {exc}") from None


def _to_json(message: Message) -> Any:
    """Protobuf's JSON mapping, fields without presence written even when unset."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


# --------------------------------------------------------------------------- routes


class _Endpoint:
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
        self.pieces, self.verb, self.params = _compile(route.path, method.input_type)
        self.path = _aiohttp_path(self.pieces, self.verb)
        self.path_keys = frozenset(target.key for _, target in self.params)
        self.body_field: FieldDescriptor | None = None
        if route.body not in ("", "*"):
            self.body_field = method.input_type.fields_by_name.get(route.body)
            if self.body_field is None:
                raise ValueError(f"body: {method.input_type.full_name} has no field {_quoted(route.body)}")
        if self.streams_in and route.body != "*":
            raise ValueError(f'a client-streaming method needs body "*", not {_quoted(route.body)}')
        self.response_field: FieldDescriptor | None = None
        if route.response_body:
            self.response_field = method.output_type.fields_by_name.get(route.response_body)
            if self.response_field is None:
                missing = _quoted(route.response_body)
                raise ValueError(f"response_body: {method.output_type.full_name} has no field {missing}")
        self.query: dict[str, _Target] = {}
        self.channel: grpc.aio.Channel | None = None
        self.multicallable: Any = None

    # ----------------------------------------------------------------- handling

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.serve(request)
        except _Refused as exc:
            return error_response(exc.status, exc.code, exc.message)
        except grpc.aio.AioRpcError as exc:
            return _status_response(exc)
        except (_Unavailable, grpc.RpcError, grpc.aio.BaseError) as exc:
            log.warning("%s %s -> %s: call failed: %s", request.method, request.path, self.full_method, exc)
            return error_response(503, _C.UNAVAILABLE, f"gRPC call failed: {exc}")
        except ConnectionResetError:  # the client left: nobody reads this
            return error_response(499, _C.CANCELLED, "the client closed the request")
        except Exception:
            log.exception("%s %s -> %s failed", request.method, request.path, self.full_method)
            return error_response(500, _C.INTERNAL, "internal error")

    async def serve(self, request: web.Request) -> web.StreamResponse:
        metadata = _metadata(request)
        argument: Any = await (self.request_stream(request) if self.streams_in else self.request(request))
        call = self.bind()(argument, metadata=metadata, timeout=self.gateway.timeout)
        try:
            if self.streams_out:
                return await self.stream_reply(request, call)
            reply = await _wait(call, call)
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
            raise _Unavailable(f"no channel: {exc}") from None
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
                raise _Refused("this route takes its request from the body: query parameters are refused")
            data = await _read_body(request)
            if data.strip():
                _merge(message, _load_json(data, "the request body"), "the request body")
        else:
            if self.body_field is not None:
                data = await _read_body(request)
                if data.strip():
                    field = self.body_field.name
                    _merge(message, {field: _load_json(data, "the request body")}, "the request body")
            if request.query_string:
                self.apply_query(message, request)
        self.apply_path(message, request)
        return message

    async def request_stream(self, request: web.Request) -> list[Message]:
        if request.query_string:
            raise _Refused("this route takes its requests from the body: query parameters are refused")
        try:
            text = (await _read_body(request)).decode()
        except UnicodeDecodeError as exc:
            raise _Refused(f"the request body is not UTF-8: {exc}") from None
        messages: list[Message] = []
        if text.lstrip().startswith("["):
            items = _load_json(text, "the request body")
            for index, item in enumerate(items):
                message = self.input()
                _merge(message, item, f"item {index} of the request body")
                messages.append(message)
        else:
            for number, line in enumerate(text.split("\n"), 1):
                if line.strip():
                    where = f"line {number} of the request body"
                    message = self.input()
                    _merge(message, _load_json(line, where), where)
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
        given: dict[tuple[str, ...], tuple[_Target, list[str]]] = {}
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
                    raise _Refused(f"query parameters {other} and {key} both set the oneof {oneof.name}")
            given[target.key] = (target, values)
        for target, values in given.values():
            target.assign(message, values, "query parameter")

    def query_target(self, key: str) -> _Target:
        target = self.query.get(key)
        if target is None:
            try:
                target = _target(self.message, key, path=False)
            except ValueError as exc:
                raise _Refused(f"query parameter {key}: {exc}") from None
            if len(self.query) < 256:  # the names are the client's: keep the cache bounded
                self.query[key] = target
        if target.key in self.path_keys:
            raise _Refused(f"query parameter {key}: the path sets it")
        if self.body_field is not None and target.key[0] == self.body_field.name:
            raise _Refused(f"query parameter {key}: the request body sets {self.body_field.name}")
        return target

    # ----------------------------------------------------------------- replies

    def render(self, reply: Message) -> Any:
        field = self.response_field
        if field is None:
            return _to_json(reply)
        if field.message_type is not None and not field.is_repeated:
            return _to_json(getattr(reply, field.name))
        return _to_json(reply).get(field.json_name)

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
        watcher = asyncio.ensure_future(_watch_client(request, call))
        try:
            return await self.stream_lines(request, call)
        finally:
            watcher.cancel()

    async def stream_lines(self, request: web.Request, call: Any) -> web.StreamResponse:
        try:
            reply = await _wait(call, call.read())  # a call failing at once gets its own HTTP status
        except _Unavailable:
            if _client_left(request):
                return error_response(499, _C.CANCELLED, "the client closed the request")
            raise
        response = web.StreamResponse()
        response.content_type = _NDJSON
        error: dict[str, Any] | None = None
        try:
            await response.prepare(request)
            while reply is not _EOF:
                await response.write(self.line(reply))
                reply = await _wait(call, call.read())
        except grpc.aio.AioRpcError as exc:
            error = error_body(exc.code(), exc.details() or "")
        except ConnectionResetError:
            call.cancel()  # the client left
            return response
        except (_Unavailable, grpc.RpcError, grpc.aio.BaseError) as exc:
            if _client_left(request):
                return response
            log.warning("%s %s -> %s: stream failed: %s", request.method, request.path, self.full_method, exc)
            error = error_body(_C.UNAVAILABLE, f"gRPC call failed: {exc}")
        except Exception:
            log.exception("%s %s -> %s: stream failed", request.method, request.path, self.full_method)
            error = error_body(_C.INTERNAL, "internal error")
        try:
            if error is not None:
                line = json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":"))
                await response.write(line.encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response


def _client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _watch_client(request: web.Request, call: Any) -> None:
    """Cancel a streamed call once its client has gone: aiohttp doesn't cancel handlers by default,
    and an idle stream would otherwise notice only at its next message."""
    while not call.done():
        await asyncio.sleep(_CLIENT_POLL)
        if _client_left(request):
            call.cancel()
            return


async def _wait(call: Any, awaitable: Any) -> Any:
    """Await a call's reply; a call cancelled under us (its channel closed) is ``_Unavailable``."""
    try:
        return await awaitable
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if call.cancelled() and (task is None or not task.cancelling()):
            raise _Unavailable("the call was cancelled (its channel closed)") from None
        raise


# --------------------------------------------------------------------------- the gateway


class Gateway:
    """Serves gateway routes over a gRPC channel (see the module's docstring for the rules).

    ``channel()`` is called on each request and must be cheap: it returns the
    cached channel to the node's own gRPC server. A route's multicallable is
    made on its first request, and again only when ``channel()`` returns a
    different channel. ``timeout`` (seconds) bounds every call.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        channel: Callable[[], grpc.aio.Channel],
        *,
        timeout: float | None = None,
    ) -> None:
        self.channel_factory = channel
        self.timeout = timeout
        pool = descriptor_pool.Default()
        endpoints: list[_Endpoint] = []
        taken: dict[tuple[str, str], Route] = {}
        for route in routes:
            where = f"gateway route {route.http_method} {route.path} ({route.full_method})"
            try:
                method = pool.FindServiceByName(route.service).methods_by_name[route.method]
            except KeyError:
                raise ValueError(
                    f"{where}: {route.full_method} is not in the protobuf descriptor pool "
                    "(import the generated wiring module first)"
                ) from None
            kind = ("stream" if method.client_streaming else "unary") + (
                "_stream" if method.server_streaming else "_unary"
            )
            if kind != route.kind:
                raise ValueError(f"{where}: the route says {route.kind}, the proto says {kind}")
            try:
                endpoint = _Endpoint(self, route, method)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            clash = taken.setdefault((route.http_method, endpoint.path), route)
            if clash is not route:
                other = f"{clash.http_method} {clash.path} ({clash.full_method})"
                raise ValueError(f"{where}: the same path as {other}")
            endpoints.append(endpoint)
        # grpc-gateway's rule: a last segment ending in `:verb` goes to the route with that verb
        # (same HTTP method) before any route whose last segment is a variable without a verb
        verbs: dict[str, set[str]] = {}
        for endpoint in endpoints:
            if endpoint.verb:
                verbs.setdefault(endpoint.route.http_method, set()).add(endpoint.verb)
        for endpoint in endpoints:
            endpoint.path = _aiohttp_path(
                endpoint.pieces, endpoint.verb, sorted(verbs.get(endpoint.route.http_method, ()))
            )
        self._endpoints = tuple(endpoints)
        self._resources: dict[web.AbstractRoute, str] = {}

    def add_to(
        self, router: web.UrlDispatcher, templates: dict[web.AbstractRoute, str] | None = None
    ) -> None:
        """Register one aiohttp route per gateway route, in table order.

        ``templates`` receives each added route's path template as the proto
        declares it (``/v1/notes/{id}``), for metric labels and span names."""
        for endpoint in self._endpoints:
            added = router.add_route(endpoint.route.http_method, endpoint.path, endpoint.handle)
            self._resources[added] = endpoint.full_method
            if templates is not None:
                templates[added] = endpoint.route.path

    def resource_of(self, request: web.Request) -> str | None:
        """The gRPC full method (``/pkg.Service/Method``) a request was routed to, else None."""
        return self._resources.get(request.match_info.route)
