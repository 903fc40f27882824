"""The task manager every node has (``node.tasks``)."""

from .manager import DuplicateTask, ManagerStopped, TaskContext, TaskHandle, TaskManager, TaskState

__all__ = ["DuplicateTask", "ManagerStopped", "TaskContext", "TaskHandle", "TaskManager", "TaskState"]
