"""The run that produced the shipped checkpoint ``checkpoints/mlp_small_cpu``.

MLPLOpt (2,338 meta-parameters; the per-parameter half of the hierarchical
optimizer) meta-trained with antithetic truncated ES over every family of the
default train suite, restricted to the 16 largest signature groups with at
most 11,000 inner parameters (as the suite samples them today: 8x8 and
16x16 image MLPs and CNNs, small char-RNNs, regression, quadratics, 2D test
functions; no autoencoder or VAE). This is DESIGN.md §8's recipe (K=20,
sigma=0.01, 16 pairs, horizons 100-2000, outer
Adam 2e-3 with cosine decay, clip 30) on a broader task mix.

Command:
  export LOPT_DATA_DIR=/path/to/shared/data   # MNIST, Fashion-MNIST, text
  uv run lopt meta-train --config configs/shipped_mlp.py \\
      --workdir ~/lopt_runs/shipped_mlp

Expected runtime on 2 CPU cores: ~10-15 minutes compiling the 16 signature
groups (one compilation each, spread over the first outer steps), then
~0.05-0.1 s per outer step (~10-20k inner steps/s); the shipped checkpoint
is from ~1,500 outer steps (about 40 minutes on a CPU shared with other
work).

Expected outcome: the meta-loss falls from ~1.08 to ~0.3 and the held-out
``eval/final_loss`` (4 test-split tasks, 500 inner steps) from ~1.18 to
~0.55 within 1,500 outer steps (WORKDIR/metrics.jsonl).
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The shipped MLPLOpt run; ``arg="smoke"`` runs 4 outer steps."""
  c = base.base()
  c.lopt.name = "mlp"
  c.suite.num_specs = 2000
  c.suite.max_params = 11000
  c.suite.max_groups = 16

  c.estimator.num_pairs = 16
  c.estimator.min_horizon = 100
  c.estimator.max_horizon = 2000
  c.estimator.valid_every = 0

  c.outer.num_steps = 3000
  c.outer.learning_rate = 2e-3

  c.eval.every = 250
  c.eval.num_eval_tasks = 4
  c.eval.num_steps = 500
  c.checkpoint.every = 50
  c.log.every = 10
  c.log.progress = False

  # The smoke run: this run's specs and population, 2 of its groups.
  smoke = lambda c: base.smoke(
    c, suite=False, evaluate=False, overrides={"suite.max_groups": 2}
  )
  base.apply_variants(c, arg, {"smoke": smoke}, "shipped_mlp")
  return c
