"""The two-stage run behind ``checkpoints/hierarchical_small_cpu``.

Stage 1 (no variant): HierarchicalLOpt warm-started from the shipped MLPLOpt
(``lopt.init_from = "mlp_small_cpu"``). Its MLP is copied and the LSTM's
first-layer rows start at zero, so the run starts exactly at the MLPLOpt's
steps (``learned_opt.warm_start``); ES then learns what the per-tensor LSTM
adds (train- and validation-loss features, per-tensor conditioning). Same
task mix and estimator as ``shipped_mlp.py``: the 16 largest signature
groups of <= 11k inner parameters (6 of the 8 families: no autoencoder or
VAE), antithetic ES with 16 pairs, K=20, horizons 100-2000. The
validation-loss feature is fed every 10 inner steps,
and the outer learning rate is smaller (fine-tuning).

Stage 2 (``:end``): from stage 1's chosen theta, an end-weighted meta-loss
over longer runs (horizons 100-4000) at outer learning rate 5e-4, against
the short-horizon bias (DESIGN.md §8). It defaults to fine-tuning the
shipped ``hierarchical_small_cpu``; pass ``--config.lopt.init_from=PATH`` to
start from another theta.

Commands (the shipped checkpoint was trained with ``--num_local_processes=2``,
one process per core; on CPU, one process now makes one device per core,
which measured faster):
  export LOPT_DATA_DIR=/path/to/shared/data   # MNIST, Fashion-MNIST, text
  uv run lopt meta-train --config configs/shipped_hierarchical.py \\
      --workdir ~/lopt_runs/stage1
  uv run lopt meta-train --config configs/shipped_hierarchical.py:end \\
      --workdir ~/lopt_runs/stage2 \\
      --config.lopt.init_from=~/lopt_runs/stage1/eval_thetas/step_0003250

Expected runtime on 2 CPU cores: ~5-10 minutes compiling the 16 signature
groups (one compilation each, spread over the first outer steps), then
~0.3-0.4 s per outer step with two processes (measured).

Expected outcome (measured): in stage 1 the held-out ``eval/final_loss``
(4 test tasks, 500 inner steps) goes from 0.532 (the shipped MLPLOpt) to
0.495 at step 250, 0.473 at 2000 and 0.458-0.462 at 3250-3500, where it
flattens. The shipped run's first 150 steps used ``outer.num_steps=2000``,
a slightly different cosine schedule; it then resumed with 6000. In stage 2
the 500-step eval moves from 0.462 to 0.447 at step 250 and back to 0.488
at step 1250, since stage 2 optimizes the later part of longer runs. The
shipped theta is stage 2's step 1250 (``WORKDIR/eval_thetas``). On 100
test tasks it drifts up past the horizon on 16 tasks, against 22 for stage
1's theta (``checkpoints/hierarchical_small_cpu/EVALUATION.md``).
"""

import ml_collections

from configs import base, shipped_mlp

_VARIANTS = {
  "end": {
    "lopt.init_from": "hierarchical_small_cpu",
    "estimator.meta_loss_weighting": "end",
    "estimator.max_horizon": 4000,
    "outer.num_steps": 4000,
    "outer.learning_rate": 5e-4,
  },
  "smoke": {"outer.num_steps": 4},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The warm-started run; ``arg``: ``end`` (stage 2), ``smoke``, or both."""
  chosen = base.variants(arg, tuple(_VARIANTS), "shipped_hierarchical")
  c = shipped_mlp.get_config("smoke" if "smoke" in chosen else None)
  c.lopt.name = "hierarchical"
  c.lopt.init_from = "mlp_small_cpu"
  c.estimator.valid_every = 10
  c.outer.num_steps = 6000
  c.outer.learning_rate = 1e-3
  base.apply_variants(c, arg, _VARIANTS, "shipped_hierarchical")
  return c
