"""The HTTP server's connections: timeouts for slow or silent clients, and a cap on how many are open.

aiohttp closes nothing a client leaves unfinished: a connection that never
sends a request, or stops halfway through its headers or its body, stays open
as long as the peer does (its one timer, ``keepalive_timeout``, defaults to an
hour). With the usual limit of 1024 open files, 1,100 such connections starved
the node's gRPC and HTTP servers alike (issue 21). Here every connection is in
one of four phases, and each phase but the last has a deadline:

============  ==============================================  ============================
phase         from                                            closed after
============  ==============================================  ============================
``head``      the connection's start, or the first byte of a  ``http.header_timeout``
              request on a kept-alive connection              (until its headers are in)
``body``      the request's headers, and each later body       ``http.body_timeout`` of
              byte while the node reads the body               silence
``idle``      the end of a response (keep-alive)               ``http.keepalive_timeout``
``busy``      a whole request read, its handler running        (the handler's own time)
============  ==============================================  ============================

While the node has stopped reading a body (its buffer is full because the
handler is not reading yet), the body's clock does not run: the client is not
the slow one. One sweep every ``min(timeouts) / 4`` (at least every second, at
most 20 times a second) closes what is late, at O(open connections) per sweep.

At most ``http.max_connections`` are open at once, lowered at start to half
the soft open-files limit so HTTP alone can never take every descriptor.
When the cap is reached a new connection closes the one that has waited
longest in ``head`` or ``idle`` (a half-open connection, or an idle kept-alive
one) and takes its place, so new clients are served while an attacker's
connections wait; when every open connection is in a request, the new one is
answered ``503`` (JSON, ``UNAVAILABLE``) and closed. One WARNING line says the
cap was reached, one INFO line when the count falls back under 90% of it,
with how many connections were closed or refused meanwhile; nothing is
logged per connection. ``/status`` shows the counts under
``http.connections``.

How: :func:`guard` turns the aiohttp ``Server`` of a runner into
:class:`_GuardedServer`, whose ``connection_made``/``connection_lost`` hooks
keep the table, and whose connection handlers are made of a subclass of
:class:`~.limits.JsonErrors` with ``data_received`` and ``finish_response``
extended (same slots, so the class of each new handler can be switched). The
request factory is wrapped to see each request's headers arrive. Only public
aiohttp and asyncio names are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final

from aiohttp import web

from msuite.runtime.codes import GrpcCode

from .errors import error_body
from .limits import JsonErrors

if TYPE_CHECKING:
    from aiohttp.streams import StreamReader

    from msuite.spec import HTTP

__all__ = ["Connections", "guard", "open_files_cap"]

log = logging.getLogger("msuite.http")

HEAD: Final = "head"
BODY: Final = "body"
IDLE: Final = "idle"
BUSY: Final = "busy"

BACK_UNDER: Final = 0.9
"""The share of the cap the count must fall under before the cap is reported as left."""

_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: close\r\n"
    b"Retry-After: 1\r\n"
)


def _refusal() -> bytes:
    body = json.dumps(
        error_body(GrpcCode.UNAVAILABLE, "too many connections: every one is in a request"),
        separators=(",", ":"),
    ).encode()
    return _REFUSAL + b"Content-Length: %d\r\n\r\n" % len(body) + body


REFUSAL: Final = _refusal()
"""The whole answer to a connection over the cap when none can make room."""


def open_files_cap(wanted: int) -> int:
    """``wanted``, lowered to half the soft open-files limit (at least 1)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft // 2))


class _Connection:
    """One connection's phase and the time it entered it (loop time)."""

    __slots__ = ("payload", "phase", "since")

    def __init__(self, now: float) -> None:
        self.phase: str = HEAD
        self.since = now
        self.payload: StreamReader | None = None


