"""How the store turns an item into bytes and back, and finds its namespace and id.

An item is one of:

- a **pydantic model**: stored as JSON; its namespace is the class attribute
  ``store_namespace`` or else the class name; its id is the field ``id``;
- any class with ``to_bytes()`` and a ``from_bytes(data)`` classmethod (and
  an ``id`` attribute; ``store_namespace`` as above), such as a dataclass.

An item whose ``id`` is ``None`` or empty gets one on ``create`` (a 26-letter,
time-ordered id). Items with ``created`` and/or ``updated`` attributes get
them set by the store (UTC datetimes); the store keeps its own copy of both
times for ordering, so items without them can still be listed by time.
Items are copied, never changed in place: the store returns the item as
stored. (Plain classes are copied with ``copy.copy``; their ``created`` and
``updated`` are set when the instance has those attributes.)
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

__all__ = ["Codec", "codec_for", "new_id"]

T = TypeVar("T")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """A new unique id: 48 bits of milliseconds then 80 random bits, in Crockford base32.

    Ids made later sort later (within a millisecond, at random), which keeps
    natural order close to creation order.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        out.append(_CROCKFORD[digit])
    return "".join(reversed(out))


def _datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


@dataclasses.dataclass(frozen=True)
class Codec(Generic[T]):
    """Everything the store needs to know about one item class."""

    kind: type[T]
    namespace: str
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]
    has_created: bool
    has_updated: bool
    _replace: Callable[[T, dict[str, Any]], T]
    stamps: bool = dataclasses.field(init=False)
    """Whether the store sets times on the item (else an item with its id is stored as given)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stamps", self.has_created or self.has_updated)

    def id_of(self, item: T) -> str | None:
        value = getattr(item, "id", None)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise TypeError(f"{self.kind.__name__}.id must be a str, not {type(value).__name__}")
        return value

    def stamped(self, item: T, *, id: str | None, created_ns: int | None, updated_ns: int) -> T:
        """``item`` with its id (when given) and times set as stored."""
        changes: dict[str, Any] = {}
        if id is not None:
            changes["id"] = id
        if self.has_created and created_ns is not None:
            changes["created"] = _datetime(created_ns)
        if self.has_updated:
            changes["updated"] = _datetime(updated_ns)
        return self._replace(item, changes) if changes else item


_codecs: dict[type[Any], Codec[Any]] = {}


def codec_for(kind: type[T]) -> Codec[T]:
    """The codec for an item class (built once per class)."""
    codec = _codecs.get(kind)
    if codec is None:
        codec = _build(kind)
        _codecs[kind] = codec
    return codec


def _namespace(kind: type[Any]) -> str:
    namespace = getattr(kind, "store_namespace", None) or kind.__name__
    if not isinstance(namespace, str):
        raise TypeError(f"{kind.__name__}.store_namespace must be a str")
    return namespace


def _build(kind: type[T]) -> Codec[T]:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        fields = kind.model_fields
        if "id" not in fields:
            raise TypeError(f"{kind.__name__} needs an `id: str | None` field to be stored")

        # pydantic-core's serializer and validator directly: the same JSON as
        # model_dump_json / model_validate_json, without a str round trip or a Python frame
        encode_model = kind.__pydantic_serializer__.to_json
        decode_model = kind.__pydantic_validator__.validate_json

        def copy_model(item: Any, changes: dict[str, Any]) -> Any:
            return item.model_copy(update=changes)

        return Codec(
            kind,
            _namespace(kind),
            encode_model,
            decode_model,
            "created" in fields,
            "updated" in fields,
            copy_model,
        )
    to_bytes = getattr(kind, "to_bytes", None)
    from_bytes = getattr(kind, "from_bytes", None)
    if not callable(to_bytes) or not callable(from_bytes):
        raise TypeError(
            f"{kind.__name__} cannot be stored: use a pydantic model, or give it "
            "to_bytes() and a from_bytes(data) classmethod"
        )

    def encode_custom(item: Any) -> bytes:
        data = item.to_bytes()
        if not isinstance(data, bytes):
            raise TypeError(f"{kind.__name__}.to_bytes() must return bytes")
        return data

    def decode_custom(data: bytes) -> Any:
        return from_bytes(data)

    if dataclasses.is_dataclass(kind):
        names = {f.name for f in dataclasses.fields(kind)}

        def replace_dataclass(item: Any, changes: dict[str, Any]) -> Any:
            return dataclasses.replace(item, **changes)

        return Codec(
            kind,
            _namespace(kind),
            encode_custom,
            decode_custom,
            "created" in names,
            "updated" in names,
            replace_dataclass,
        )

    def set_attributes(item: Any, changes: dict[str, Any]) -> Any:
        stored = copy.copy(item)  # the caller's object is never changed
        for name, value in changes.items():
            if name == "id" or hasattr(stored, name):
                setattr(stored, name, value)
        return stored

    return Codec(kind, _namespace(kind), encode_custom, decode_custom, True, True, set_attributes)
