"""Component ``files`` (``files:``, with ``p2p:``; ``node.files``).

It requires ``repo`` (the blockstore and the pins live in the repository)
and ``p2p`` (its Bitswap service runs on the host), and uses ``metrics`` when
the manifest enables it (its counters are read at scrape time). The Bitswap
service is added to the host at build, so it serves from the host's start;
it opens the repository's blockstore as it starts, after ``repo``. ``files``
is in ``USER_CODE_USES``: user code may add and get files from its ``impl``
constructors and handlers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec, Extra

if TYPE_CHECKING:
    from .files import Files

__all__ = ["FILES"]


def _build(context: BuildContext) -> Files:
    from msuite.runtime.p2p.host import P2PHost
    from msuite.runtime.repo.component import RepoComponent

    from .files import Files

    files = Files(
        context.manifest,
        context.require("p2p", P2PHost),
        context.require("repo", RepoComponent),
        context.dependencies,
    )
    if context.manifest.diagnostics.metrics is not None:
        from msuite.runtime.diagnostics.component import MetricsComponent

        from .metrics import FilesCollector

        metrics = context.use("metrics", MetricsComponent)
        if metrics is not None:
            metrics.metrics.register(FilesCollector(files))
    return files


def _files(component: Files, built: Mapping[str, Any]) -> Files:
    return component


FILES = ComponentSpec(
    "files",
    _build,
    enabled=lambda m: m.files is not None and m.p2p is not None,
    key=("files",),
    requires=("repo", "p2p"),
    uses=("metrics",),
    accessors={"files": _files},
    extras=(Extra("multiformats", "files", ("files",)),),
)
