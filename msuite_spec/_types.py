"""Typed scalar values of the manifest: durations, sizes, ports, hosts,
multiaddrs, import paths, roles, secret URLs.

Each type is an ``Annotated`` alias (or a small class) that validates the text
form users write in YAML and also accepts the natural Python value, so the
models work the same from YAML and from Python code. Error messages never
repeat the offending value: some fields hold secrets, and the loader prints
the file position instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "DEFAULT_ROLES",
    "Count",
    "Duration",
    "EventName",
    "FieldName",
    "Host",
    "ImportPath",
    "Multiaddr",
    "Port",
    "Role",
    "RoleName",
    "Roles",
    "SecretURL",
    "ServiceName",
    "Size",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

# --------------------------------------------------------------------------- durations

_DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_TEXT = r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$"


def parse_duration(value: Any) -> Any:
    """Turn ``"500ms"``, ``"15s"``, ``"1h30m"`` into a :class:`timedelta`.

    A :class:`timedelta` passes through. Bare numbers are refused: ``15``
    could mean seconds or milliseconds, and a unit costs one character.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):  # bool included
        raise PydanticCustomError(
            "duration_unit",
            "a duration needs a unit, e.g. '500ms', '15s', '24h'",
        )
    if not isinstance(value, str):
        raise PydanticCustomError("duration_type", "a duration must be a string such as '15s'")
    text = value.strip()
    pos = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise PydanticCustomError(
            "duration_format",
            "not a duration: write a number and a unit (ns, us, ms, s, m, h, d), "
            "e.g. '500ms', '15s', '1h30m'",
        )
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise PydanticCustomError("duration_range", "the duration is too long") from None


def format_duration(value: timedelta) -> str:
    """The shortest manifest text for ``value`` (``timedelta(seconds=90)`` -> ``"1m30s"``)."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    parts: list[str] = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    if micros:
        if micros % 1_000_000 == 0:
            parts.append(f"{micros // 1_000_000}s")
        elif micros % 1000 == 0 and micros < 1_000_000:
            parts.append(f"{micros // 1000}ms")
        elif micros < 1000:
            parts.append(f"{micros}us")
        else:
            parts.append(f"{micros / 1_000_000:g}s")
    return sign + "".join(parts)


def _non_negative_duration(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise PydanticCustomError("duration_negative", "a duration cannot be negative")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_non_negative_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DURATION_TEXT,
            "examples": ["500ms", "15s", "24h"],
        }
    ),
]
"""A non-negative length of time: ``500ms``, ``15s``, ``1h30m``, ``7d``."""

# --------------------------------------------------------------------------- sizes

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$")
_SIZE_TEXT = r"^\d+(\.\d+)?\s*([kKMGT]i?B|B)?$"


MAX_SIZE = 2**62
"""Largest size accepted (far beyond anything real; keeps arithmetic exact)."""


def parse_size(value: Any) -> Any:
    """Turn ``"256KiB"``, ``"4MiB"``, ``"1GB"`` or a plain byte count into bytes."""
    if isinstance(value, bool):
        raise PydanticCustomError("size_type", "a size must be a byte count or e.g. '256KiB'")
    if isinstance(value, int):
        if value >= MAX_SIZE:
            raise PydanticCustomError("size_range", "the size is too large")
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("size_type", "a size must be a byte count or e.g. '256KiB'")
    match = _SIZE_RE.match(value.strip())
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise PydanticCustomError(
            "size_format",
            "not a size: write bytes or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. '256KiB'",
        )
    number = float(match.group(1)) * _SIZE_UNITS[unit]
    if not number < MAX_SIZE:
        raise PydanticCustomError("size_range", "the size is too large")
    if number != int(number):
        raise PydanticCustomError("size_fraction", "a size must be a whole number of bytes")
    return int(number)


def format_size(value: int) -> str:
    """The manifest text for a byte count: ``262144`` -> ``"256KiB"``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": _SIZE_TEXT},
            ],
            "examples": ["256KiB", "4MiB"],
        }
    ),
]
"""A number of bytes: ``1048576``, ``256KiB``, ``4MiB``, ``1GB``."""

# --------------------------------------------------------------------------- network


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "must be a whole number, not true/false")
    return value


Count = Annotated[int, BeforeValidator(_not_bool)]
"""A whole number; ``true``/``false`` are refused (pydantic would read them as 1/0)."""

Port = Annotated[int, Field(ge=0, le=65535), BeforeValidator(_not_bool)]
"""A TCP port, 0-65535; 0 asks for an ephemeral port chosen at start."""

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


_DOTTED_DIGITS = re.compile(r"^[0-9.]+$")


