"""Tiny meta-training run: MLPLOpt on small quadratics, for tests and demos.

Command:
  uv run lopt meta-train --config configs/tiny.py --workdir /tmp/lopt_tiny

Expected runtime: about 40 s on 2 idle CPU cores, almost all of it
compilation (the 200 outer steps themselves take ~1-2 s); a few minutes when
the cores are busy with other work.

Expected outcome: truncated ES (8 antithetic pairs, 10-step truncations of
50-200-step inner runs) trains a per-parameter MLP optimizer on quadratics of
dimension 2 and 8; the held-out metric ``eval/final_loss`` (mean normalized
loss of 4 test-split quadratics after 100 inner steps, in
``/tmp/lopt_tiny/metrics.jsonl``) drops from about 0.9 at step 0 to below
half of that by step 200 (measured: 0.89 -> 0.03). The final theta is
exported to ``/tmp/lopt_tiny/theta``.

The ``smoke`` arg (``--config configs/tiny.py:smoke``) runs 4 outer steps.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The tiny config; ``arg="smoke"`` shrinks it to a few steps."""
  c = base.base()
  c.lopt.name = "mlp"
  c.lopt.kwargs = ml_collections.ConfigDict({"hidden_size": 16})

  c.suite.families = ("quadratic",)
  c.suite.num_specs = 32
  c.suite.max_params = 8  # dimensions 2 and 8 only: two small compilations
  c.suite.max_groups = 2

  c.estimator.num_pairs = 8
  c.estimator.unroll_length = 10
  c.estimator.min_horizon = 50
  c.estimator.max_horizon = 200
  c.estimator.valid_every = 0

  c.outer.num_steps = 200
  c.outer.learning_rate = 1e-2
  c.outer.schedule = "constant"
  c.outer.clip_norm = 10.0

  c.eval.every = 50
  c.eval.num_eval_tasks = 4
  c.eval.num_steps = 100

  c.checkpoint.every = 50
  c.checkpoint.keep = 2
  c.log.every = 10

  smoke = lambda c: base.smoke(c, suite=False, evaluate=False)
  base.apply_variants(c, arg, {"smoke": smoke}, "tiny")
  return c
