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

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The one-accelerator config; ``arg="smoke"`` shrinks it."""
  c = base.base()
  c.suite.num_specs = 2000
  c.suite.max_groups = 48

  c.estimator.num_pairs = 64
  c.estimator.min_horizon = 200
  c.estimator.max_horizon = 10_000

  c.outer.num_steps = 50_000
  c.outer.learning_rate = 1e-3
  c.outer.warmup_steps = 500

  c.eval.every = 1000
  c.eval.num_eval_tasks = 16
  c.eval.num_steps = 2000
  c.log.every = 50

  smoke = lambda c: base.smoke(c, overrides={"estimator.num_pairs": 8})
  base.apply_variants(c, arg, {"smoke": smoke}, "gpu")
  return c