def _check_host(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("host_type", "a host must be a string")
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOSTNAME.match(text) or _DOTTED_DIGITS.match(text):
            raise PydanticCustomError(
                "host_format", "not an IP address or host name (e.g. 127.0.0.1, ::1, localhost)"
            ) from None
    return text


Host = Annotated[
    str,
    BeforeValidator(_check_host),
    WithJsonSchema({"type": "string", "examples": ["127.0.0.1", "::1", "localhost"]}),
]
"""An IP address or host name to bind or dial."""

# Multiaddr protocols and how many arguments each takes ("path" swallows the rest).
_MULTIADDR_PROTOCOLS: dict[str, int | str] = {
    "ip4": 1,
    "ip6": 1,
    "ip6zone": 1,
    "dns": 1,
    "dns4": 1,
    "dns6": 1,
    "dnsaddr": 1,
    "tcp": 1,
    "udp": 1,
    "sctp": 1,
    "p2p": 1,
    "ipfs": 1,
    "unix": "path",
    "quic": 0,
    "quic-v1": 0,
    "webtransport": 0,
    "certhash": 1,
    "ws": 0,
    "wss": 0,
    "tls": 0,
    "sni": 1,
    "noise": 0,
    "http": 0,
    "https": 0,
    "p2p-circuit": 0,
    "p2p-webrtc-direct": 0,
    "webrtc-direct": 0,
    "webrtc": 0,
}
_BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]+$")


def _check_multiaddr(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("multiaddr_type", "a multiaddr must be a string")
    if not value.startswith("/") or (value.endswith("/") and value != "/"):
        raise PydanticCustomError(
            "multiaddr_format",
            "a multiaddr starts with '/' and has no trailing '/', "
            "e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...",
        )
    parts = value[1:].split("/")
    i = 0
    while i < len(parts):
        name = parts[i]
        arity = _MULTIADDR_PROTOCOLS.get(name)
        if arity is None:
            raise PydanticCustomError(
                "multiaddr_protocol",
                "unknown multiaddr protocol '{name}'",
                {"name": name[:40]},
            )
        if arity == "path":
            if i + 1 >= len(parts):
                raise PydanticCustomError("multiaddr_arg", "/unix needs a path")
            return value
        assert isinstance(arity, int)
        args = parts[i + 1 : i + 1 + arity]
        if len(args) != arity or any(not a for a in args):
            raise PydanticCustomError(
                "multiaddr_arg", "multiaddr protocol '{name}' needs a value", {"name": name}
            )
        if args:
            _check_multiaddr_arg(name, args[0])
        i += 1 + arity
    return value


def _check_multiaddr_arg(name: str, arg: str) -> None:
    ok = True
    if name == "ip4":
        ok = _is_ip(arg, 4)
    elif name == "ip6":
        ok = _is_ip(arg, 6)
    elif name in ("tcp", "udp", "sctp"):
        ok = arg.isascii() and arg.isdigit() and len(arg) <= 5 and int(arg) <= 65535
    elif name in ("p2p", "ipfs"):
        ok = bool(_BASE58.match(arg)) or (arg.startswith("b") and arg[1:].isalnum())
    if not ok:
        raise PydanticCustomError(
            "multiaddr_arg", "bad value for multiaddr protocol '{name}'", {"name": name}
        )


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


Multiaddr = Annotated[
    str,
    BeforeValidator(_check_multiaddr),
    WithJsonSchema(
        {"type": "string", "pattern": "^/", "examples": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."]}
    ),
]
"""A libp2p multiaddr such as ``/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...``."""

# --------------------------------------------------------------------------- names

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$"

ImportPath = Annotated[
    str,
    Field(
        pattern=_IMPORT_PATH,
        examples=["notes.service:Notes"],
    ),
]
"""``module:Class``: a dotted module path, a colon, and an attribute name."""

ServiceName = Annotated[
    str,
    Field(pattern=rf"^{_IDENT}(\.{_IDENT})*$", examples=["notes.v1.Notes"]),
]
"""A full protobuf service name, ``package.Service``."""

EventName = Annotated[str, Field(pattern=rf"^{_IDENT}$", examples=["NoteCreated"])]
"""An event's name: a Python identifier (it becomes a generated class)."""

FieldName = Annotated[str, Field(pattern=rf"^{_IDENT}$", examples=["title"])]
"""A field of an event: a Python identifier."""


class Role(StrEnum):
    """The default role ladder, lowest first. A resource's ACL entry is the minimum role.

    A manifest may define its own ladder in ``auth.roles`` (see :class:`Roles`);
    these names are then the default's only, but ``none`` is in every ladder.
    """

    NONE = "none"
    PUBLIC_READ = "public_read"
    PUBLIC_WRITE = "public_write"
    AUTHENTICATED_READ = "authenticated_read"
    AUTHENTICATED_WRITE = "authenticated_write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the order ``none < public_read < ... < admin``."""
        return list(Role).index(self)

    def allows(self, required: Role | str) -> bool:
        """Whether a caller with this role may use a resource needing ``required`` (default ladder)."""
        return self.rank >= Role(required).rank


RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["editor"])]
"""A role's name: lowercase letters, digits and ``_``, starting with a letter."""


