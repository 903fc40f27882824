"""Component ``auth`` (``auth:``; ``node.auth``): JWT and the ACL kept in the repository.

Built with the ``repo`` component it requires; at start it opens the ACL's
key space (``repo.space("acl")``), which exists only once the repository is
open, and writes the manifest's entries over the stored ones. JWT keys are
read while the node is built (a key file that does not parse, or does not
fit its algorithms, is reported at its manifest position before anything
binds). The gRPC and
HTTP servers are handed this component at build and read :attr:`current`
when they start, after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec, Extra
from msuite.runtime.errors import NodeError, where
from msuite.runtime.repo.component import RepoComponent

if TYPE_CHECKING:
    from msuite.spec import Auth as AuthSettings

    from .auth import Auth
    from .keys import TokenKey

__all__ = ["AUTH", "AuthComponent"]


class AuthComponent:
    name = "auth"
    requires: tuple[str, ...] = ("repo",)

    def __init__(
        self,
        settings: AuthSettings,
        repo: RepoComponent,
        *,
        base_dir: Path | None = None,
        keys: Sequence[TokenKey] | None = None,
        jwks_keys: Sequence[TokenKey] | None = None,
    ) -> None:
        self.settings = settings
        self._repo = repo
        self._base_dir = base_dir
        self._keys = keys
        self._jwks_keys = jwks_keys
        self._auth: Auth | None = None

    @property
    def current(self) -> Auth:
        """The started :class:`~msuite.runtime.auth.Auth`; :class:`NodeError` before start."""
        if self._auth is None:
            raise NodeError("node.auth exists once the node has started")
        return self._auth

    async def start(self) -> None:
        from .auth import Auth

        auth = Auth(
            self.settings,
            kv=self._repo.opened().space("acl"),
            base_dir=self._base_dir,
            keys=self._keys,
            jwks_keys=self._jwks_keys,
        )
        await auth.start()
        self._auth = auth

    async def stop(self, grace: float) -> None:
        if self._auth is not None:
            await self._auth.stop()

    def status(self) -> dict[str, Any]:
        return self._auth.status() if self._auth is not None else {"state": "stopped"}


def _build(context: BuildContext) -> AuthComponent:
    from .keys import load_keys, read_jwks

    manifest = context.manifest
    settings = manifest.auth
    assert settings is not None
    keys = jwks_keys = None
    if settings.jwt is not None:
        jwt = settings.jwt

        def locate(*path: str | int) -> str:
            return where(manifest, *path)

        keys = load_keys(jwt, manifest.base_dir, locate=locate)
        if jwt.jwks is not None:
            source = locate("auth", "jwt", "jwks")
            jwks_keys = read_jwks(manifest.base_dir / jwt.jwks, jwt.algorithms, source=source)
    return AuthComponent(
        settings,
        context.require("repo", RepoComponent),
        base_dir=manifest.base_dir,
        keys=keys,
        jwks_keys=jwks_keys,
    )


def _auth(component: AuthComponent, built: Mapping[str, Any]) -> Auth:
    return component.current


AUTH = ComponentSpec(
    "auth",
    _build,
    enabled=lambda m: m.auth is not None,
    key=("auth",),
    requires=("repo",),
    accessors={"auth": _auth},
    extras=(Extra("jose", "auth", ("auth",)),),
)
