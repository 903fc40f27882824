"""Component ``repo``: the repository and its item store (``node.repo``, ``node.store``).

Always present; first to start and last to stop. The repository opens at
start (its LevelDB files and lock), not at build, so a node that fails to
build never touches the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec, Extra
from msuite.runtime.errors import NodeError, where

if TYPE_CHECKING:
    from msuite.spec import Manifest

    from .repo import Repo

__all__ = ["REPO", "RepoComponent"]


class RepoComponent:
    """The repository, open between ``start`` and ``stop``."""

    name = "repo"
    requires: tuple[str, ...] = ()
    status_does_io = True
    """``status()`` asks LevelDB: the status board reads it in a worker thread."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.repo: Repo | None = None

    def opened(self) -> Repo:
        """The open repository; :class:`NodeError` while the node is not running."""
        if self.repo is None:
            raise NodeError("node.repo is open only while the node runs")
        return self.repo

    async def start(self) -> None:
        from .repo import Repo, RepoError

        try:
            self.repo = await asyncio.to_thread(Repo.for_manifest, self.manifest)
        except RepoError as exc:
            raise NodeError(f"{where(self.manifest, 'repo')}: {exc}") from None

    async def stop(self, grace: float) -> None:
        if self.repo is not None:
            repo, self.repo = self.repo, None
            await asyncio.to_thread(repo.close)

    def status(self) -> dict[str, Any]:
        return self.repo.status() if self.repo is not None else {"state": "closed"}


def _build(context: BuildContext) -> RepoComponent:
    return RepoComponent(context.manifest)


def _repo(component: RepoComponent, built: Mapping[str, Any]) -> Repo:
    return component.opened()


def _store(component: RepoComponent, built: Mapping[str, Any]) -> Any:
    return component.opened().store


REPO = ComponentSpec(
    "repo",
    _build,
    key=("repo",),
    accessors={"repo": _repo, "store": _store},
    extras=(Extra("plyvel", "leveldb", ("storage", "kv")),),
)
