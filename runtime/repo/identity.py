"""The node's libp2p private key, kept in the repository.

The file holds libp2p's protobuf ``PrivateKey`` message (field 1: key type,
field 2: key data). New keys are Ed25519, whose data is the 32-byte seed
followed by the 32-byte public key, as the libp2p specification and
go-libp2p write it; a 32-byte seed alone (as py-libp2p writes it) is read too.
The file is created with mode 0600 and never rewritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from msuite import MsuiteError
from msuite.runtime.varint import encode_uvarint

__all__ = [
    "ED25519",
    "SECP256K1",
    "KeyFileError",
    "create_node_key",
    "decode_private_key",
    "encode_private_key",
    "read_key",
    "read_seed",
]

ED25519 = 1
"""libp2p's KeyType value for Ed25519."""

SECP256K1 = 2
"""libp2p's KeyType value for secp256k1."""

_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class KeyFileError(MsuiteError):
    """The key file is missing, unreadable or not a libp2p Ed25519 private key."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise KeyFileError("truncated protobuf varint")


def encode_private_key(key_type: int, data: bytes) -> bytes:
    """libp2p's protobuf encoding of a private key."""
    return b"\x08" + encode_uvarint(key_type) + b"\x12" + encode_uvarint(len(data)) + data


def decode_private_key(blob: bytes) -> tuple[int, bytes]:
    """(key type, key data) from libp2p's protobuf encoding."""
    key_type: int | None = None
    data: bytes | None = None
    pos = 0
    while pos < len(blob):
        tag, pos = _read_varint(blob, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(blob, pos)
            if field == 1:
                key_type = value
        elif wire == 2:
            length, pos = _read_varint(blob, pos)
            if pos + length > len(blob):
                raise KeyFileError("truncated key data")
            if field == 2:
                data = blob[pos : pos + length]
            pos += length
        else:
            raise KeyFileError("not a libp2p private key (unexpected protobuf field)")
    if key_type is None or data is None:
        raise KeyFileError("not a libp2p private key (type or data missing)")
    return key_type, data


def _public_key(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def create_node_key(path: Path) -> None:
    """Write a new Ed25519 key to ``path`` (mode 0600); an existing file is kept.

    The key is written to a temporary file and linked into place, so a crash
    never leaves an empty or partial key behind, and a key that appeared
    meanwhile is never overwritten.
    """
    seed = os.urandom(32)
    blob = encode_private_key(ED25519, seed + _public_key(seed))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def check_key_file(path: Path) -> None:
    """Refuse a key file others may read, or one that is not a valid key."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {mode:04o} let others read the node's private key: chmod 600 {path}"
        )
    read_key(path)


def read_key(path: Path) -> tuple[int, bytes]:
    """``(key type, 32-byte secret)`` of the key in ``path``: an Ed25519 seed or a secp256k1 secret.

    Ed25519 keys may hold the seed alone (py-libp2p) or the seed and its public
    half (go-libp2p, js-libp2p, msuite), which is checked.
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the node key: {exc.strerror or exc}") from None
    try:
        key_type, data = decode_private_key(blob)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    if key_type == ED25519:
        if len(data) == 32:
            return key_type, data
        if len(data) == 64 and _public_key(data[:32]) == data[32:]:
            return key_type, data[:32]
        raise KeyFileError(f"{path}: not a valid Ed25519 private key")
    if key_type == SECP256K1:
        if len(data) == 32 and 0 < int.from_bytes(data, "big") < _SECP256K1_ORDER:
            return key_type, data
        raise KeyFileError(f"{path}: not a valid secp256k1 private key")
    raise KeyFileError(
        f"{path}: key type {key_type} is not supported (Ed25519, type 1, or secp256k1, type 2)"
    )


def read_seed(path: Path) -> bytes:
    """The 32-byte Ed25519 seed stored in ``path`` (checked against its public half)."""
    key_type, secret = read_key(path)
    if key_type != ED25519:
        raise KeyFileError(f"{path}: not an Ed25519 key (type {key_type})")
    return secret
