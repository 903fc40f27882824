"""The node's auth component (``node.auth``): JWT bearer tokens checked against the ACL.

:meth:`Auth.authorize` runs on every gRPC call and HTTP request, with the raw
``Authorization`` header (or ``authorization`` metadata) value:

1. No header: the caller is :attr:`Principal.ANONYMOUS` (role ``none``).
2. A header must be ``Bearer <token>`` (the scheme in any case) and the token
   must verify; otherwise :class:`Unauthenticated`, whatever the resource: a
   present but invalid token is never treated as no token. A node without
   ``auth.jwt`` refuses every token.
3. The resource's ACL entry (:meth:`Acl.required`): an unlisted resource is
   open; a listed one needs the caller's role to rank at least as high.
   Refused: :class:`Unauthenticated` ("authentication required") for a caller
   without a token, :class:`PermissionDenied` for a valid token of too low a
   role.

``start()`` writes the manifest's ACL entries over the stored ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from msuite.runtime.errors import NotConfigured
from msuite.runtime.store.kv import KV
from msuite.spec import Auth as AuthSettings

from .acl import Acl
from .errors import PermissionDenied, Unauthenticated
from .jwks import JwksRefresher
from .jwt import JWTAuth
from .keys import TokenKey
from .principal import Principal

__all__ = ["Auth"]

_ANONYMOUS = Principal.ANONYMOUS
_BAD_HEADER = "the Authorization header must be 'Bearer <token>'"


def _shown(resource: str) -> str:
    """``resource`` fit for an error message: short, printable."""
    if len(resource) > 200:
        resource = resource[:200] + "..."
    return resource if resource.isprintable() else "".join(c if c.isprintable() else "?" for c in resource)


class Auth:
    """JWT verification and the ACL, as one component of the node."""

    name = "auth"

    def __init__(
        self,
        settings: AuthSettings,
        *,
        kv: KV | None = None,
        clock: Callable[[], float] = time.time,
        base_dir: Path | None = None,
        keys: Sequence[TokenKey] | None = None,
        jwks_keys: Sequence[TokenKey] | None = None,
    ) -> None:
        """Key files are relative to ``base_dir``; ``keys`` and ``jwks_keys``, when given, are
        the already loaded keys of ``auth.jwt`` (the node loads them while it is built)."""
        self.settings = settings
        self.roles = settings.ladder
        """The role ladder (``auth.roles``), lowest first, ``none`` included."""
        self._jwt: JWTAuth | None = None
        self._refresher: JwksRefresher | None = None
        if settings.jwt is not None:
            base = base_dir or Path(".")
            self._jwt = JWTAuth(
                settings.jwt, clock=clock, roles=self.roles, keys=keys, jwks_keys=jwks_keys, base_dir=base
            )
            refresher = JwksRefresher(self._jwt, settings.jwt, base)
            self._refresher = refresher if refresher.needed else None
        self.acl = Acl(kv, self.roles)
        """The access control list (stored in ``kv``; memory only without one)."""
        self.requires: tuple[str, ...] = ("repo",) if kv is not None else ()
        """Components that must start first: the repository holding the ACL, when there is one."""

    @property
    def jwt(self) -> JWTAuth:
        """Issues and verifies tokens; :class:`NotConfigured` (a LookupError) without ``auth.jwt``."""
        if self._jwt is None:
            raise NotConfigured("auth.jwt", "auth.jwt")
        return self._jwt

    @property
    def jwt_enabled(self) -> bool:
        """Whether the node accepts (and can issue) tokens."""
        return self._jwt is not None

    # ----------------------------------------------------------------------- component

    async def start(self) -> None:
        """Write the manifest's ACL entries over the stored ones; start refreshing JWKS keys."""
        await self.acl.load_manifest(self.settings.acl)
        if self._refresher is not None:
            await self._refresher.start()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop refreshing JWKS keys (the ACL's key space belongs to the repository)."""
        if self._refresher is not None:
            await self._refresher.stop()

    def status(self) -> dict[str, Any]:
        """JWT settings and keys (never a secret), JWKS sources when there are any, ACL entry counts."""
        status: dict[str, Any] = {"jwt": None if self._jwt is None else self._jwt.status()}
        if self._refresher is not None:
            status["jwks"] = self._refresher.status()
        status["acl"] = self.acl.status()
        return status

    # ----------------------------------------------------------------------- per request

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request with this ``Authorization`` value (ANONYMOUS when None)."""
        if authorization is None:
            return _ANONYMOUS
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(_BAD_HEADER)
        if self._jwt is None:
            raise Unauthenticated("this node does not accept tokens")
        return self._jwt.verify(token)

    def authorize(self, resource: str, authorization: str | None) -> Principal:
        """The caller, if it may use ``resource``; else Unauthenticated or PermissionDenied."""
        principal = self.authenticate(authorization)
        required = self.acl.required(resource)
        if required is not None and not self.roles.allows(principal.role, required):
            if authorization is None:
                raise Unauthenticated("authentication required")
            raise PermissionDenied(f"role {principal.role} may not use {_shown(resource)} (needs {required})")
        return principal

    def __repr__(self) -> str:
        return f"Auth(jwt={self._jwt!r}, acl={self.acl!r})"
