"""The task manager every node has (``node.tasks``)."""

from .manager import (
    DuplicateTask,
    ManagerStopped,
    TaskCancelled,
    TaskContext,
    TaskHandle,
    TaskManager,
    TaskState,
)

__all__ = [
    "DuplicateTask",
    "ManagerStopped",
    "TaskCancelled",
    "TaskContext",
    "TaskHandle",
    "TaskManager",
    "TaskState",
]
