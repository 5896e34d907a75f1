"""Issue 19's design ablation: each arm meta-trained from scratch, equal budget.

Every arm is a HierarchicalLOpt meta-trained from a random theta with the
same recipe: the shipped runs' task mix (the 16 largest signature groups
of <= 11k parameters, 6 of the 8 families: no autoencoder or VAE),
antithetic truncated ES with 16 pairs, K=20, log-uniform horizons
100-2000, the validation-loss feature every 10
inner steps, the linear normalized meta-loss, outer Adam 2e-3 (the
from-scratch rate of ``shipped_mlp.py``) with 100 warm-up steps and a cosine
decay to 10% over the arm's budget, clip 30, seed 0. The arms differ only in
what the issue asks to compare:

  (none)  the paper's step: ``d * exp(1e-3 m) * 1e-3``, absolute;
  scale   the previous shipped default's scale-aware rule (the options of
          ``hierarchical_small_cpu_adaptive_ref0.1``: the traced per-tensor
          step adaptation with its reference RMS and annealed floor);
  aug     half of the train specs augmented (``task_suite.augment``:
          weights reparameterized by log-uniform scales in [1e-3, 1e3],
          global, per tensor or per entry; half of those with the loss
          scaled too);
  width8  a per-parameter MLP of width 8 instead of the paper's 32;
  smoke   4 outer steps on 2 signature groups, to check an arm's setup.

The budget is compute, counted in outer steps scaled by their measured cost
(``bench/meta_throughput.py --parts design_cost``: on the 11k-parameter MLP
signature one ES step of the scale-aware arm costs 1.10x the paper's, the
width-8 arm's 0.55x; the augmentation costs nothing, its scales being
traced values). So the scale-aware arms get 3,000 outer steps (the
default), the paper arms 3,300 and the width-8 arm 6,000; each run's
metrics.jsonl has the measured ``time/step_s``.

Expected runtime on 2 CPU cores: ~3 minutes compiling the 16 signature
groups, then ~0.2 s per outer step (width 32), so ~15-20 minutes an arm
(measured: 18 minutes for the paper arm beside an evaluation).
Expected outcome: each arm's meta-loss falls from ~1.0 within its budget;
the held-out numbers of every arm, measured, are in
``campaigns/ablation/README.md``.

Commands (each arm in its own workdir):
  export LOPT_DATA_DIR=/path/to/shared/data
  uv run lopt meta-train --config configs/ablation.py \\
      --workdir runs/ablation/paper \\
      --config.outer.num_steps=3300 --config.eval.every=1100
  uv run lopt meta-train --config configs/ablation.py:aug \\
      --workdir runs/ablation/paper_aug \\
      --config.outer.num_steps=3300 --config.eval.every=1100
  uv run lopt meta-train --config configs/ablation.py:scale \\
      --workdir runs/ablation/scale
  uv run lopt meta-train --config configs/ablation.py:scale,aug \\
      --workdir runs/ablation/scale_aug
  uv run lopt meta-train --config configs/ablation.py:scale,width8 \\
      --workdir runs/ablation/scale_width8 \\
      --config.outer.num_steps=6000 --config.eval.every=2000
and each arm's final theta (step 3300, 3000 or 6000) on held-out tasks:
  uv run lopt evaluate --optimizer runs/ablation/ARM/eval_thetas/step_000NNNN \\
      --split test --num-tasks 30 --max-params 11000 --steps 500 \\
      --seeds 1 --sgdm-lrs 0.01 --out runs/ablation/ARM/eval
"""

import ml_collections

from configs import base, scale_aware, shipped_mlp


def _scale(c: ml_collections.ConfigDict) -> None:
  c.lopt.kwargs.update(scale_aware.DEFAULT_STEP)


def _width8(c: ml_collections.ConfigDict) -> None:
  c.lopt.kwargs.mlp_hidden_size = 8


_VARIANTS = {
  "scale": _scale,
  "aug": {"suite.augment_prob": 0.5},
  "width8": _width8,
  "smoke": lambda c: base.smoke(
    c, suite=False, evaluate=False, overrides={"suite.max_groups": 2}
  ),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """One arm; ``arg``: comma-separated variants (none: the paper's step)."""
  c = shipped_mlp.get_config()
  c.lopt.name = "hierarchical"
  c.lopt.init_from = ""
  c.lopt.kwargs = ml_collections.ConfigDict({})
  c.update_from_flattened_dict(
    {
      "estimator.valid_every": 10,
      "outer.num_steps": 3000,
      "outer.learning_rate": 2e-3,
      "outer.warmup_steps": 100,
      "eval.every": 1000,
      "checkpoint.every": 100,
    }
  )
  base.apply_variants(c, arg, _VARIANTS, "ablation")
  return c
