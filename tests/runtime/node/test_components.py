"""Components: the start order (requirements first, then table order), the build context, freezing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msuite.runtime.components import (
    BuildContext,
    ComponentError,
    ComponentSpec,
    FrozenError,
    HookList,
    start_order,
)
from msuite.runtime.node import Node
from msuite.spec import Manifest


class Part:
    def __init__(self, name: str, *requires: str) -> None:
        self.name = name
        self.requires = requires

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...

    def status(self) -> dict[str, Any]:
        return {}


def names(parts: list[Any]) -> list[str]:
    return [p.name for p in parts]


def test_registration_order_when_nothing_is_required() -> None:
    assert names(start_order([Part("a"), Part("b"), Part("c")])) == ["a", "b", "c"]


def test_requirements_start_first_and_the_rest_keep_their_order() -> None:
    parts = [Part("http", "grpc"), Part("grpc", "repo"), Part("tasks"), Part("repo")]
    assert names(start_order(parts)) == ["tasks", "repo", "grpc", "http"]


def test_the_order_does_not_depend_on_anything_but_the_input() -> None:
    parts = [Part("x", "b"), Part("a"), Part("b"), Part("y", "a", "b")]
    assert [names(start_order(parts)) for _ in range(5)] == [["a", "b", "x", "y"]] * 5


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([Part("a"), Part("a")], "two components are named 'a'"),
        ([Part("a", "ghost")], "component 'a' requires 'ghost', which is not built"),
        ([Part("a", "b"), Part("b", "a"), Part("c")], "cycle: a, b"),
    ],
)
def test_bad_graphs_are_refused(parts: list[Part], message: str) -> None:
    with pytest.raises(ComponentError, match=message):
        start_order(parts)


# ---------------------------------------------------------------- the build context and the table


def _built_with(extra: ComponentSpec, tmp_path: Path) -> Node:
    from msuite.runtime.registry import COMPONENTS

    node = Node(Manifest(name="table", repo=str(tmp_path / "repo")), components=(*COMPONENTS, extra))
    node.build()
    return node


def test_a_factory_using_a_component_it_did_not_declare_fails_at_build(tmp_path: Path) -> None:
    from msuite.runtime.tasks.component import TasksComponent

    def build(context: BuildContext) -> Part:
        context.require("tasks", TasksComponent)  # not in its spec
        return Part("sneaky")

    with pytest.raises(ComponentError, match="component 'sneaky' uses 'tasks' without requiring it"):
        _built_with(ComponentSpec("sneaky", build), tmp_path)


def test_an_optional_use_must_be_declared_too(tmp_path: Path) -> None:
    def build(context: BuildContext) -> Part:
        context.use("locker", object)
        return Part("sneaky")

    with pytest.raises(ComponentError, match="uses 'locker' without declaring it"):
        _built_with(ComponentSpec("sneaky", build), tmp_path)


def test_a_declared_use_the_manifest_leaves_out_is_none_and_not_a_dependency(tmp_path: Path) -> None:
    from msuite.runtime.tasks.component import TasksComponent

    seen: dict[str, Any] = {}

    def build(context: BuildContext) -> Part:
        seen["tasks"] = context.require("tasks", TasksComponent)
        seen["locker"] = context.use("locker", object)
        return Part("mine", *context.dependencies)

    node = _built_with(ComponentSpec("mine", build, requires=("tasks",), uses=("locker",)), tmp_path)
    assert isinstance(seen["tasks"], TasksComponent) and seen["locker"] is None
    assert node.component("mine").requires == ("tasks",)


def test_a_component_whose_requires_differ_from_its_spec_is_refused(tmp_path: Path) -> None:
    def build(context: BuildContext) -> Part:
        return Part("liar")  # its spec requires tasks

    with pytest.raises(
        ComponentError, match=r"'liar' was built as 'liar' requiring \(\); its spec says \('tasks',\)"
    ):
        _built_with(ComponentSpec("liar", build, requires=("tasks",)), tmp_path)


def test_every_table_line_has_a_unique_name_and_declares_known_names() -> None:
    from msuite.runtime.registry import COMPONENTS

    names = [spec.name for spec in COMPONENTS]
    assert len(set(names)) == len(names)
    for index, spec in enumerate(COMPONENTS):
        earlier = set(names[:index])
        assert set(spec.requires) <= earlier, spec.name  # the table lists what is needed first
        assert set(spec.uses) <= set(names), spec.name


def test_hooks_added_after_a_freeze_raise() -> None:
    hooks: HookList[str] = HookList("test hooks")
    hooks.append("a")
    hooks.extend(["b"])
    hooks.freeze()
    for add in (lambda: hooks.append("c"), lambda: hooks.extend(["c"]), lambda: hooks.insert(0, "c")):
        with pytest.raises(FrozenError, match="test hooks are fixed once the node has started"):
            add()
    assert list(hooks) == ["a", "b"]