class Connections:
    """The table of an HTTP server's open connections: phases, deadlines, the cap, the counts."""

    def __init__(self, settings: HTTP, *, cap: int) -> None:
        self.header_timeout = settings.header_timeout.total_seconds()
        self.body_timeout = settings.body_timeout.total_seconds()
        self.keepalive_timeout = settings.keepalive_timeout.total_seconds()
        self.cap = cap
        self.asked = settings.max_connections
        self._open: dict[web.RequestHandler, _Connection] = {}
        self._closed = {"header_timeout": 0, "body_timeout": 0, "keepalive_timeout": 0, "evicted": 0}
        self._refused = 0
        self._full = False
        self._at_full = (0, 0)  # (evicted, refused) when the cap was reached
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def tick(self) -> float:
        """Seconds between two sweeps."""
        shortest = min(self.header_timeout, self.body_timeout, self.keepalive_timeout)
        return min(1.0, max(0.05, shortest / 4))

    def __len__(self) -> int:
        return len(self._open)

    def status(self) -> dict[str, Any]:
        phases = dict.fromkeys((HEAD, BODY, IDLE, BUSY), 0)
        for connection in self._open.values():
            phases[connection.phase] += 1
        return {
            "open": len(self._open),
            "max": self.cap,
            "phases": phases,
            "closed": dict(self._closed),
            "refused": self._refused,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start sweeping (in the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep_forever(), name="msuite-http-connections")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # ------------------------------------------------------------------ events (from the server and handlers)

    def made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        """A new connection: admitted (making room if need be), or answered 503 and closed."""
        now = self._now()
        if len(self._open) >= self.cap:
            self._reached()
            victim = self._longest_waiting()
            if victim is None:
                self._refused += 1
                transport.write(REFUSAL)
                handler.force_close()
                return
            self._close(victim, "evicted")
        self._open[handler] = _Connection(now)

    def lost(self, handler: web.RequestHandler) -> None:
        if self._open.pop(handler, None) is not None and self._full:
            self._maybe_back_under()

    def received(self, handler: web.RequestHandler) -> None:
        """Bytes arrived: the first of a request starts its head's clock; a body's restarts its."""
        connection = self._open.get(handler)
        if connection is None:
            return
        if connection.phase is IDLE:
            connection.phase, connection.since = HEAD, self._now()
        elif connection.phase is BODY:
            connection.since = self._now()

    def request(self, handler: web.RequestHandler, payload: StreamReader) -> None:
        """A request's headers are in: its body (if any) is read next."""
        connection = self._open.get(handler)
        if connection is None:
            return
        if payload.is_eof():
            connection.phase, connection.payload = BUSY, None
        else:
            connection.phase, connection.since, connection.payload = BODY, self._now(), payload

    def answered(self, handler: web.RequestHandler) -> None:
        """A response went out: the connection waits for the next request (keep-alive)."""
        connection = self._open.get(handler)
        if connection is not None:
            connection.phase, connection.since, connection.payload = IDLE, self._now(), None

    # ------------------------------------------------------------------ the sweep

    def sweep(self) -> None:
        """Close every connection past its phase's deadline."""
        now = self._now()
        late: list[tuple[web.RequestHandler, str]] = []
        for handler, connection in self._open.items():
            phase = connection.phase
            if phase is BUSY:
                continue
            waited = now - connection.since
            if phase is HEAD:
                if waited > self.header_timeout:
                    late.append((handler, "header_timeout"))
            elif phase is IDLE:
                if waited > self.keepalive_timeout:
                    late.append((handler, "keepalive_timeout"))
            else:  # BODY
                payload = connection.payload
                transport = handler.transport
                if payload is None or payload.is_eof() or transport is None:
                    connection.phase, connection.payload = BUSY, None
                elif not transport.is_reading():  # the node stopped reading: not the client's delay
                    connection.since = now
                elif waited > self.body_timeout:
                    late.append((handler, "body_timeout"))
        for handler, why in late:
            self._close(handler, why)
        if late and self._full:
            self._maybe_back_under()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                self.sweep()
            except Exception:  # never let one bad connection stop the sweeping
                log.exception("the HTTP connection sweep failed")

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _close(self, handler: web.RequestHandler, why: str) -> None:
        self._open.pop(handler, None)
        self._closed[why] += 1
        log.debug("closed an HTTP connection from %s: %s", _peer(handler), why)
        handler.force_close()

    def _longest_waiting(self) -> web.RequestHandler | None:
        """The connection in ``head`` or ``idle`` that entered it first, if any."""
        found: web.RequestHandler | None = None
        oldest = float("inf")
        for handler, connection in self._open.items():
            if connection.phase in (HEAD, IDLE) and connection.since < oldest:
                found, oldest = handler, connection.since
        return found

    def _dropped(self) -> tuple[int, int]:
        return self._closed["evicted"], self._refused

    def _reached(self) -> None:
        if self._full:
            return
        self._full = True
        self._at_full = self._dropped()
        lowered = (
            f" (lowered from {self.asked} to half the open-files limit)" if self.cap < self.asked else ""
        )
        log.warning(
            "HTTP: %d connections open, the cap of http.max_connections%s: a new connection now "
            "closes the longest-waiting idle or unfinished one, or gets 503 when all are in a request",
            self.cap,
            lowered,
        )

    def _maybe_back_under(self) -> None:
        if len(self._open) >= self.cap * BACK_UNDER:
            return
        self._full = False
        evicted, refused = self._dropped()
        log.info(
            "HTTP: back under the connection cap (%d open); meanwhile %d connections were closed to "
            "make room and %d refused",
            len(self._open),
            evicted - self._at_full[0],
            refused - self._at_full[1],
        )


def _peer(handler: web.RequestHandler) -> object:
    transport = handler.transport
    return transport.get_extra_info("peername") if transport is not None else None


class _Guarded(JsonErrors):
    """A connection handler that reports to its server's :class:`Connections`."""

    __slots__ = ()
    table: ClassVar[Connections]

    def data_received(self, data: bytes) -> None:
        if data:
            self.table.received(self)
        super().data_received(data)

    async def finish_response(
        self, request: Any, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.table.answered(self)


class _GuardedServer(web.Server):
    """A ``web.Server`` whose connections are tracked by a :class:`Connections` table."""

    table: Connections
    handler_class: type[_Guarded]

    def __call__(self) -> web.RequestHandler:
        handler = super().__call__()
        handler.__class__ = self.handler_class
        return handler

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.table.made(handler, transport)

    def connection_lost(self, handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        self.table.lost(handler)
        super().connection_lost(handler, exc)


def guard(server: web.Server, connections: Connections) -> None:
    """Track the connections ``server`` accepts from now on in ``connections``; their handlers also
    answer unparsable requests in JSON (:mod:`.limits`)."""
    factory: Callable[..., Any] = server.request_factory

    def request_factory(message: Any, payload: StreamReader, protocol: Any, writer: Any, task: Any) -> Any:
        connections.request(protocol, payload)
        return factory(message, payload, protocol, writer, task)

    server.request_factory = request_factory
    server.__class__ = _GuardedServer
    assert isinstance(server, _GuardedServer)
    server.table = connections
    server.handler_class = type("_GuardedHandler", (_Guarded,), {"__slots__": (), "table": connections})
