"""JSON Web Tokens (``auth.jwt``): shared secrets, PEM keys and JWKS, selected by ``kid``.

Issued tokens carry ``sub``, ``role``, ``iat``, ``exp`` (whole seconds since
the epoch), ``meta`` when given, and ``iss``/``aud`` when configured; they are
signed by the signing key (``sign_with``, else ``secret``, else the first key
with a secret or private key) and name it in their ``kid`` header when it has
one.

:meth:`JWTAuth.verify` accepts a token only when all of these hold, and raises
:class:`~msuite.runtime.auth.Unauthenticated` otherwise:

- it is at most ``max_token_size`` bytes of ASCII, three base64url parts;
- its header's ``alg`` is in ``algorithms`` (``none`` never is) and it has no
  ``crit`` header (no extension is understood);
- its signature is that of the key its ``kid`` names (an unknown kid is
  refused, unless keys without a kid exist, which are then tried), or, without
  a kid, of one of the keys that verify ``alg``; a key verifies only the
  algorithms of its own kind (:mod:`msuite.runtime.auth.keys`), so a token's
  header never turns a public key into an HMAC secret;
- ``exp`` is present and ``now < exp + leeway``; ``iat`` and ``nbf``, when
  present, are not later than ``now + leeway``;
- ``sub`` is a non-empty string and ``role`` a role of the node's ladder (``auth.roles``); ``meta``,
  when present, is an object;
- ``iss`` equals ``issuer`` when one is configured; ``aud`` is (or lists)
  ``audience`` when one is configured, and is absent when none is (RFC 7519).

Tokens from any JWT library with the same keys and claims verify.

Verified tokens are cached (token -> principal, at most ``cache_size``, the
oldest evicted first) and a cached entry is only used while ``now < exp``
(leeway is applied only by a full verification), so a repeated token costs a
dict lookup instead of parsing and a signature check. Refused tokens are not
cached, and the cache is emptied whenever the keys change. ``now`` is the
injected ``clock``.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from msuite.runtime.errors import NotConfigured
from msuite.spec import DEFAULT_ROLES, JWT, Roles

from .errors import Unauthenticated
from .keys import KeyConfigError, KeySet, TokenKey, load_keys, read_jwks
from .principal import Principal

__all__ = ["JWTAuth", "KeyGroup"]

KeyGroup = Literal["manifest", "jwks", "jwks_url"]


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _part(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _signer(settings: JWT, keys: Sequence[TokenKey]) -> TokenKey | None:
    """The key that signs: ``sign_with``'s, else ``secret``'s, else the first key that can sign."""
    if settings.sign_with is not None:
        for key in keys:
            if key.kid == settings.sign_with and key.signs is not None:
                return key
        raise KeyConfigError(f"auth.jwt.sign_with: no key with kid '{settings.sign_with}' can sign")
    return next((key for key in keys if key.signs is not None), None)


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
        keys: Sequence[TokenKey] | None = None,
        jwks_keys: Sequence[TokenKey] | None = None,
        base_dir: Path | None = None,
    ) -> None:
        """``keys`` are the manifest's (:func:`load_keys`) and ``jwks_keys`` those of the ``jwks``
        file (:func:`read_jwks`); when not given they are read here, files relative to
        ``base_dir`` (default: the working directory)."""
        try:
            import jose  # noqa: F401
        except ImportError as exc:  # pragma: no cover - the auth extra is missing
            raise ImportError("JWT auth needs python-jose: pip install 'msuite[auth]'") from exc
        if cache_size < 0:
            raise ValueError("cache_size must be 0 (no cache) or more")
        base = base_dir or Path(".")
        self.settings = settings
        self.algorithms: tuple[str, ...] = tuple(settings.algorithms)
        """Accepted algorithms; each key verifies those of its own kind."""
        if keys is None:
            keys = load_keys(settings, base)
        if jwks_keys is None and settings.jwks is not None:
            jwks_keys = read_jwks(base / settings.jwks, self.algorithms)
        self._groups: dict[KeyGroup, tuple[TokenKey, ...]] = {
            "manifest": tuple(keys),
            "jwks": tuple(jwks_keys or ()),
            "jwks_url": (),
        }
        self._keys = KeySet(key for group in self._groups.values() for key in group)
        self._signer = _signer(settings, self._groups["manifest"])
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
        self.unknown_kid: Callable[[str], None] | None = None
        """Called (on the verifying thread, cheaply) with a kid no key has: a key set may be stale."""

    @property
    def keys(self) -> KeySet:
        """Every key in use: the manifest's, then those of ``jwks`` files and ``jwks_url``."""
        return self._keys

    @property
    def signer(self) -> TokenKey | None:
        """The key that signs issued tokens; None when the node only verifies."""
        return self._signer

    def replace_keys(self, group: KeyGroup, keys: Sequence[TokenKey]) -> None:
        """Swap in the keys of one ``group``: ``jwks`` (a reloaded file) or ``jwks_url`` (a fetch).

        Cached tokens are forgotten, so a key that left stops verifying at once.
        """
        if group == "manifest":
            raise ValueError("the manifest's keys change with the manifest")
        self._groups[group] = tuple(keys)
        self._keys = KeySet(key for keys_ in self._groups.values() for key in keys_)
        self.clear_cache()

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
        signer = self._signer
        if signer is None:
            raise NotConfigured(
                "auth.jwt signing key", "auth.jwt.secret` or a `private_key` in `auth.jwt.keys"
            )
        header: dict[str, str] = {"alg": signer.signs or "", "typ": "JWT"}
        if signer.kid is not None:
            header["kid"] = signer.kid
        signing_input = f"{_part(header)}.{_part(claims)}"
        token = f"{signing_input}.{_b64(signer.sign(signing_input.encode('ascii')))}"
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
        if alg not in self.algorithms:
            if alg.lower() == "none":
                raise Unauthenticated("unsigned tokens are not accepted")
            raise Unauthenticated("token signed with an algorithm not allowed")
        if "crit" in header:
            raise Unauthenticated("token uses unsupported critical header parameters")
        kid = header.get("kid")
        keys = self._keys
        if kid is None:
            candidates = keys.for_algorithm(alg)
        else:
            if not isinstance(kid, str):
                raise Unauthenticated("invalid token")
            key = keys.named(kid)
            if key is not None:
                candidates = (key,) if alg in key.algorithms else ()
            else:  # keys without a kid (auth.jwt.secret) take any kid, as they always did
                candidates = tuple(k for k in keys.for_algorithm(alg) if k.kid is None)
                if not candidates:
                    if self.unknown_kid is not None:
                        self.unknown_kid(kid)
                    raise Unauthenticated("token signed with an unknown key")
        if not candidates:
            raise Unauthenticated("token signed with an algorithm not allowed")
        try:
            signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
        except Exception:
            raise Unauthenticated("invalid token") from None
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        if not any(key.verify(alg, signing_input, signature) for key in candidates):
            raise Unauthenticated("invalid token")
        claims = _json_part(parts[1])
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
            "keys": [key.status() for key in self._keys.keys],
            "signer": None if self._signer is None else (self._signer.kid or self._signer.source),
            "ttl": self.ttl,
            "leeway": self.leeway,
            "issuer": self.issuer,
            "audience": self.audience,
            "max_token_size": self.max_token_size,
            "cached_tokens": len(self._cache),
        }

    def __repr__(self) -> str:
        return f"JWTAuth(algorithms={list(self.algorithms)}, ttl={self.ttl}s)"
