"""What auth keeps in the shared store, and how it hashes secrets.

The shared store's namespace ``users`` (``node.shared("users")``, channel ``samples``, so
every auth node answers) holds two item classes, each under its own item namespace:

- ``users``: one :class:`User` per id (a random hex id);
- ``emails``: one :class:`EmailIndex` per lowercased email, naming its user: what
  registration checks under the email's lock. Both are written in one batch (one
  delta), which is why they share one store.

Passwords are hashed with scrypt (stdlib ``hashlib.scrypt``; argon2-cffi is not a
dependency of msuite): n=2**14, r=8, p=1, a 16-byte random salt per user, a 32-byte
key; about 16 MiB and 50 ms per hash, the parameters OWASP lists as the scrypt
minimum. They are stored with the hash (``scrypt$n$r$p$salt$key``), so they can be
raised later without breaking old hashes. A verification code is six digits, kept
only as a salted SHA-256 (its salt is the user's id); it lives
:data:`CODE_TTL` and allows :data:`CODE_ATTEMPTS` wrong guesses.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_KEY = 2**14, 8, 1, 32
CODE_TTL = timedelta(hours=1)
CODE_ATTEMPTS = 5
MIN_PASSWORD = 8
EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+\.[^@\s/]+$")


class User(BaseModel):
    store_namespace: ClassVar[str] = "users"
    id: str | None = None
    email: str
    name: str = ""
    password_hash: str
    verified: bool = False
    code_hash: str = ""  # "" once verified
    code_expires: datetime | None = None
    code_attempts: int = 0
    created: datetime | None = None  # kept by the store
    updated: datetime | None = None


class EmailIndex(BaseModel):
    store_namespace: ClassVar[str] = "emails"
    id: str  # the lowercased email
    user_id: str


def normalize_email(email: str) -> str:
    return email.strip().lower()


def valid_email(email: str) -> bool:
    return len(email) <= 254 and EMAIL.match(email) is not None


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_KEY, maxmem=2 * 128 * n * r * p
    )


async def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$key`` (hex), computed off the event loop."""
    salt = secrets.token_bytes(16)
    key = await asyncio.to_thread(_scrypt, password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


async def check_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; with None (no such user) it still spends one hash,
    so an unknown email takes as long as a wrong password."""
    if stored is None:
        await asyncio.to_thread(_scrypt, password, b"\0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    _, n, r, p, salt, key = stored.split("$")
    found = await asyncio.to_thread(_scrypt, password, bytes.fromhex(salt), int(n), int(r), int(p))
    return hmac.compare_digest(found, bytes.fromhex(key))


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def hash_code(user_id: str, code: str) -> str:
    return hashlib.sha256(f"{user_id}:{code}".encode()).hexdigest()