class Roles:
    """An ordered role ladder, lowest first: a caller holding a role may use what any lower one may.

    ``none`` is always the bottom rung: it is what a caller without a token
    holds, and an ACL entry of ``none`` leaves a resource open. ``names`` are
    the other rungs, lowest first (the manifest's ``auth.roles``);
    :data:`DEFAULT_ROLES` is the ladder of :class:`Role`.
    """

    __slots__ = ("_rank", "names")

    def __init__(self, names: Iterable[str]) -> None:
        listed = tuple(names)
        if not listed:
            raise ValueError("a role ladder needs at least one role above 'none'")
        if Role.NONE.value in listed:
            raise ValueError(
                "'none', the role of a caller without a token, is always the lowest: leave it out"
            )
        seen: set[str] = set()
        for name in listed:
            if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                raise ValueError(f"role {name!r}: lowercase letters, digits and '_', starting with a letter")
            if name in seen:
                raise ValueError(f"role {name!r} is listed twice")
            seen.add(name)
        self.names: tuple[str, ...] = (Role.NONE.value, *listed)
        """Every role, lowest first, ``none`` included."""
        self._rank = {name: rank for rank, name in enumerate(self.names)}

    @property
    def top(self) -> str:
        """The highest role."""
        return self.names[-1]

    def rank(self, role: str) -> int:
        """The position of ``role`` (``none`` is 0); ValueError for a role not in the ladder."""
        rank = self._rank.get(role)
        if rank is None:
            raise ValueError(self.unknown(role))
        return rank

    def check(self, role: object) -> str:
        """``role`` as a plain string when the ladder has it, else ValueError with a did-you-mean."""
        if not isinstance(role, str) or role not in self._rank:
            raise ValueError(self.unknown(role))
        return str(role)

    def allows(self, held: str, required: str) -> bool:
        """Whether a caller holding ``held`` may use a resource needing ``required``.

        A role not on the ladder is out of reach: nobody holds it, nothing needs less.
        """
        return self._rank.get(held, -1) >= self._rank.get(required, len(self.names))

    def unknown(self, role: object) -> str:
        """Why ``role`` is refused: the closest known role and the whole ladder."""
        shown = repr(role)[:80]
        close = difflib.get_close_matches(role, self.names, n=1, cutoff=0.6) if isinstance(role, str) else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown role {shown}{hint} (roles, lowest first: {', '.join(self.names)})"

    def __contains__(self, role: object) -> bool:
        return isinstance(role, str) and role in self._rank

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Roles) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"Roles({' < '.join(self.names)})"


DEFAULT_ROLES = Roles(role.value for role in Role if role is not Role.NONE)
"""The ladder of :class:`Role`: ``none < public_read < public_write < authenticated_read
< authenticated_write < admin``."""


# --------------------------------------------------------------------------- secrets


class SecretURL:
    """A URL that may carry a password (``redis://:pw@host:6379/0``).

    ``str()`` and ``repr()`` mask the password; :meth:`get_secret_value`
    returns the full URL for the code that connects.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        self._url = url

    def get_secret_value(self) -> str:
        """The URL exactly as configured, password included."""
        return self._url

    @property
    def masked(self) -> str:
        """The URL with any password replaced by ``***``."""
        return mask_url(self._url)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"SecretURL({self.masked!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretURL) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> SecretURL:
            if isinstance(value, SecretURL):
                return value
            if not isinstance(value, str):
                raise PydanticCustomError("url_type", "a URL must be a string")
            # messages never include the URL: it may carry a password
            try:
                parts = urlsplit(value)
                _ = parts.port
            except ValueError:
                raise PydanticCustomError(
                    "url_format", "not a valid URL (check the host, the port and any special characters)"
                ) from None
            if not parts.scheme or not parts.hostname:
                raise PydanticCustomError(
                    "url_format",
                    "not a URL: expected scheme://[user:password@]host[:port][/path]; "
                    "percent-encode '/', '?', '#' and '@' inside a password",
                )
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.masked, when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uri", "writeOnly": True}


_SECRET_QUERY = re.compile(r"(?i)(^|&)((?:password|passwd|pass|pwd|secret|token)=)[^&]*")


def mask_url(url: str) -> str:
    """``url`` with any password (in the user info or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = parts.username or ""
        secret = ":***" if parts.password is not None else ""
        netloc = f"{user}{secret}@{host}" + (f":{port}" if port is not None else "")
    query = _SECRET_QUERY.sub(r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
