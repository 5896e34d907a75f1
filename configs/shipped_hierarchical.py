"""HierarchicalLOpt warm-started from the shipped MLPLOpt, then meta-trained.

The LSTM half is new: ``lopt.init_from = "mlp_small_cpu"`` copies the shipped
per-parameter MLP into the hierarchical optimizer with the LSTM's first-layer
rows at zero, so the run starts exactly at the shipped optimizer's steps
(``learned_opt.warm_start``) and ES then learns what the per-tensor LSTM adds
(train- and validation-loss features, per-tensor conditioning). Same task mix
and estimator as ``shipped_mlp.py`` (16 signature groups of <= 11k inner
parameters across all 8 families, antithetic ES, 16 pairs, K=20, horizons
100-2000), with the validation-loss feature fed every 10 inner steps and a
smaller outer learning rate (fine-tuning).

Command (one process per core):
  export LOPT_DATA_DIR=/path/to/shared/data   # MNIST, Fashion-MNIST, text
  uv run lopt meta-train --config configs/shipped_hierarchical.py \\
      --workdir ~/lopt_runs/shipped_hierarchical --num_local_processes=2

Expected runtime on 2 CPU cores: ~15-30 minutes compiling the 16 signature
groups (one compilation each, spread over the first outer steps), then
~0.1-0.2 s per outer step; 2,000 outer steps in a few hours.

Expected outcome: the meta-loss starts where ``shipped_mlp.py`` ended (~0.3)
and the held-out ``eval/final_loss`` at the shipped optimizer's value;
whether the LSTM lowers them within this budget is what the run measures
(WORKDIR/metrics.jsonl).
"""

import ml_collections

from configs import shipped_mlp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The warm-started hierarchical run; ``arg="smoke"``: 4 outer steps."""
  c = shipped_mlp.get_config(arg)
  c.lopt.name = "hierarchical"
  c.lopt.init_from = "mlp_small_cpu"
  c.estimator.valid_every = 10
  c.outer.num_steps = 2000 if arg != "smoke" else c.outer.num_steps
  c.outer.learning_rate = 1e-3
  return c
