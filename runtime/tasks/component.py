"""Component ``tasks`` (always present; ``node.tasks``): the task manager with ``tasks:`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msuite.runtime.components import BuildContext, ComponentSpec

from .manager import TaskManager

__all__ = ["TASKS", "TasksComponent"]


class TasksComponent:
    """The node's :class:`TaskManager`, started and stopped with the node."""

    name = "tasks"
    requires: tuple[str, ...] = ()

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self, grace: float) -> None:
        await self.manager.stop(grace)

    def status(self) -> dict[str, Any]:
        return self.manager.status()


def _build(context: BuildContext) -> TasksComponent:
    return TasksComponent(TaskManager.for_manifest(context.manifest))


def _tasks(component: TasksComponent, built: Mapping[str, Any]) -> TaskManager:
    return component.manager


TASKS = ComponentSpec("tasks", _build, key=("tasks",), accessors={"tasks": _tasks})
