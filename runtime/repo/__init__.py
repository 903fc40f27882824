"""The node's repository (``node.repo``): layout, lock, format version, node key."""

from .identity import (
    KeyFileError,
    check_key_file,
    create_node_key,
    decode_private_key,
    encode_private_key,
    read_key,
    read_seed,
)
from .repo import FORMAT_VERSION, MEMORY, Repo, RepoError, RepoLocked, repair

__all__ = [
    "FORMAT_VERSION",
    "MEMORY",
    "KeyFileError",
    "Repo",
    "RepoError",
    "RepoLocked",
    "check_key_file",
    "create_node_key",
    "decode_private_key",
    "encode_private_key",
    "read_key",
    "read_seed",
    "repair",
]
