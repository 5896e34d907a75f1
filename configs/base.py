"""What the meta-training configs share (big_vision style: one ``base()``).

Each ``configs/NAME.py`` starts from ``base()``, sets what makes it itself,
and applies ``smoke(c)`` for its ``smoke`` arg; ``variants`` reads a
comma-separated ``arg``. Every field exists in ``base()`` (it starts from
``meta_train.config.default_config_dict()``), so the command line can
override any of them.
"""

from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from meta_train import config as config_lib


def base() -> ml_collections.ConfigDict:
  """A HierarchicalLOpt trained by truncated ES with a cosine-decayed Adam.

  The values every CPU/GPU run here shares: the default family mix, 20-step
  truncations with ES std 0.01 and a validation loss every 10 inner steps,
  Adam with a cosine schedule to 10% and global-norm clip 30, and 3
  checkpoints kept, one every 500 outer steps.
  """
  c = config_lib.default_config_dict()
  c.seed = 0
  c.lopt.name = "hierarchical"
  c.lopt.kwargs = ml_collections.ConfigDict({})
  c.suite.families = ()

  c.estimator.name = "es"
  c.estimator.unroll_length = 20
  c.estimator.std = 0.01
  c.estimator.valid_every = 10

  c.outer.optimizer = "adam"
  c.outer.schedule = "cosine"
  c.outer.final_lr_fraction = 0.1
  c.outer.clip_norm = 30.0

  c.checkpoint.every = 500
  c.checkpoint.keep = 3
  return c


def smoke(
  c: ml_collections.ConfigDict,
  *,
  suite: bool = True,
  evaluate: bool = True,
  overrides: Mapping[str, Any] | None = None,
) -> ml_collections.ConfigDict:
  """Shrinks ``c`` in place to 4 outer steps: a check of the setup.

  It checkpoints every 2 steps and logs every step.

  Args:
    c: the config.
    suite: also shrink the suite to 40 specs in 2 signature groups.
    evaluate: evaluate every 2 steps on 1 task for 20 inner steps (else
      never).
    overrides: flattened fields set last (``{"estimator.num_pairs": 8}``).

  Returns:
    ``c``.
  """
  c.outer.num_steps = 4
  c.outer.warmup_steps = 0
  c.checkpoint.every = 2
  c.log.every = 1
  if suite:
    c.suite.num_specs = 40
    c.suite.max_groups = 2
  c.eval.every = 2 if evaluate else 0
  if evaluate:
    c.eval.num_eval_tasks = 1
    c.eval.num_steps = 20
  c.update_from_flattened_dict(dict(overrides or {}))
  return c


def variants(arg: str | None, valid: tuple[str, ...], name: str) -> set[str]:
  """The comma-separated variants of ``arg`` (``"pes,long"``).

  Raises:
    ValueError: naming ``configs/{name}.py`` and the valid variants, for an
      unknown one.
  """
  chosen = {v for v in (arg or "").split(",") if v}
  unknown = sorted(chosen - set(valid))
  if unknown:
    raise ValueError(
      f"configs/{name}.py: unknown variant(s) {unknown}; valid: "
      f"{', '.join(valid)}"
    )
  return chosen


Variant = Mapping[str, Any] | Callable[[ml_collections.ConfigDict], Any]


def apply_variants(
  c: ml_collections.ConfigDict,
  arg: str | None,
  table: Mapping[str, Variant],
  name: str,
) -> set[str]:
  """Applies the comma-separated variants of ``arg`` to ``c``, in place.

  Args:
    c: the config.
    arg: the config file's arg (``"pes,long"``), or None.
    table: each variant's change: flattened fields
      (``{"estimator.name": "pes"}``) or a function of ``c``. Chosen ones
      apply in the table's order, whatever the order in ``arg``.
    name: the config file's name, for the error.

  Returns:
    The chosen variants.

  Raises:
    ValueError: naming ``configs/{name}.py`` and the valid variants, for an
      unknown one.
  """
  chosen = variants(arg, tuple(table), name)
  for variant, change in table.items():
    if variant not in chosen:
      continue
    if callable(change):
      change(c)
    else:
      c.update_from_flattened_dict(dict(change))
  return chosen
