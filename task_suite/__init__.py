"""Task families, real datasets and deterministic suites of sampled tasks."""

from task_suite.base import (  # noqa: F401
  Task,
  TaskFamily,
  TaskSpec,
  index_task,
  stack_tasks,
  vmap_axes,
)
