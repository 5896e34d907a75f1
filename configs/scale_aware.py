"""The scale-aware HierarchicalLOpt campaign (issue 19), in resumable legs.

The optimizer: the paper's HierarchicalLOpt with ``step_scale="init_rms"``
(each tensor's step is relative to its RMS at the start of the run and
multiplied by a per-tensor LSTM head, so it can both shrink and grow per
task) and progress features (the fraction of the run done, so it can
anneal). It warm-starts from the shipped ``hierarchical_small_cpu``: the
new inputs read zero rows and the step head starts at zero, so at step 0 it
takes the shipped steps times ``RMS(initial tensor) * step_mult / 1e-3``
(``learned_opt.warm_start``). Measured before any meta-training, on 20
held-out test tasks at 500 steps (``lopt evaluate --num-tasks 20
--max-params 11000 --steps 500 --seeds 1``): mean normalized final loss
0.300 against the shipped theta's 0.329 on the same tasks; the same warm
start into ``step_scale="param_rms"`` (the RMS of the current parameters,
VeLO's rule) diverged on 5 of 7 MLP classifiers (mean 2.48): steps that
follow the weights' scale and weights that follow the steps grow each other.

Meta-training: the shipped runs' task mix (16 signature groups of <= 11k
parameters across all 8 families), antithetic truncated ES with 16 pairs,
K=20, log-uniform horizons 100-2000, and a log meta-loss
(``estimator.meta_loss_transform="log"``: each decade of loss counts alike,
against stalling above the loss floor). Outer Adam at a constant 1e-3 after
a warm-up, so that legs can be appended without a schedule that ends.

Variants (comma-separated, e.g. ``configs/scale_aware.py:paper``), for the
ablations at equal compute:
  paper   the paper's absolute step (no progress features), same recipe;
  linear  the linear meta-loss instead of the log one;
  smoke   a few outer steps on two signature groups.

A leg (~2 hours on 2 CPU cores; re-running the command resumes):
  export LOPT_DATA_DIR=/path/to/shared/data
  nice -n 10 uv run lopt meta-train --config configs/scale_aware.py \\
      --workdir runs/scale_aware --config.outer.num_steps=STOP_STEP
Each leg raises ``outer.num_steps`` (the step at which it stops cleanly);
the schedule is constant, so a leg's stop step does not change the math.
The leg's state (config, latest checkpoint: theta, outer Adam state, step)
and its curve are kept in ``campaigns/scale_aware/``; see its README.md for
the commands that restore a workdir from it and the legs run so far.
"""

import ml_collections

from configs import base, shipped_mlp

_VARIANTS = ("paper", "linear", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The campaign config; ``arg``: comma-separated variants."""
  variants = base.variants(arg, _VARIANTS, "scale_aware")
  c = shipped_mlp.get_config("smoke" if "smoke" in variants else None)
  c.lopt.name = "hierarchical"
  c.lopt.init_from = "hierarchical_small_cpu"
  c.lopt.kwargs = ml_collections.ConfigDict(
    {"step_scale": "init_rms", "progress_features": True, "step_mult": 0.01}
  )
  c.estimator.valid_every = 10
  c.estimator.meta_loss_transform = "log"
  c.outer.num_steps = 20_000
  c.outer.learning_rate = 1e-3
  c.outer.schedule = "constant"
  c.outer.warmup_steps = 100
  c.eval.every = 250
  c.checkpoint.every = 50
  if "paper" in variants:
    c.lopt.kwargs = ml_collections.ConfigDict({})
  if "linear" in variants:
    c.estimator.meta_loss_transform = "linear"
  if "smoke" in variants:
    c.outer.num_steps = 4
    c.outer.warmup_steps = 0
  return c
