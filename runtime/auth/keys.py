"""The keys that sign and verify the node's tokens (``auth.jwt``).

A :class:`TokenKey` is one key: a shared secret (HMAC), or an RSA, EC or
Ed25519 key read from a PEM file or a JWKS. Its *kind* decides the algorithms
it verifies, never a token's header, so a token cannot talk a public key into
acting as an HMAC secret (the classic algorithm confusion):

=========  ==========================================  =====================
kind       verifies (those of ``auth.jwt.algorithms``)  signs with
=========  ==========================================  =====================
hmac       HS256, HS384, HS512                          the first HS listed
rsa        RS256, RS384, RS512 (2048 bits or more)      the first RS listed
ec         its curve's: P-256 ES256, P-384 ES384,       that one
           P-521 ES512
ed25519    EdDSA                                        EdDSA
=========  ==========================================  =====================

Only a secret or a private key signs. A :class:`KeySet` answers which keys
may check a token: the key its ``kid`` names (an unknown kid is refused), or,
for a token without a kid, every key that verifies its algorithm.

HS, RS and ES signatures are python-jose's; python-jose has no EdDSA, so
Ed25519 signatures are made and checked with ``cryptography`` directly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msuite.runtime.errors import NodeError

__all__ = ["KeyConfigError", "KeySet", "TokenKey", "keys_from_jwks", "load_keys", "read_jwks"]

KeyKind = Literal["hmac", "rsa", "ec", "ed25519"]

_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_JWK_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
MIN_RSA_BITS = 2048


class KeyConfigError(NodeError, ValueError):
    """A key of ``auth.jwt`` cannot be used; the message names the key, never its material."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Ed25519:
    """The sign/verify surface of python-jose's keys, for Ed25519 (EdDSA)."""

    def __init__(self, key: Any) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self._private = key if isinstance(key, ed25519.Ed25519PrivateKey) else None
        self._public = key.public_key() if self._private is not None else key

    def sign(self, msg: bytes) -> bytes:
        assert self._private is not None
        return bytes(self._private.sign(msg))

    def verify(self, msg: bytes, sig: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        if len(sig) != 64:
            return False
        try:
            self._public.verify(sig, msg)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, eq=False)
