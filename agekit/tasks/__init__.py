"""Tasks as objects: what a model predicts decides its loss, metrics, data, evaluator and parity check.

Importing this package registers the built-in tasks (``age``, ``classification``, ``face_body``). A new task is one
file here: a :class:`~agekit.tasks.base.Task` subclass decorated with ``@register_task("name")``,
imported below; models name it in ``AgeModelCfg.task``.
"""
from .base import TASKS, Task, get_task, register_task, task_for_model
from . import age  # noqa: F401  (registers "age")
from . import classification  # noqa: F401  (registers "classification")
from . import face_body  # noqa: F401  (registers "face_body": MiVOLO's face + body)

__all__ = ["TASKS", "Task", "get_task", "register_task", "task_for_model"]
