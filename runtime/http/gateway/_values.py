"""Field values from text (path and query parameters): converters by field type, dotted field paths.

The rules (which texts each type accepts) are in the package's docstring,
under Paths; a value that does not convert is a :class:`Refusal` naming the
parameter, a field path that cannot be set from text is a ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, cast

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ..errors import Refusal

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
NOT_OBJECTS: Final = _WRAPPERS | _FROM_JSON_STRING | {"google.protobuf.Value", "google.protobuf.ListValue"}
"""The messages whose JSON form is not an object."""

Convert = Callable[[str], Any]


def quoted(raw: str) -> str:
    """``raw`` as a JSON string, for messages."""
    return json.dumps(raw, ensure_ascii=False)


def _integer(low: int, high: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        if not _INTEGER.fullmatch(raw):
            raise ValueError(f"{quoted(raw)} is not an integer")
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
            raise ValueError(f"{quoted(raw)} is not a number")
        value = float(raw)
        if math.isinf(value) or (single and abs(value) > _FLOAT32_MAX):
            raise ValueError(f"{raw} is out of range")
        return value

    return convert


def _boolean(raw: str) -> bool:
    value = _BOOL.get(raw)
    if value is None:
        raise ValueError(f"{quoted(raw)} is not a bool (true or false)")
    return value


def from_base64(raw: str) -> bytes:
    """Standard or URL-safe base64, padding optional; ValueError otherwise."""
    text = raw.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{quoted(raw)} is not base64") from None


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
        raise ValueError(f"{quoted(raw)} is not a value of {enum.full_name} ({names})")

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
        return from_base64
    return _string


def _well_known(message: Descriptor) -> Convert | None:
    """A converter to a well-known message set from one text value, or None."""
    cls = message_factory.GetMessageClass(message)
    if message.full_name in _WRAPPERS:
        inner = _scalar(message.fields_by_name["value"])
        wrapper: Any = cls  # types-protobuf 7.35.1.20261122 types Message() without fields
        return lambda raw: wrapper(value=inner(raw))
    if message.full_name in _FROM_JSON_STRING:

        def convert(raw: str) -> Message:
            value = cls()
            try:
                json_format.ParseDict(cast(Any, raw), value)
            except json_format.ParseError as exc:
                raise ValueError(f"{quoted(raw)}: {exc}") from None
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


class Target:
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
            raise Refusal.invalid(f"{what} {self.label}: one value expected, got {len(values)}")
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
            raise Refusal.invalid(f"{what} {self.label}: {exc}") from None


def resolve(message: Descriptor, label: str, *, path: bool) -> Target:
    """Resolve ``a.b.c`` from ``message``; ValueError says why it can't be set from text."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in label.split("."):
        if current is None:
            raise ValueError(f"{chain[-1].name} is not a message")
        field = (current.fields_by_name if path else _fields(current)).get(part)
        if field is None:
            raise ValueError(f"{current.full_name} has no field {quoted(part)}")
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
        return Target(label, chain, _scalar(leaf))
    convert = _well_known(leaf.message_type)
    if convert is None:
        raise ValueError(f"{leaf.name} is a message ({leaf.message_type.full_name}): set its fields instead")
    return Target(label, chain, convert)
