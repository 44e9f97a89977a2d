from .base import Task, build_task, eval_batches

__all__ = ["Task", "build_task", "eval_batches"]
