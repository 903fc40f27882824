"""The version gate of msuite's adjustments to py-libp2p: which are active, and why not.

Each adjustment registers here (:func:`register`) with what it touches
(a function listing what py-libp2p lacks of it), what happens without it, and,
for the newer ones, the exact py-libp2p versions it was verified on.

- An adjustment with ``verified`` versions is active only on those versions,
  and only if py-libp2p still has what it touches: on any other version it is
  left out, with one warning, until someone verifies it there and adds the
  version (its test fails meanwhile, which is the point).
- The older adjustments (``verified=None``) were written for the 0.8 series
  (:data:`WRITTEN_FOR`): on any version they are active where py-libp2p still
  has what they touch; outside the series one warning says so.

:func:`apply` runs the checks once per version (logging nothing the second
time); :func:`status` says which adjustments are active.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "WRITTEN_FOR",
    "active",
    "apply",
    "in_range",
    "installed_version",
    "missing_attributes",
    "register",
    "status",
]

log = logging.getLogger("msuite.p2p")

WRITTEN_FOR = (0, 8)
"""The py-libp2p release series (major, minor) the adjustments were written for."""


class Patch(NamedTuple):
    missing: Callable[[], list[str]]
    """What py-libp2p lacks of what the adjustment touches (empty: it has everything)."""
    without: str
    """What happens when the adjustment is not active."""
    verified: tuple[str, ...] | None
    """The exact py-libp2p versions it was verified on (None: the 0.8-series rule)."""


_PATCHES: dict[str, Patch] = {}


def register(
    name: str, missing: Callable[[], list[str]], without: str, *, verified: tuple[str, ...] | None = None
) -> None:
    """Register adjustment ``name`` (in the order of the table in :mod:`msuite.runtime.p2p.compat`)."""
    _PATCHES[name] = Patch(missing, without, verified)


def installed_version() -> str:
    return importlib.metadata.version("libp2p")


def in_range(version: str) -> bool:
    """Whether py-libp2p ``version`` is in the series the adjustments were written for."""
    found = re.match(r"(\d+)\.(\d+)(?!\d)", version)
    return found is not None and (int(found[1]), int(found[2])) == WRITTEN_FOR


_lock = threading.Lock()
_state: dict[str, Any] = {}
"""What the last :func:`apply` found (empty before the first)."""


def apply(version: str | None = None) -> dict[str, Any]:
    """Check py-libp2p, record which adjustments are active, route its logs; return :func:`status`.

    ``version`` is the installed py-libp2p's by default (tests pass another). Calling it
    again for the same version changes nothing and logs nothing. It patches nothing
    process-wide: the adjustments take effect where msuite asks for them."""
    from .logs import route_logs

    version = version or installed_version()
    with _lock:
        if _state.get("libp2p") != version:
            _state.clear()
            _state.update(_check(version))
            route_logs()
        return _copy(_state)


def status() -> dict[str, Any]:
    """``{"libp2p": version, "written_for": "0.8.x", "in_range": bool, "patches": {name: active}}``
    (``{"libp2p": version, "applied": False}`` before :func:`apply`)."""
    with _lock:
        if not _state:
            return {"libp2p": installed_version(), "applied": False}
        return _copy(_state)


def _check(version: str) -> dict[str, Any]:
    written_for = "{}.{}.x".format(*WRITTEN_FOR)
    supported = in_range(version)
    if not supported:
        log.warning(
            "py-libp2p %s is not %s, which msuite's adjustments to it were written for: "
            "each is used only where py-libp2p still has what it touches",
            version,
            written_for,
        )
    patches = {}
    for name, patch in _PATCHES.items():
        if patch.verified is not None and version not in patch.verified:
            log.warning(
                "py-libp2p %s: msuite's %s was verified on %s only: left out, so %s",
                version,
                name,
                ", ".join(patch.verified),
                patch.without,
            )
            patches[name] = False
            continue
        lacking = patch.missing()
        if lacking:
            log.warning(
                "py-libp2p %s lacks %s: msuite leaves it as it is, so %s",
                version,
                ", ".join(lacking),
                patch.without,
            )
        patches[name] = not lacking
    return {"libp2p": version, "written_for": written_for, "in_range": supported, "patches": patches}


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "patches": dict(state["patches"])}


def active(name: str) -> bool:
    """Whether adjustment ``name`` is active (runs :func:`apply` first if nothing did)."""
    state = _state or apply()
    return bool(state["patches"].get(name, False))


def missing_attributes(owner: Any, names: tuple[str, ...]) -> list[str]:
    """``owner.name`` for each of ``names`` that ``owner`` lacks (class attributes or annotations)."""
    present = set(dir(owner)) | set(getattr(owner, "__annotations__", {}))
    return [f"{getattr(owner, '__name__', owner)}.{name}" for name in names if name not in present]
