"""Meta-training on one accelerator (GPU/TPU): HierarchicalLOpt, full suite.

Command:
  uv run lopt meta-train --config configs/gpu.py --workdir ~/lopt_runs/gpu

Expected runtime (an estimate: no accelerator was available to measure it):
about a day on one H100-class GPU for 50,000 outer steps of 64 antithetic
pairs x 20 inner steps, plus 30-60 minutes compiling one step per signature
group (at most 48).

Expected outcome: meta-loss and held-out ``eval/final_loss`` (16 test-split
tasks, 2,000 inner steps) fall steadily; the exported theta
(WORKDIR/theta) beats Adam at its default learning rate on most held-out
in-distribution tasks after a few thousand outer steps and approaches
per-task-tuned Adam later (DESIGN.md §8 reports the CPU-scale analogue).
The ``smoke`` arg runs 4 outer steps on 2 groups to check the setup.
"""

import ml_collections

from meta_train import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The one-accelerator config; ``arg="smoke"`` shrinks it."""
  c = config_lib.default_config_dict()
  c.seed = 0
  c.lopt.name = "hierarchical"
  c.lopt.kwargs = ml_collections.ConfigDict({})

  c.suite.families = ()
  c.suite.num_tasks = 2000
  c.suite.max_params = 0
  c.suite.max_groups = 48

  c.estimator.name = "es"
  c.estimator.num_tasks = 64
  c.estimator.unroll_length = 20
  c.estimator.std = 0.01
  c.estimator.min_horizon = 200
  c.estimator.max_horizon = 10_000
  c.estimator.valid_every = 10

  c.outer.num_steps = 50_000
  c.outer.optimizer = "adam"
  c.outer.learning_rate = 1e-3
  c.outer.schedule = "cosine"
  c.outer.warmup_steps = 500
  c.outer.final_lr_fraction = 0.1
  c.outer.clip_norm = 30.0

  c.eval.every = 1000
  c.eval.num_tasks = 16
  c.eval.num_steps = 2000

  c.checkpoint.every = 500
  c.checkpoint.keep = 3
  c.log.every = 50

  if arg == "smoke":
    c.suite.num_tasks = 40
    c.suite.max_groups = 2
    c.estimator.num_tasks = 8
    c.outer.num_steps = 4
    c.outer.warmup_steps = 0
    c.eval.every = 2
    c.eval.num_tasks = 1
    c.eval.num_steps = 20
    c.checkpoint.every = 2
    c.log.every = 1
  elif arg:
    raise ValueError(f"configs/gpu.py: unknown arg {arg!r}; valid: smoke")
  return c
