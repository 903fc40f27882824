"""JSON Web Tokens signed with the manifest's shared secret (``auth.jwt``).

Issued tokens carry ``sub``, ``role``, ``iat``, ``exp`` (whole seconds since
the epoch), ``meta`` when given, and ``iss``/``aud`` when configured; they are
signed with the first of ``algorithms``.

:meth:`JWTAuth.verify` accepts a token only when all of these hold, and raises
:class:`~msuite.runtime.auth.Unauthenticated` otherwise:

- it is at most ``max_token_size`` bytes of ASCII, three base64url parts;
- its header's ``alg`` is in ``algorithms`` (``none`` never is) and it has no
  ``crit`` header (no extension is understood);
- its HMAC signature matches the secret;
- ``exp`` is present and ``now < exp + leeway``; ``iat`` and ``nbf``, when
  present, are not later than ``now + leeway``;
- ``sub`` is a non-empty string and ``role`` a role of the node's ladder (``auth.roles``); ``meta``,
  when present, is an object;
- ``iss`` equals ``issuer`` when one is configured; ``aud`` is (or lists)
  ``audience`` when one is configured, and is absent when none is (RFC 7519).

Tokens from any JWT library with the same secret and claims verify.

Verified tokens are cached (token -> principal, at most ``cache_size``, the
oldest evicted first) and a cached entry is only used while ``now < exp``
(leeway is applied only by a full verification), so a repeated token costs a
dict lookup instead of parsing and an HMAC. Refused tokens are not cached.
``now`` is the injected ``clock``.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from msuite.spec import DEFAULT_ROLES, JWT, Roles

from .errors import Unauthenticated
from .principal import Principal

if TYPE_CHECKING:
    from jose.backends.base import Key

__all__ = ["JWTAuth"]


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is_number(value: object) -> bool:
    """A finite JSON number (not a boolean, not an integer too large for a float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _json_part(part: str) -> Any:
    """The JSON value in one base64url part of a token; raises Unauthenticated if unreadable."""
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except Exception:
        raise Unauthenticated("invalid token") from None


class JWTAuth:
    """Issues and verifies the node's tokens (``node.auth.jwt``)."""

    def __init__(
        self,
        settings: JWT,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
        roles: Roles = DEFAULT_ROLES,
    ) -> None:
        try:
            from jose import jwk, jws
        except ImportError as exc:  # pragma: no cover - the auth extra is missing
            raise ImportError("JWT auth needs python-jose: pip install 'msuite[auth]'") from exc
        if cache_size < 0:
            raise ValueError("cache_size must be 0 (no cache) or more")
        secret = settings.secret.get_secret_value().encode("utf-8", "surrogatepass")
        self._keys: dict[str, Key] = {}
        for alg in settings.algorithms:
            try:
                self._keys[alg] = jwk.construct(secret, alg)
            except Exception:
                raise ValueError(
                    "the JWT secret looks like a PEM or SSH key; use a random secret of 32 bytes or more"
                ) from None
        self._jws = jws
        self.algorithms: tuple[str, ...] = tuple(settings.algorithms)
        """Accepted algorithms; the first signs."""
        self.ttl = settings.ttl.total_seconds()
        """Default lifetime of issued tokens, in seconds."""
        self.leeway = settings.leeway.total_seconds()
        """Clock skew tolerated on ``exp``, ``iat`` and ``nbf``, in seconds."""
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.max_token_size = settings.max_token_size
        self.roles = roles
        """The ladder a token's role must be on (``auth.roles``)."""
        self.cache_size = cache_size
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}  # token -> (exp, principal)
        self._cache_lock = threading.Lock()

    # ----------------------------------------------------------------------- issue

    def issue(
        self,
        subject: str,
        role: str,
        *,
        ttl: timedelta | float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed token for ``subject`` with ``role``, valid for ``ttl`` (default: the manifest's).

        Raises ValueError for an unknown role, an empty subject, a ttl that is
        not positive, or a token that would exceed ``max_token_size``.
        """
        if not isinstance(subject, str) or not subject:
            raise ValueError("a token's subject is a non-empty string")
        checked = self.roles.check(role)
        lifetime = self.ttl if ttl is None else _seconds(ttl)
        if not lifetime > 0 or not math.isfinite(lifetime):
            raise ValueError(f"a token's ttl must be positive, not {lifetime}")
        now = self._clock()
        claims: dict[str, Any] = {
            "sub": subject,
            "role": checked,
            "iat": int(now),
            "exp": int(now + lifetime),
        }
        if meta is not None:
            claims["meta"] = dict(meta)
        if self.issuer is not None:
            claims["iss"] = self.issuer
        if self.audience is not None:
            claims["aud"] = self.audience
        alg = self.algorithms[0]
        token = self._jws.sign(claims, self._keys[alg], algorithm=alg)
        if len(token) > self.max_token_size:
            raise ValueError(
                f"the token would be {len(token)} bytes, over max_token_size ({self.max_token_size}): "
                "put less in meta"
            )
        return token

    # ----------------------------------------------------------------------- verify

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises Unauthenticated for any other."""
        if not isinstance(token, str):
            raise Unauthenticated("invalid token")
        entry = self._cache.get(token)
        now = self._clock()
        if entry is not None:
            if now < entry[0]:
                return entry[1]
            self._forget(token)
        exp, principal = self._verify(token, now)
        if self.cache_size and now < exp:
            self._remember(token, exp, principal)
        return principal

    def _verify(self, token: str, now: float) -> tuple[float, Principal]:
        if len(token) > self.max_token_size:
            raise Unauthenticated("token too large")
        parts = token.split(".")
        if len(parts) != 3 or not token.isascii():
            raise Unauthenticated("invalid token")
        header = _json_part(parts[0])
        if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
            raise Unauthenticated("invalid token")
        alg: str = header["alg"]
        key = self._keys.get(alg)
        if key is None:
            if alg.lower() == "none":
                raise Unauthenticated("unsigned tokens are not accepted")
            raise Unauthenticated("token signed with an algorithm not allowed")
        if "crit" in header:
            raise Unauthenticated("token uses unsupported critical header parameters")
        try:
            claims = json.loads(self._jws.verify(token, key, [alg]))
        except Exception:
            raise Unauthenticated("invalid token") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("invalid token")
        return self._principal(claims, now)

    def _principal(self, claims: dict[str, Any], now: float) -> tuple[float, Principal]:
        leeway = self.leeway
        exp = claims.get("exp")
        if exp is None:
            raise Unauthenticated("token has no expiry")
        for name in ("exp", "iat", "nbf"):
            if name in claims and not _is_number(claims[name]):
                raise Unauthenticated(f"token has an invalid {name} claim")
        if now >= exp + leeway:
            raise Unauthenticated("token expired")
        iat = claims.get("iat")
        if iat is not None and iat > now + leeway:
            raise Unauthenticated("token issued in the future")
        nbf = claims.get("nbf")
        if nbf is not None and nbf > now + leeway:
            raise Unauthenticated("token not yet valid")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token has no subject")
        role_name = claims.get("role")
        if not isinstance(role_name, str):
            raise Unauthenticated("token has no role")
        if role_name not in self.roles:
            raise Unauthenticated("token has an unknown role")
        role = role_name
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise Unauthenticated("token from another issuer")
        aud = claims.get("aud")
        if self.audience is None:
            if aud is not None:
                raise Unauthenticated("token for another audience")
        elif not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
            raise Unauthenticated("token for another audience")
        meta = claims.get("meta", {})
        if not isinstance(meta, dict):
            raise Unauthenticated("token has an invalid meta claim")
        return float(exp), Principal(subject, role, meta, float(exp))

    def _remember(self, token: str, exp: float, principal: Principal) -> None:
        with self._cache_lock:
            cache = self._cache
            while len(cache) >= self.cache_size:
                del cache[next(iter(cache))]
            cache[token] = (exp, principal)

    def _forget(self, token: str) -> None:
        with self._cache_lock:
            self._cache.pop(token, None)

    # ----------------------------------------------------------------------- status

    def clear_cache(self) -> None:
        """Forget every verified token (they are verified again on their next use)."""
        with self._cache_lock:
            self._cache.clear()

    @property
    def cached(self) -> int:
        """How many verified tokens are cached."""
        return len(self._cache)

    def status(self) -> dict[str, Any]:
        """Settings and cache size for status pages; never the secret."""
        return {
            "algorithms": list(self.algorithms),
            "ttl": self.ttl,
            "leeway": self.leeway,
            "issuer": self.issuer,
            "audience": self.audience,
            "max_token_size": self.max_token_size,
            "cached_tokens": len(self._cache),
        }

    def __repr__(self) -> str:
        return f"JWTAuth(algorithms={list(self.algorithms)}, ttl={self.ttl}s)"
