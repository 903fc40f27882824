"""Who is calling: the :class:`Principal` of a request, and the context variable holding it.

A request without a token is :attr:`Principal.ANONYMOUS` (no subject, role
``none``). A verified token gives its subject, role, ``meta`` claim and expiry.
Principals are immutable, ``meta`` included (nested objects become read-only
mappings, arrays become tuples), so one verified token's principal can be
shared by every request that presents it.

The gRPC interceptor and the HTTP middleware set the principal of each
request with :func:`set_principal`; handlers read it with
:func:`current_principal` (``ANONYMOUS`` outside a request).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from msuite.spec import Role

__all__ = ["Principal", "current_principal", "freeze", "reset_principal", "set_principal"]


def freeze(value: Any) -> Any:
    """A read-only copy of a JSON-like value: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity and role of a caller."""

    subject: str | None
    """The token's ``sub`` claim; None without a token."""
    role: str
    """The token's ``role`` claim, a role of the node's ladder; ``"none"`` without a token."""
    meta: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    """The token's ``meta`` claim (read-only); empty when absent."""
    expires: float | None = None
    """The token's ``exp`` claim (seconds since the epoch); None without a token."""

    ANONYMOUS: ClassVar[Principal]
    """A caller without a token: no subject, role ``none``."""

    def __post_init__(self) -> None:
        if not isinstance(self.meta, MappingProxyType):
            object.__setattr__(self, "meta", freeze(self.meta))

    @property
    def authenticated(self) -> bool:
        """Whether the caller presented a valid token."""
        return self.subject is not None


Principal.ANONYMOUS = Principal(None, Role.NONE.value)

_current: ContextVar[Principal] = ContextVar("msuite_principal", default=Principal.ANONYMOUS)


def current_principal() -> Principal:
    """The principal of the request being handled (``Principal.ANONYMOUS`` outside one)."""
    return _current.get()


def set_principal(principal: Principal) -> Token[Principal]:
    """Make ``principal`` the current one (in this context); returns the token for :func:`reset_principal`."""
    return _current.set(principal)


def reset_principal(token: Token[Principal]) -> None:
    """Restore the principal that was current before the matching :func:`set_principal`."""
    _current.reset(token)
