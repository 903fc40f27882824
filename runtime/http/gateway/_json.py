"""JSON bodies in and out: reading a request body, parsing it into a message, writing a reply."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from msuite.runtime.codes import GrpcCode

from ..errors import Refusal
from ._values import NOT_OBJECTS


async def read_body(request: web.Request) -> bytes:
    """The whole body; beyond the app's ``client_max_size`` a 413 refusal."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise Refusal(413, GrpcCode.RESOURCE_EXHAUSTED, exc.text or "request body too large") from None


def load_json(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise Refusal.invalid(f"invalid JSON in {where}: nested too deeply") from None
    except ValueError as exc:
        raise Refusal.invalid(f"invalid JSON in {where}: {exc}") from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a bool", str: "a string", list: "an array", dict: "an object"}.get(type(value), "a number")


def merge(message: Message, data: Any, where: str) -> None:
    """Merge JSON ``data`` into ``message`` (protobuf's JSON mapping, unknown fields refused)."""
    full_name = message.DESCRIPTOR.full_name
    if not isinstance(data, dict) and full_name not in NOT_OBJECTS:
        raise Refusal.invalid(f"{where}: expected a JSON object ({full_name}), got {_json_type(data)}")
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise Refusal.invalid(f"{where}: {exc}") from None


def to_json(message: Message) -> Any:
    """Protobuf's JSON mapping, fields without presence written even when unset."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
