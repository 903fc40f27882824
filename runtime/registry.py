"""The node's component table: every subsystem, in registration order.

This is the one list of what a node can be made of. The node builds the
components whose ``enabled(manifest)`` is true, in this order; each starts
after what it ``requires`` and ``uses`` (see :mod:`.components`), and among
those free to start the earlier line goes first. Stop is the exact reverse.

Adding a subsystem: write its package with a ``component.py`` holding a
:class:`~msuite.runtime.components.ComponentSpec` (factory, enable predicate,
manifest key, dependencies, accessors, extras), and add one line here. The
component modules import nothing heavy at module level, so this table costs
nothing for a node that leaves a subsystem out.

=====  ==============  ========================================  ==============================
line   component       what                                      present when
=====  ==============  ========================================  ==============================
1      ``repo``        repository and item store                 always
2      ``auth``        JWT and the ACL kept in the repo          ``auth:``
3      ``tasks``       task manager                              always
4      ``locker``      distributed locks                         ``locker:``
5      ``metrics``     Prometheus registry                       ``diagnostics.metrics``
6      ``tracing``     tracer and span reporter thread           ``diagnostics.tracing``
7      ``p2p``         libp2p host and its services (mesher,     ``p2p:``
                       pubsub, protocols, mDNS, DHT)
8      ``events``      typed events on the host's GossipSub      ``events:``
9      ``files``       UnixFS files, blockstore, Bitswap         ``files:``
10     ``shared``      the shared CRDT store (``node.shared``)   ``storage.shared``
11     ``clients``     channels to services by name              always
12     ``grpc``        gRPC server (``impl`` classes built)      ``grpc:``
13     ``http``        HTTP server, gateway, status, metrics     ``http:``
14     ``profiling``   ``/debug/`` pages                         ``diagnostics.profiling``
15     ``grpc_p2p``    the gRPC server over libp2p, announced    ``grpc.p2p``
                       to peers once the server is bound
=====  ==============  ========================================  ==============================
"""

from __future__ import annotations

from collections.abc import Callable

import msuite
from msuite.spec import Manifest

from .auth.component import AUTH
from .components import ComponentSpec
from .diagnostics.component import METRICS, PROFILING, TRACING
from .errors import NotSupported, where
from .events.component import EVENTS
from .files.component import FILES
from .grpc.component import CLIENTS, GRPC
from .http.component import HTTP
from .locks.component import LOCKER
from .p2p.component import GRPC_P2P, P2P
from .repo.component import REPO
from .shared.component import SHARED
from .tasks.component import TASKS

__all__ = ["COMPONENTS", "PLANNED", "planned_key", "refuse_planned"]

COMPONENTS: tuple[ComponentSpec, ...] = (
    REPO,
    AUTH,
    TASKS,
    LOCKER,
    METRICS,
    TRACING,
    P2P,
    EVENTS,
    FILES,
    SHARED,
    CLIENTS,
    GRPC,
    HTTP,
    PROFILING,
    GRPC_P2P,
)

PLANNED: tuple[tuple[tuple[str, ...], Callable[[Manifest], bool], str, str], ...] = ()
"""Manifest keys of subsystems this version does not build yet: (key, present, what, accessor).
``msuite up`` refuses a manifest that enables one, naming the key's line."""


def planned_key(accessor: str) -> str | None:
    """The manifest key of a planned subsystem whose accessor is ``accessor`` (None: not planned)."""
    return next((".".join(key) for key, _present, _what, name in PLANNED if name == accessor), None)


def refuse_planned(manifest: Manifest) -> None:
    """:class:`NotSupported`, one located line per key, when the manifest enables a planned subsystem."""
    problems = [
        f"{where(manifest, *key, prefer_key=True)}: {what} is not built by msuite "
        f"{msuite.__version__} yet; remove this key to run the node"
        for key, present, what, _accessor in PLANNED
        if present(manifest)
    ]
    if problems:
        raise NotSupported("\n".join(problems))
