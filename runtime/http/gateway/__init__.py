"""JSON over HTTP to gRPC: the ``ROUTES`` table of ``gen/wiring.py``, served on an aiohttp router.

``Gateway(wiring.ROUTES, channel).add_to(app.router)`` registers one aiohttp
route per :class:`~msuite.runtime.wiring.Route`, in table order. Each request
becomes a call on the node's own gRPC server, through ``channel()``, with the
caller's ``Authorization`` header as metadata: the server's interceptors
authenticate it and check the ACL against the gRPC method itself, so HTTP and
gRPC callers meet the same rules. Everything a route needs (path pattern,
message classes, field converters) is built once, in ``__init__``, which does
no I/O and does not call ``channel``; a route that cannot work (unknown
service, method or field, a kind that does not match the proto, a clash) is a
:class:`GatewayRouteError` (a ``ValueError``) naming the route, raised there.

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

Modules
    ``_gateway`` (:class:`Gateway`, :class:`GatewayRouteError`: the table
    compiled and registered), ``_endpoint`` (one route: request, call,
    reply), ``_calls`` (a call's status as HTTP, waiting, a client that
    leaves), ``_templates`` (path templates), ``_values`` (field values from
    text), ``_metadata`` (headers to gRPC metadata), ``_json`` (JSON bodies).
    The gateway's own refusals are :class:`msuite.runtime.http.errors.Refusal`;
    gRPC codes come from :mod:`msuite.runtime.codes`.
"""

from ._calls import HTTP_STATUS
from ._gateway import Gateway, GatewayRouteError

__all__ = ["HTTP_STATUS", "Gateway", "GatewayRouteError"]
