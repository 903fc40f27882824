"""The contract between generated code (``gen/wiring.py``, ``gen/events.py``) and the node.

``msuite generate`` writes modules that import these names; the node reads
the tables they fill. Keep this module light: generated code imports it, and
it imports nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

if TYPE_CHECKING:
    import grpc.aio

__all__ = [
    "AclEntry",
    "ChannelSource",
    "Event",
    "EventHandlers",
    "EventMeta",
    "Route",
    "ServiceBinding",
    "StreamKind",
]

StreamKind = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
"""How a method streams: request side, then response side."""


class ChannelSource(Protocol):
    """Gives a channel for a full proto service name (``notes.v1.Notes``).

    The node implements it (static addresses first, then its own services,
    then peers found by discovery) and raises an error naming the service when
    it resolves nowhere; it never returns None.
    """

    def channel(self, service: str) -> grpc.aio.Channel: ...


@dataclass(frozen=True)
class ServiceBinding:
    """One declared service: its name, the ``module:Class`` serving it, and how to register it."""

    name: str
    impl: str
    add_to_server: Callable[[Any, Any], None]
    """grpcio's ``add_<Service>Servicer_to_server(servicer, server)``."""


@dataclass(frozen=True)
class Route:
    """One gateway route: an HTTP method and path template reaching a gRPC method."""

    http_method: str
    path: str
    """Path template with ``{field}`` parameters, e.g. ``/v1/notes/{id}``."""
    service: str
    method: str
    body: str
    """``*`` (the whole request from the JSON body), a field name, or empty (no body)."""
    response_body: str
    kind: StreamKind
    annotated: bool
    """False for the default ``POST /<package.Service>/<Method>`` route."""

    @property
    def full_method(self) -> str:
        """``/package.Service/Method``, the ACL resource the route is checked against."""
        return f"/{self.service}/{self.method}"


@dataclass(frozen=True)
class AclEntry:
    """A manifest ACL entry, checked against the protos at generate time."""

    resource: str
    role: str


@dataclass(frozen=True)
class EventMeta:
    """Where an event comes from: ``event.meta`` in a handler (see ``docs/events.md``)."""

    id: str
    """Unique per event (the envelope's ``id``); a second copy with the same id is dropped."""
    type: str
    """The event's type name, as the manifest's ``events:`` names it."""
    publisher: str
    """Peer ID of the node that published it (from the signed pubsub message: cannot be forged)."""
    time: datetime
    """When the publisher published it, by the publisher's clock (UTC)."""
    topic: str
    """The pubsub topic it travelled on."""
    local: bool
    """True when this node published it."""
    seq: int | None = None
    """The publisher's sequence number of this type in its session (None from peers that send none)."""


class Event(BaseModel):
    """Base of the generated event classes: frozen, typed, JSON on the wire.

    Equality and hashing look at the fields only, never at :attr:`meta`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        # every value survives the round trip and the JSON stays standard: any bytes (base64),
        # inf and nan (as the strings "Infinity", "-Infinity" and "NaN")
        ser_json_bytes="base64",
        val_json_bytes="base64",
        ser_json_inf_nan="strings",
    )
    _meta: EventMeta | None = PrivateAttr(None)

    @property
    def meta(self) -> EventMeta | None:
        """Where the event came from, on the events handlers receive and ``publish`` returns
        (None on an event built locally and not published)."""
        return self._meta

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def to_bytes(self) -> bytes:
        """The event as JSON bytes."""
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """An event from JSON bytes (raises pydantic's ValidationError when they don't fit)."""
        return cls.model_validate_json(data)


E = TypeVar("E", bound=Event)


class EventHandlers:
    """Handlers by event class, each typed on its class.

    ``handlers.on(NoteCreated, handle)`` type-checks only when ``handle``
    takes a ``NoteCreated``; the node's events subsystem delivers each event to
    the handlers of its class, in registration order.
    """

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Callable[[Any], Awaitable[None]]]] = {}

    def on(self, event: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Call ``handler`` for every ``event`` received (the publisher's own included)."""
        self._handlers.setdefault(event, []).append(handler)

    def of(self, event: type[E]) -> list[Callable[[E], Awaitable[None]]]:
        """The handlers of ``event``, in registration order."""
        return list(self._handlers.get(event, ()))

    def events(self) -> list[type[Event]]:
        """Event classes with at least one handler, in registration order."""
        return list(self._handlers)
