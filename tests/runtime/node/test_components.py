"""The start order of components: requirements first, then registration order."""

from __future__ import annotations

from typing import Any

import pytest

from msuite.runtime.components import ComponentError, start_order


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
