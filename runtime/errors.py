"""Errors a node raises while it is built, started and used, and their one root.

Every exception msuite defines derives from :class:`MsuiteError`, so
``except MsuiteError`` catches whatever msuite raised on purpose and nothing
else. Subsystems keep their own classes (``StoreError``, ``LockTimeout``,
``AuthError``...), which may also derive from the standard exception they
resemble (``LookupError``, ``TimeoutError``).
"""

from __future__ import annotations

from msuite import MsuiteError
from msuite.spec import Manifest

__all__ = ["MsuiteError", "NodeError", "NotConfigured", "NotSupported", "StartError", "where"]


class NodeError(MsuiteError):
    """A node cannot be built or started; the message says why and where."""


class StartError(NodeError):
    """A component failed to start; those started before it were stopped again."""

    def __init__(self, component: str, cause: BaseException) -> None:
        super().__init__(f"{component}: {cause}")
        self.component = component
        self.cause = cause


class NotConfigured(NodeError, LookupError):
    """A subsystem the manifest does not enable was asked for (``node.<subsystem>``)."""

    def __init__(self, subsystem: str, key: str) -> None:
        super().__init__(f"node.{subsystem} is not configured: add `{key}` to the manifest")
        self.subsystem = subsystem
        self.key = key


class NotSupported(NodeError):
    """The manifest enables a subsystem this version of msuite does not build yet."""


def where(manifest: Manifest, *path: str | int, prefer_key: bool = False) -> str:
    """``file:line:col: path`` of a manifest key, or just the path for a manifest built in Python."""
    from msuite.spec import format_path

    text = format_path(path)
    if manifest.source is None:
        return text
    return f"{manifest.source.where(path, prefer_key=prefer_key)}: {text}"
