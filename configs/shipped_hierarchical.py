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

Expected runtime on 2 CPU cores: ~5-10 minutes compiling the 16 signature
groups (one compilation each, spread over the first outer steps), then
~0.3-0.4 s per outer step with two processes (measured).

Expected outcome (measured): the held-out ``eval/final_loss`` (4 test tasks,
500 inner steps) goes from 0.532 (the shipped MLPLOpt) to 0.495 at step 250,
0.473 at 2000 and 0.458-0.462 at 3250-3500, where it flattens; the
meta-loss goes from ~0.8 (fresh inner runs) to ~0.3.
``checkpoints/hierarchical_small_cpu`` is the kept evaluation theta of step
3250 (``WORKDIR/eval_thetas/step_0003250``). That run's first 150 steps used
``outer.num_steps=2000``, so its cosine schedule was slightly different; it
then resumed with the 6000 steps set here and was stopped at step 3650.
"""

import ml_collections

from configs import shipped_mlp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The warm-started hierarchical run; ``arg="smoke"``: 4 outer steps."""
  c = shipped_mlp.get_config(arg)
  c.lopt.name = "hierarchical"
  c.lopt.init_from = "mlp_small_cpu"
  c.estimator.valid_every = 10
  c.outer.num_steps = 6000 if arg != "smoke" else c.outer.num_steps
  c.outer.learning_rate = 1e-3
  return c
