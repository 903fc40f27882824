"""The typed intermediate model that templates render.

Built from the compiled proto descriptors and the manifest by
:mod:`msuite.codegen.build`; templates only read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AclRule", "Event", "EventField", "Method", "Project", "Route", "Service"]


@dataclass(frozen=True)
class Route:
    http_method: str
    path: str
    body: str
    response_body: str
    annotated: bool


@dataclass(frozen=True)
class Method:
    name: str
    input_type: str
    output_type: str
    client_streaming: bool
    server_streaming: bool
    routes: tuple[Route, ...]

    @property
    def kind(self) -> str:
        request = "stream" if self.client_streaming else "unary"
        response = "stream" if self.server_streaming else "unary"
        return f"{request}_{response}"


@dataclass(frozen=True)
class Service:
    full_name: str
    """``package.Service``."""
    name: str
    """The service's own name, ``Service``."""
    impl: str
    grpc_module: str
    """The ``_pb2_grpc`` module, relative to the output package (``hello_pb2_grpc``, ``a.b.x_pb2_grpc``)."""
    grpc_alias: str
    """The name the wiring module imports that module as."""
    accessor: str
    """The ``Clients`` method name, snake_case."""
    methods: tuple[Method, ...]


@dataclass(frozen=True)
class EventField:
    name: str
    annotation: str
    optional: bool


@dataclass(frozen=True)
class Event:
    name: str
    fields: tuple[EventField, ...]
    uses_datetime: bool


@dataclass(frozen=True)
class AclRule:
    resource: str
    role: str


@dataclass(frozen=True)
class Project:
    """Everything one ``msuite generate`` run renders."""

    node: str
    header: str
    """The DO NOT EDIT header (comment lines) every generated file starts with."""
    services: tuple[Service, ...]
    events: tuple[Event, ...]
    acl: tuple[AclRule, ...]
    packages: tuple[str, ...] = field(default=())
    """Subfolders of the output package that need an ``__init__.py``."""
