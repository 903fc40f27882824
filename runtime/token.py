"""``msuite token``: mint a JWT with the keys of a manifest's ``auth.jwt``, as its node would.

The manifest is loaded as ``msuite up`` loads it (``${VAR}`` interpolation,
every rule checked, problems printed located). The signer is the node's:
:class:`~msuite.runtime.auth.JWTAuth` with the keys :func:`~msuite.runtime.auth.keys.load_keys`
reads (PEM files relative to the manifest) and the role ladder ``auth.roles``,
so the token verifies on every node that accepts that key. Only the manifest's
own keys sign: a ``jwks`` file or ``jwks_url`` holds public keys and is not read.

The token alone is printed on stdout, so ``TOKEN=$(msuite token --sub ann --role user)``
works; problems go to stderr, one line each. Exit status: 0 printed, 1 the
manifest cannot sign (it does not load, has no ``auth.jwt``, no key that can
sign, a key file that cannot be used), 2 a bad argument (a role off the ladder,
an empty subject, a ttl that is not a positive duration, a malformed ``--meta``).
The secret is never printed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TextIO

__all__ = ["token"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _problem(err: TextIO, text: str, status: int = EXIT_FAILED) -> int:
    print(text, file=err)
    return status


def _usage(err: TextIO, text: str) -> int:
    return _problem(err, f"msuite: error: {text}", EXIT_USAGE)


def _parse_ttl(text: str) -> timedelta | str:
    """The duration of ``--ttl``, or why it is not one."""
    from pydantic_core import PydanticCustomError

    from msuite.spec import parse_duration

    try:
        ttl: timedelta = parse_duration(text)
    except PydanticCustomError as exc:
        return str(exc)
    if ttl <= timedelta(0):
        return "a token's ttl must be positive"
    return ttl


def _parse_meta(pairs: Sequence[str]) -> dict[str, str] | str:
    """``KEY=VALUE`` pairs as a mapping, or why they are not."""
    meta: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            return f"--meta {pair!r}: write KEY=VALUE, e.g. --meta team=ops"
        if key in meta:
            return f"--meta {key!r} is given twice"
        meta[key] = value
    return meta


def token(
    file: str,
    *,
    subject: str,
    role: str,
    ttl: str | None = None,
    meta: Sequence[str] = (),
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print a token of the manifest ``file``'s node for ``subject`` with ``role``; the exit status.

    ``ttl``: a duration such as ``"15m"`` (default: ``auth.jwt.ttl``); ``meta``:
    ``KEY=VALUE`` pairs for the token's ``meta`` claim (values are strings)."""
    if not subject:
        return _usage(err, "--sub: a token's subject is a non-empty string")
    lifetime: timedelta | None = None
    if ttl is not None:
        parsed = _parse_ttl(ttl)
        if isinstance(parsed, str):
            return _usage(err, f"--ttl {ttl!r}: {parsed}")
        lifetime = parsed
    claims = _parse_meta(meta)
    if isinstance(claims, str):
        return _usage(err, claims)

    from msuite.spec import ManifestError, load_manifest

    try:
        manifest = load_manifest(file)
    except ManifestError as exc:
        return _problem(err, str(exc))

    from .errors import where

    settings = manifest.auth.jwt if manifest.auth is not None else None
    if manifest.auth is None or settings is None:
        return _problem(
            err,
            f"{where(manifest, 'auth', 'jwt')}: msuite token needs auth.jwt with a key that can sign "
            "(a secret, or a key with a secret or a private_key)",
        )
    ladder = manifest.auth.ladder
    try:
        checked_role = ladder.check(role)
    except ValueError as exc:
        return _usage(err, f"--role: {exc}")
    if lifetime is None and settings.ttl <= timedelta(0):
        return _problem(err, f"{where(manifest, 'auth', 'jwt', 'ttl')}: must be positive to issue tokens")

    try:
        from .auth.jwt import JWTAuth
        from .auth.keys import KeyConfigError, load_keys
    except ImportError as exc:  # pragma: no cover - the auth extra is missing
        return _problem(err, f"msuite token needs the auth extra: pip install 'msuite[auth]' ({exc})")

    def locate(*path: str | int) -> str:
        return where(manifest, *path)

    try:
        keys = load_keys(settings, manifest.base_dir, locate=locate)
        # the signer is one of the manifest's keys: jwks and jwks_url (public keys) are not read
        jwt = JWTAuth(settings, roles=ladder, keys=keys, jwks_keys=(), base_dir=manifest.base_dir)
    except KeyConfigError as exc:
        return _problem(err, str(exc))
    except ImportError as exc:  # pragma: no cover - the auth extra is missing
        return _problem(err, f"msuite token: {exc}")
    if jwt.signer is None:
        verifiers = [name for name in ("keys", "jwks", "jwks_url") if getattr(settings, name)]
        only = f" ({', '.join(f'auth.jwt.{name}' for name in verifiers)} only verify)" if verifiers else ""
        return _problem(
            err,
            f"{where(manifest, 'auth', 'jwt')}: no key can sign tokens{only}: msuite token needs "
            "auth.jwt.secret, or a key of auth.jwt.keys with a secret or a private_key",
        )
    try:
        issued = jwt.issue(subject, checked_role, ttl=lifetime, meta=claims or None)
    except ValueError as exc:
        return _usage(err, str(exc))
    print(issued, file=out, flush=True)
    return EXIT_OK
