"""``node.status``: the sections of ``GET /status`` (``diagnostics.status``).

The document holds the node's name, version, state and uptime, the process's
open-files limits (:func:`open_files`), its services with the addresses they
are served on, one section per started component
(its ``status()``, read in a worker thread when the component sets
``status_does_io``, as the repository does), then the users' own sections in the order they were added. A
section that raises shows ``{"error": ...}``; the rest of the page is served.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import resource
from collections.abc import Callable, Collection, Sequence
from typing import Any

import msuite
from msuite.runtime.components import Component

__all__ = ["REPORT_KEYS", "StatusBoard", "open_files"]

log = logging.getLogger("msuite.node")

REPORT_KEYS = frozenset({"node", "version", "state", "uptime_s", "open_files", "services"})
"""The report's own keys; component names are taken too."""


def open_files() -> dict[str, int | None]:
    """The process's open-files limits, ``soft`` and ``hard`` (None: unlimited), and the descriptors
    ``open`` now (None where the system does not list them: Linux's ``/proc/self/fd``)."""

    def limit(value: int) -> int | None:
        return None if value == resource.RLIM_INFINITY else value

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        count: int | None = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own descriptor
    except OSError:
        count = None
    return {"soft": limit(soft), "hard": limit(hard), "open": count}


class StatusBoard:
    """``node.status``: add your own sections with :meth:`add`."""

    def __init__(
        self,
        node: str,
        *,
        state: Callable[[], str],
        uptime: Callable[[], float],
        services: Callable[[], dict[str, Any]],
        components: Callable[[], Sequence[Component]],
        reserved: Collection[str] = (),
    ) -> None:
        self._node = node
        self._state = state
        self._uptime = uptime
        self._services = services
        self._components = components
        self._reserved = REPORT_KEYS | frozenset(reserved)
        self._sections: dict[str, Callable[[], Any]] = {}

    def add(self, name: str, fn: Callable[[], Any]) -> None:
        """Add section ``name``: ``fn()`` (sync or async) returns its JSON-able content."""
        if name in self._sections or name in self._reserved:
            raise ValueError(f"status section {name!r} exists already")
        self._sections[name] = fn

    async def report(self) -> dict[str, Any]:
        """The whole status document."""
        report: dict[str, Any] = {
            "node": self._node,
            "version": msuite.__version__,
            "state": self._state(),
            "uptime_s": round(self._uptime(), 3),
            "open_files": open_files(),
            "services": self._services(),
        }
        for component in self._components():
            if getattr(component, "status_does_io", False):  # the repository asks LevelDB
                report[component.name] = await asyncio.to_thread(component.status)
            else:
                report[component.name] = component.status()
        for name, fn in self._sections.items():
            try:
                value = fn()
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                log.exception("status section %s failed", name)
                value = {"error": f"{type(exc).__name__}: {exc}"}
            report[name] = value
        return report
