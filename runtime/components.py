"""The component protocol and the order components start and stop in.

Every subsystem of a node is a component: a ``name``, the names it
``requires``, ``async start()``, ``async stop(grace)`` and ``status()``.

Rules the node follows (and :func:`start_order` computes):

- A component starts after every component it requires; among components
  free to start, the one registered first goes first. The order is a pure
  function of the registration order and the requirements: no randomness.
- Components stop in the exact reverse of the order they started in, so a
  component is still running while anything that uses it stops.
- ``draining()``, when a component has it, is called on every started
  component (in stop order) before any ``stop``: health checks turn
  NOT_SERVING while everything still works.
- ``stop(grace)`` gets the time left of the node's grace period; it stops
  accepting new work at once, lets in-flight work finish within ``grace``,
  then closes. It is only called on a component whose ``start`` returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Component", "ComponentError", "start_order"]


@runtime_checkable
class Component(Protocol):
    """One subsystem of a node."""

    name: str
    """Unique within the node: ``repo``, ``auth``, ``grpc``, ``http``..."""
    requires: tuple[str, ...]
    """Names of the components that must start before this one (and stop after it)."""

    async def start(self) -> None:
        """Acquire resources and begin serving. On failure, release what was taken and raise."""

    async def stop(self, grace: float) -> None:
        """Stop accepting work, let in-flight work finish within ``grace`` seconds, then close."""

    def status(self) -> dict[str, Any]:
        """A JSON-able summary for ``GET /status``. Cheap: no I/O."""


class ComponentError(Exception):
    """The components of a node don't fit together (unknown requirement, cycle, duplicate)."""


def start_order(components: Sequence[Component]) -> list[Component]:
    """The components in the order they start: requirements first, then registration order.

    Raises :class:`ComponentError` for a duplicate name, a requirement on a
    component that is not there, or a cycle.
    """
    by_name: dict[str, Component] = {}
    for component in components:
        if component.name in by_name:
            raise ComponentError(f"two components are named {component.name!r}")
        by_name[component.name] = component
    for component in components:
        for needed in component.requires:
            if needed not in by_name:
                raise ComponentError(f"component {component.name!r} requires {needed!r}, which is not built")
    ordered: list[Component] = []
    placed: set[str] = set()
    while len(ordered) < len(components):
        for component in components:
            if component.name not in placed and all(r in placed for r in component.requires):
                ordered.append(component)
                placed.add(component.name)
                break
        else:
            stuck = ", ".join(c.name for c in components if c.name not in placed)
            raise ComponentError(f"components require each other in a cycle: {stuck}")
    return ordered
