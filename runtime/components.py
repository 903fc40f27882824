"""The component protocol, the table line that builds one, and the order they start and stop in.

Every subsystem of a node is a component: a ``name``, the names it
``requires``, ``async start()``, ``async stop(grace)`` and ``status()``.
A component is made in two phases:

1. **Build** (:class:`ComponentSpec`'s ``build(context)``): everything that
   can fail on configuration happens here (compile routes, check files,
   register handlers and hooks), before any port is bound or file opened, and
   fails with a :class:`~msuite.runtime.errors.NodeError` that names the
   manifest position. The :class:`BuildContext` hands the factory the
   components it depends on *by name*: only those its spec lists in
   ``requires`` (always there) or ``uses`` (there when the manifest enables
   them); asking for any other name is a :class:`ComponentError`, so a
   spec's dependencies are the truth about what it uses.
2. **Start** (``start()``), in the order below; nothing is injected after
   build (no setters): a component reads what it depends on from the objects
   it was handed at build, once they have started.

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from .errors import NodeError

if TYPE_CHECKING:
    from types import ModuleType

    from msuite.spec import Manifest

    from .node import Node
    from .wiring import ServiceBinding

__all__ = [
    "USER_CODE_USES",
    "Accessor",
    "BuildContext",
    "Component",
    "ComponentError",
    "ComponentSpec",
    "Extra",
    "FrozenError",
    "HookList",
    "missing_extra",
    "start_order",
]

T = TypeVar("T")

USER_CODE_USES = (
    "repo",
    "auth",
    "tasks",
    "locker",
    "metrics",
    "tracing",
    "p2p",
    "events",
    "files",
    "shared",
    "clients",
)
"""What user code run by a server (``impl`` classes, HTTP handlers) may reach through the node:
a server that runs user code lists these in its ``uses``, so they start before it."""


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


class ComponentError(NodeError):
    """The components of a node don't fit together (unknown requirement, cycle, duplicate,
    a dependency used but not declared)."""


class FrozenError(NodeError):
    """A hook, route or handler was added to a node that has started (it would never run)."""


class HookList(list[T]):
    """A list of hooks that refuses additions once frozen (the node freezes it at start).

    Hooks are read once, when a server composes its call chain at start; one added
    after that would silently never run, so adding it raises :class:`FrozenError`.
    """

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.frozen = False

    def freeze(self) -> None:
        self.frozen = True

    def _check(self) -> None:
        if self.frozen:
            raise FrozenError(f"{self.what} are fixed once the node has started: add them before start")

    def append(self, item: T) -> None:
        self._check()
        super().append(item)

    def extend(self, items: Any) -> None:
        self._check()
        super().extend(items)

    def insert(self, index: Any, item: T) -> None:
        self._check()
        super().insert(index, item)

    def __setitem__(self, index: Any, item: Any) -> None:
        self._check()
        super().__setitem__(index, item)

    def __delitem__(self, index: Any) -> None:
        self._check()
        super().__delitem__(index)

    def remove(self, item: T) -> None:
        self._check()
        super().remove(item)

    def pop(self, index: Any = -1) -> T:
        self._check()
        return super().pop(index)

    def clear(self) -> None:
        self._check()
        super().clear()

    def __iadd__(self, items: Any) -> HookList[T]:  # type: ignore[override,misc]
        self._check()
        super().extend(items)
        return self


@dataclass(frozen=True)
class Extra:
    """Top-level module ``module`` comes with ``pip install 'msuite[extra]'``; ``key`` needs it."""

    module: str
    extra: str
    key: tuple[str, ...]


Accessor = Callable[[Any, Mapping[str, Any]], Any]
"""``accessor(component, built)`` -> what ``node.<name>`` returns (``built``: components by name)."""


def _always(manifest: Manifest) -> bool:
    return True


@dataclass(frozen=True)
class ComponentSpec:
    """One line of the node's component table: how to build a subsystem, and when.

    ``build(context)`` returns the component (nothing started). ``enabled``
    says from the manifest whether the node has it; ``key`` is the manifest
    key that enables it (named when a disabled subsystem is asked for, and where
    a missing extra is reported). ``requires`` must be built when this one is
    (enabling this one without them is a manifest error ``msuite validate``
    reports); ``uses`` are used when the manifest enables them. Both order the
    start. ``accessors`` name what ``node.<name>`` returns; ``extras`` say which
    optional install brings each third-party module the factory imports.
    """

    name: str
    build: Callable[[BuildContext], Component]
    enabled: Callable[[Manifest], bool] = _always
    key: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    accessors: Mapping[str, Accessor] = field(default_factory=dict)
    extras: tuple[Extra, ...] = ()


class BuildContext:
    """What a factory gets: the manifest, the node, and the components it declared, by name."""

    def __init__(
        self,
        manifest: Manifest,
        node: Node,
        built: Mapping[str, Component],
        spec: ComponentSpec,
        *,
        bindings: Sequence[ServiceBinding] = (),
        wiring: ModuleType | None = None,
    ) -> None:
        self.manifest = manifest
        self.node = node
        """The node, for what user code receives (``impl`` constructors, handlers)."""
        self.bindings = list(bindings)
        """The generated service bindings (``gen.wiring.SERVICES``), in manifest order."""
        self.wiring = wiring
        self._built = built
        self._spec = spec

    @property
    def dependencies(self) -> tuple[str, ...]:
        """What the built component must list as its ``requires``: the spec's ``requires``
        and those of its ``uses`` the manifest enables, in the spec's order."""
        spec = self._spec
        return spec.requires + tuple(u for u in spec.uses if u in self._built and u not in spec.requires)

    def require(self, name: str, kind: type[T]) -> T:
        """Component ``name``, which the spec lists in ``requires``."""
        if name not in self._spec.requires:
            raise ComponentError(f"component {self._spec.name!r} uses {name!r} without requiring it")
        found = self._built.get(name)
        if found is None:
            raise ComponentError(f"component {self._spec.name!r} requires {name!r}, which is not built")
        return _checked(found, kind, name)

    def use(self, name: str, kind: type[T]) -> T | None:
        """Component ``name`` when the manifest enables it (the spec lists it in ``uses``), else None."""
        if name not in self._spec.uses and name not in self._spec.requires:
            raise ComponentError(f"component {self._spec.name!r} uses {name!r} without declaring it")
        found = self._built.get(name)
        return None if found is None else _checked(found, kind, name)


def _checked(found: object, kind: type[T], name: str) -> T:
    if not isinstance(found, kind):
        raise ComponentError(f"component {name!r} is a {type(found).__name__}, not a {kind.__name__}")
    return found


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


def missing_extra(manifest: Manifest, table: Sequence[ComponentSpec], exc: ModuleNotFoundError) -> Exception:
    """A located error naming the extra to install for a third-party module that is not installed
    (the first line of ``table`` listing the module says which); ``exc`` itself for any other module."""
    from .errors import NodeError, where

    module = (exc.name or "").partition(".")[0]
    for spec in table:
        for extra in spec.extras:
            if extra.module == module:
                return NodeError(
                    f"{where(manifest, *extra.key, prefer_key=True)}: needs the {extra.extra} extra, which "
                    f"is not installed (no module named {module!r}): pip install 'msuite[{extra.extra}]'"
                )
    return exc
