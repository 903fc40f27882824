"""Helpers for the auth tests: a settable clock and hand-crafted tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from msuite.spec import JWT

SECRET = "test-secret-" + "0123456789abcdef" * 4  # 75 bytes: long enough for HS512 too
OTHER_SECRET = "another-secret-" + "0123456789abcdef" * 4
NOW = 1_700_000_000.0

_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(**changes: Any) -> JWT:
    """JWT settings with the test secret."""
    return JWT.model_validate({"secret": SECRET, **changes})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(value: Any) -> str:
    return b64(json.dumps(value).encode())


def craft(
    header: Any,
    claims: Any,
    *,
    secret: str | None = SECRET,
    sign_with: str = "HS256",
) -> str:
    """A token built by hand: any header and claims, HMAC-signed unless ``secret`` is None."""
    signing_input = f"{part(header)}.{part(claims)}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret.encode(), signing_input.encode(), _HASHES[sign_with]).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims at NOW (an hour left), with changes (a None value removes the claim)."""
    base: dict[str, Any] = {
        "sub": "alice",
        "role": "authenticated_write",
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}
