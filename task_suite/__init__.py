"""Task families, real datasets and deterministic suites of sampled tasks."""

from task_suite.base import (  # noqa: F401
  Task,
  TaskFamily,
  TaskSpec,
  index_task,
  stack_tasks,
  vmap_axes,
)
from task_suite.registry import FAMILIES  # noqa: F401
from task_suite.suite import (  # noqa: F401
  get_task,
  group_by_signature,
  num_params,
  parse_name,
  sample_suite,
)
