"""Component ``shared`` (``storage.shared:``, with ``p2p:``; ``node.shared(ns)``).

It requires ``repo`` (the replica's state and the delta blocks live in the
repository) and ``p2p`` (head announcements on the host's GossipSub, deltas
over Bitswap), and uses ``files`` when the manifest enables it: the two
share the host's one Bitswap service and blockstore, and ``files.gc`` keeps
the deltas' blocks. Without ``files`` it adds the Bitswap service itself. With
``auth`` it keeps the ACL's run-time entries in the shared namespace
``msuite.acl`` (see :mod:`msuite.runtime.auth.acl`). It
uses ``metrics`` when enabled (counters read at scrape time). ``shared`` is in
``USER_CODE_USES``: user code may open namespaces from its ``impl``
constructors and handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msuite.runtime.components import BuildContext, ComponentSpec, Extra

if TYPE_CHECKING:
    from .shared import Shared

__all__ = ["SHARED"]


def _build(context: BuildContext) -> Shared:
    from msuite.runtime.files.bitswap import Bitswap
    from msuite.runtime.files.files import Files
    from msuite.runtime.p2p.host import P2PHost
    from msuite.runtime.repo.component import RepoComponent

    from .shared import Shared

    host = context.require("p2p", P2PHost)
    repo = context.require("repo", RepoComponent)
    files = context.use("files", Files)
    if files is not None:
        bitswap = files.bitswap
    else:
        sync = context.manifest.storage.sync

        def open_store() -> Any:
            return repo.opened().blockstore(sync=sync)

        bitswap = Bitswap(open_store, dht=lambda: host.service("dht"))  # type: ignore[arg-type,return-value]
        host.add_service(bitswap)
    from msuite.runtime.auth.component import AuthComponent

    shared = Shared(context.manifest, host, repo, bitswap, context.dependencies)
    shared.auth = context.use("auth", AuthComponent)
    if files is not None:
        files.keep_blocks(shared.applied_keys)
    if context.manifest.diagnostics.metrics is not None:
        from msuite.runtime.diagnostics.component import MetricsComponent

        from .metrics import SharedCollector

        metrics = context.use("metrics", MetricsComponent)
        if metrics is not None:
            metrics.metrics.register(SharedCollector(shared))
    return shared


SHARED = ComponentSpec(
    "shared",
    _build,
    enabled=lambda m: m.storage.shared is not None and m.p2p is not None,
    key=("storage", "shared"),
    requires=("repo", "p2p"),
    uses=("auth", "files", "metrics"),
    extras=(
        Extra("multiformats", "shared", ("storage", "shared")),
        Extra("dag_cbor", "shared", ("storage", "shared")),
    ),
)
