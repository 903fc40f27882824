"""Component ``locker`` (``locker:``; ``node.locker``): the backend the manifest names.

Built from the settings alone (a network backend connects on first use);
stopping releases every lease this node holds and closes the connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec, Extra

if TYPE_CHECKING:
    from msuite.spec import Manifest

    from .locker import Locker

__all__ = ["LOCKER", "LockerComponent", "make_locker"]


def make_locker(manifest: Manifest) -> Locker:
    """The locker of the manifest's ``locker:`` backend (its client library imported here)."""
    settings = manifest.locker
    assert settings is not None
    if settings.backend == "redis":
        from .redis import RedisLocker

        return RedisLocker.from_settings(settings, manifest.base_dir)
    if settings.backend == "zookeeper":
        from .zookeeper import ZooKeeperLocker

        return ZooKeeperLocker.from_settings(settings)
    from .memory import MemoryLocker

    return MemoryLocker()


class LockerComponent:
    name = "locker"
    requires: tuple[str, ...] = ()

    def __init__(self, locker: Locker) -> None:
        self.locker = locker

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        await self.locker.close()

    def status(self) -> dict[str, Any]:
        return dict(self.locker.status())


def _build(context: BuildContext) -> LockerComponent:
    return LockerComponent(make_locker(context.manifest))


def _locker(component: LockerComponent, built: Mapping[str, Any]) -> Locker:
    return component.locker


LOCKER = ComponentSpec(
    "locker",
    _build,
    enabled=lambda m: m.locker is not None,
    key=("locker",),
    accessors={"locker": _locker},
    extras=(
        Extra("redis", "redis", ("locker", "backend")),
        Extra("aiozk", "zookeeper", ("locker", "backend")),
    ),
)
