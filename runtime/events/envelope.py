"""The events wire format: one JSON envelope per pubsub message (specified in ``docs/events.md``).

::

    {"v": 1, "type": "NoteCreated", "id": "4f0c...", "time": "2026-12-03T06:04:12.123456Z",
     "session": "9a8b7c6d5e4f3a2b", "seq": 42, "data": {"id": "n1", "title": "hello"}}

Each event type travels on a topic of its own, ``msuite/<channel>/events/<type>``;
the publisher is the signed pubsub message's ``from`` (never a field of the
envelope, so it cannot be forged). Decoding is one pydantic pass over the
bytes (:class:`Decoder`, built once per event class); what does not fit is a
:class:`Rejected` with the reason it is counted under, never an exception.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from msuite import MsuiteError
from msuite.runtime.wiring import Event

__all__ = [
    "MAX_SIZE",
    "VERSION",
    "Decoded",
    "Decoder",
    "EventError",
    "Rejected",
    "encode",
    "new_session",
    "topic_for",
]

VERSION = 1
"""The envelope version this msuite writes and reads."""

MAX_SIZE = 256 * 1024
"""Largest envelope, in bytes, published or accepted (bigger payloads belong in files)."""

MAX_ID = 128
"""Longest event id accepted, in characters."""

E = TypeVar("E", bound=Event)


class EventError(MsuiteError):
    """An event cannot be published or a handler cannot be registered (the message says why)."""


def topic_for(channel: str, type_name: str) -> str:
    """The pubsub topic of ``type_name`` events on ``channel``."""
    return f"msuite/{channel}/events/{type_name}"


def new_session() -> str:
    """A fresh publisher session: 64 random bits, as 16 lowercase hex digits."""
    return os.urandom(8).hex()


def rfc3339(moment: datetime) -> str:
    """``moment`` (UTC) as RFC 3339 with microseconds and a ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(event: Event, *, event_id: str, time: datetime, session: str, seq: int) -> bytes:
    """The envelope of ``event``; the payload is the event's own JSON (``Event.to_bytes``)."""
    head = json.dumps(
        {
            "v": VERSION,
            "type": type(event).__name__,
            "id": event_id,
            "time": rfc3339(time),
            "session": session,
            "seq": seq,
        },
        separators=(",", ":"),
    )
    return b"".join((head[:-1].encode(), b',"data":', event.to_bytes(), b"}"))


@dataclass(frozen=True)
class Decoded(Generic[E]):
    """An envelope that fits its topic's event class."""

    event: E
    id: str
    time: datetime
    session: str | None
    seq: int | None


@dataclass(frozen=True)
class Rejected:
    """An envelope that does not fit: ``reason`` is the drop counter it goes to."""

    reason: str
    """``too_large``, ``undecodable``, ``version``, ``unknown_type`` or ``invalid``."""
    detail: str


class _Head(BaseModel):
    """The envelope without its payload, for telling a bad envelope from a bad payload."""

    model_config = ConfigDict(extra="ignore")
    v: int
    type: str


class Decoder(Generic[E]):
    """Decodes the envelopes of one event class (built once, then one pydantic pass per message).

    Schema evolution: fields a newer publisher added are ignored; optional fields it left
    out take their defaults; a required field missing or a value of the wrong type is
    ``invalid``."""

    def __init__(self, cls: type[E]) -> None:
        self.cls = cls
        self.type_name = cls.__name__
        lenient = type(
            cls.__name__,
            (cls,),
            {
                "model_config": ConfigDict(**{**cls.model_config, "extra": "ignore"}),
                "__module__": cls.__module__,
            },
        )
        self._fields = tuple(cls.model_fields)
        self._envelope: type[BaseModel] = create_model(
            f"{cls.__name__}Envelope",
            __config__=ConfigDict(extra="ignore"),
            v=(int, ...),
            type=(str, ...),
            id=(str, Field(min_length=1, max_length=MAX_ID)),
            time=(datetime, ...),
            session=(str | None, Field(None, max_length=64)),
            seq=(int | None, Field(None, ge=1, lt=2**63)),
            data=(lenient, ...),
        )

    def decode(self, raw: bytes) -> Decoded[E] | Rejected:
        """The event in ``raw``, or why it is dropped."""
        if len(raw) > MAX_SIZE:
            return Rejected("too_large", f"{len(raw)} bytes, over the {MAX_SIZE}-byte limit")
        try:
            envelope: Any = self._envelope.model_validate_json(raw)
        except ValidationError as error:
            return self._why(raw, error)
        if envelope.v != VERSION:
            return Rejected("version", f"envelope version {envelope.v}; this node reads {VERSION}")
        if envelope.type != self.type_name:
            return Rejected("unknown_type", f"type {envelope.type[:64]!r} on the topic of {self.type_name}")
        if (envelope.session is None) != (envelope.seq is None):
            return Rejected("undecodable", "session and seq come together or not at all")
        data = envelope.data
        values = {name: getattr(data, name) for name in self._fields}
        event = cast("E", self.cls.model_construct(_fields_set=set(data.model_fields_set), **values))
        time = envelope.time if envelope.time.tzinfo is not None else envelope.time.replace(tzinfo=UTC)
        return Decoded(event, envelope.id, time, envelope.session, envelope.seq)

    def _why(self, raw: bytes, error: ValidationError) -> Rejected:
        try:
            head = _Head.model_validate_json(raw)
        except ValidationError:
            return Rejected("undecodable", _first(error))
        if head.v != VERSION:
            return Rejected("version", f"envelope version {head.v}; this node reads {VERSION}")
        if head.type != self.type_name:
            return Rejected("unknown_type", f"type {head.type[:64]!r} on the topic of {self.type_name}")
        if all(e["loc"][:1] == ("data",) for e in error.errors()):
            return Rejected("invalid", _first(error))
        return Rejected("undecodable", _first(error))


def _first(error: ValidationError) -> str:
    """The first problem of ``error``, short and without the input (it is the peer's)."""
    first = error.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "(envelope)"
    return f"{where}: {first['msg']}"[:200]
