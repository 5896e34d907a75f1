"""Task families, real datasets and deterministic suites of sampled tasks.

The public API is the names below (``__all__``); the README uses only these.

Tasks and specs (``base``):
  ``Task`` (init, loss, value_and_grad, batch, normalize), ``TaskSpec``,
  ``TaskFamily``; ``stack_tasks``, ``vmap_axes`` and ``index_task`` to run
  a group of same-signature tasks as one ``vmap``.
Suites (``suite``): ``sample_suite``, ``get_task``, ``parse_name``,
  ``group_by_signature``, ``split_of``, ``num_params``.
Families (``registry``): ``FAMILIES`` and ``register_family``.
Your own task (``custom``): ``make_task`` and ``register_task``.
Augmentation (``augment``): ``Augmentation`` and ``AugmentedSpec``.
Datasets: the ``task_suite.data`` package.
"""

from task_suite import data
from task_suite.augment import Augmentation, AugmentedSpec
from task_suite.base import (
  Task,
  TaskFamily,
  TaskSpec,
  index_task,
  stack_tasks,
  vmap_axes,
)
from task_suite.custom import make_task, register_task
from task_suite.registry import FAMILIES, register_family
from task_suite.suite import (
  get_task,
  group_by_signature,
  num_params,
  parse_name,
  sample_suite,
  split_of,
)

__all__ = [
  "FAMILIES",
  "Augmentation",
  "AugmentedSpec",
  "Task",
  "TaskFamily",
  "TaskSpec",
  "data",
  "get_task",
  "group_by_signature",
  "index_task",
  "make_task",
  "num_params",
  "parse_name",
  "register_family",
  "register_task",
  "sample_suite",
  "split_of",
  "stack_tasks",
  "vmap_axes",
]