class TokenKey:
    """One key: what it verifies, what it signs with, where it came from (never its material)."""

    kid: str | None
    kind: KeyKind
    algorithms: tuple[str, ...]
    """The algorithms it verifies."""
    signs: str | None
    """The algorithm it signs with; None for a key that only verifies."""
    source: str
    """Where it was configured: ``auth.jwt.secret``, ``auth.jwt.keys[1]``, ``jwks``, ``jwks_url``."""
    _verifiers: Mapping[str, Any] = field(repr=False)
    _signer: Any = field(default=None, repr=False)

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` over ``signing_input`` is this key's, with ``alg``."""
        verifier = self._verifiers.get(alg)
        return verifier is not None and bool(verifier.verify(signing_input, signature))

    def sign(self, signing_input: bytes) -> bytes:
        """The signature of ``signing_input`` with :attr:`signs`."""
        if self._signer is None:
            raise ValueError(f"the key {self.kid or self.source} only verifies")
        return bytes(self._signer.sign(signing_input))

    def status(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "kind": self.kind,
            "algorithms": list(self.algorithms),
            "signs": self.signs,
            "source": self.source,
        }


class KeySet:
    """Keys by kid and by algorithm; immutable (a change builds a new set)."""

    __slots__ = ("_by_alg", "_by_kid", "keys")

    def __init__(self, keys: Iterable[TokenKey]) -> None:
        self.keys: tuple[TokenKey, ...] = tuple(keys)
        self._by_kid: dict[str, TokenKey] = {}
        for key in self.keys:
            if key.kid is not None:
                self._by_kid.setdefault(key.kid, key)  # the manifest's keys come first and win
        algs = {alg for key in self.keys for alg in key.algorithms}
        self._by_alg = {alg: tuple(k for k in self.keys if alg in k.algorithms) for alg in algs}

    def named(self, kid: str) -> TokenKey | None:
        """The key with this kid, or None."""
        return self._by_kid.get(kid)

    def for_algorithm(self, alg: str) -> tuple[TokenKey, ...]:
        """The keys that verify ``alg``, in configuration order."""
        return self._by_alg.get(alg, ())

    def __len__(self) -> int:
        return len(self.keys)


# --------------------------------------------------------------------------- building keys


def _jose_keys(material: Any, algorithms: Sequence[str]) -> dict[str, Any]:
    from jose import jwk

    return {alg: jwk.construct(material, alg) for alg in algorithms}


def _secret_key(secret: str, kid: str | None, accepted: Sequence[str], source: str) -> TokenKey:
    algs = tuple(a for a in accepted if a.startswith("HS"))
    if not algs:
        raise KeyConfigError(f"{source}: a secret needs an HS algorithm in auth.jwt.algorithms")
    material = secret.encode("utf-8", "surrogatepass")
    try:
        verifiers = _jose_keys(material, algs)
    except Exception:
        raise KeyConfigError(
            f"{source}: the secret looks like a PEM or SSH key; use a random secret of 32 bytes or more"
        ) from None
    return TokenKey(kid, "hmac", algs, algs[0], source, verifiers, verifiers[algs[0]])


def _asymmetric(
    key: Any, kid: str | None, accepted: Sequence[str], source: str, *, only: str | None = None
) -> TokenKey:
    """A key of ``cryptography`` (public or private) as a :class:`TokenKey`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    private = isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    public = key.public_key() if private else key
    kind: KeyKind
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise KeyConfigError(f"{source}: an RSA key of {public.key_size} bits; {MIN_RSA_BITS} or more")
        kind, possible = "rsa", tuple(a for a in accepted if a.startswith("RS"))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        alg = _CURVES.get(public.curve.name)
        if alg is None:
            raise KeyConfigError(
                f"{source}: EC curve {public.curve.name} is not supported (P-256, P-384, P-521)"
            )
        kind, possible = "ec", (alg,) if alg in accepted else ()
    elif isinstance(public, ed25519.Ed25519PublicKey):
        kind, possible = "ed25519", ("EdDSA",) if "EdDSA" in accepted else ()
    else:
        raise KeyConfigError(f"{source}: a {type(public).__name__} is not supported (RSA, EC or Ed25519)")
    if only is not None:
        possible = tuple(a for a in possible if a == only)
    if not possible:
        wanted = {"rsa": "an RS algorithm", "ec": "its curve's ES algorithm", "ed25519": "EdDSA"}[kind]
        raise KeyConfigError(f"{source}: an {kind} key needs {wanted} in auth.jwt.algorithms")
    if kind == "ed25519":
        verifier = _Ed25519(public)
        signer = _Ed25519(key) if private else None
        return TokenKey(
            kid, kind, possible, possible[0] if private else None, source, {"EdDSA": verifier}, signer
        )
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    verifiers = _jose_keys(pem, possible)
    signer = None
    if private:
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        signer = _jose_keys(private_pem, possible[:1])[possible[0]]
    return TokenKey(kid, kind, possible, possible[0] if private else None, source, verifiers, signer)


def _read_pem(path: Path, *, private: bool, source: str) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"{source}: {path} cannot be read: {exc.strerror or exc}") from None
    what = "private" if private else "public"
    try:
        if private:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_pem_public_key(data)
    except TypeError:
        raise KeyConfigError(
            f"{source}: {path} is encrypted; msuite reads unencrypted PEM keys (keep the file private)"
        ) from None
    except Exception:
        raise KeyConfigError(f"{source}: {path} is not a PEM {what} key") from None


def load_keys(settings: Any, base_dir: Path, *, locate: Callable[..., str] | None = None) -> list[TokenKey]:
    """The keys the manifest holds in ``auth.jwt`` (a :class:`msuite.spec.JWT`): ``secret``, then ``keys``.

    (A ``jwks`` file's keys come from :func:`read_jwks`; they change while the node runs.)

    Files are relative to ``base_dir``. Raises :class:`KeyConfigError` naming the
    key at its manifest position (``locate(*path)``) when one cannot be used.
    """

    def at(*path: str | int) -> str:
        if locate is not None:
            return locate("auth", "jwt", *path)
        return ".".join(["auth.jwt", *(f"[{p}]" if isinstance(p, int) else p for p in path)]).replace(
            ".[", "["
        )

    accepted = tuple(settings.algorithms)
    keys: list[TokenKey] = []
    if settings.secret is not None:
        keys.append(_secret_key(settings.secret.get_secret_value(), None, accepted, at("secret")))
    for i, spec in enumerate(settings.keys):
        if spec.secret is not None:
            keys.append(
                _secret_key(spec.secret.get_secret_value(), spec.kid, accepted, at("keys", i, "secret"))
            )
        elif spec.public_key is not None:
            source = at("keys", i, "public_key")
            pem = _read_pem(base_dir / spec.public_key, private=False, source=source)
            keys.append(_asymmetric(pem, spec.kid, accepted, source))
        elif spec.private_key is not None:
            source = at("keys", i, "private_key")
            pem = _read_pem(base_dir / spec.private_key, private=True, source=source)
            keys.append(_asymmetric(pem, spec.kid, accepted, source))
    return keys


# --------------------------------------------------------------------------- JWKS


def read_jwks(path: Path, accepted: Sequence[str], *, source: str = "auth.jwt.jwks") -> list[TokenKey]:
    """The keys of a JWKS file; :class:`KeyConfigError` naming the file (and key) when it can't be used."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise KeyConfigError(f"{source}: {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError:
        raise KeyConfigError(f"{source}: {path} is not JSON") from None
    return keys_from_jwks(data, accepted, source=f"{source} ({path.name})")


def keys_from_jwks(data: Any, accepted: Sequence[str], *, source: str) -> list[TokenKey]:
    """The signature keys of a parsed JWKS (``{"keys": [...]}``); keys for encryption are skipped.

    A key the JWKS marks with ``alg`` verifies that algorithm only. Shared
    secrets (``kty: oct``) are refused: a JWKS is public; secrets go in
    ``auth.jwt.keys``.
    """
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyConfigError(f"{source}: a JWKS is an object with a 'keys' list")
    keys: list[TokenKey] = []
    for i, jwk in enumerate(data["keys"]):
        where = f"{source}: keys[{i}]"
        if not isinstance(jwk, dict):
            raise KeyConfigError(f"{where} is not an object")
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise KeyConfigError(f"{where}: kid must be a non-empty string")
        only = jwk.get("alg")
        if only is not None and only not in accepted:
            raise KeyConfigError(f"{where}: alg {str(only)[:20]!r} is not in auth.jwt.algorithms")
        keys.append(_asymmetric(_public_from_jwk(jwk, where), kid, accepted, where, only=only))
    return keys


def _public_from_jwk(jwk: Mapping[str, Any], where: str) -> Any:
    """A ``cryptography`` public key from a JWK's parameters."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    kty = jwk.get("kty")

    def number(name: str) -> int:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise KeyConfigError(f"{where}: '{name}' is missing")
        try:
            return int.from_bytes(_unb64(value), "big")
        except Exception:
            raise KeyConfigError(f"{where}: '{name}' is not base64url") from None

    try:
        if kty == "RSA":
            return rsa.RSAPublicNumbers(number("e"), number("n")).public_key()
        if kty == "EC":
            curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
            curve = curves.get(jwk.get("crv"))  # type: ignore[arg-type]
            if curve is None:
                raise KeyConfigError(f"{where}: EC curve {str(jwk.get('crv'))[:20]!r} is not supported")
            return ec.EllipticCurvePublicNumbers(number("x"), number("y"), curve).public_key()
        if kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise KeyConfigError(
                    f"{where}: OKP curve {str(jwk.get('crv'))[:20]!r} is not supported (Ed25519)"
                )
            number("x")  # present and base64url
            return ed25519.Ed25519PublicKey.from_public_bytes(_unb64(str(jwk["x"])))
    except KeyConfigError:
        raise
    except Exception:
        raise KeyConfigError(f"{where}: the key's parameters are not a valid {kty} public key") from None
    if kty == "oct":
        raise KeyConfigError(
            f"{where}: a shared secret (kty oct) does not belong in a JWKS; put it in auth.jwt.keys"
        )
    raise KeyConfigError(f"{where}: key type {str(kty)[:20]!r} is not supported (RSA, EC, OKP)")
