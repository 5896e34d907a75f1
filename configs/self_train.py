"""Self-training: a fresh MLPLOpt meta-trained by learned, Adam and SGD.

Command:
  uv run lopt self-train --config configs/self_train.py --out /tmp/self_train
  (add --config.pretrained=PATH to use another learned outer optimizer: a
  shipped name under checkpoints/ or a learned_opt.save directory)

Expected runtime: about 80 s of CPU time (1.5-2 min on 2 idle cores; 6 min
measured on 2 cores shared with other jobs), most of it compilation of three
programs (the learned outer optimizer, the Adam grid, the SGD grid, each
vmapped over its learning rates and 2 seeds).

Expected outcome: the task is meta-training a fresh per-parameter MLP
optimizer (hidden 8, 1 layer: 322 meta-parameters) by antithetic truncated
ES (8 pairs, 10-step truncations of 50-200-step runs) on 8 quadratics of
dimension 8. Every outer optimizer starts from the same theta with the same
ES noise. The evaluation meta-loss (mean normalized loss of 8 fresh
100-step inner runs of ``rollout.train_scan``) starts at 0.981; measured
after 100 outer steps: Adam 0.172 at its best learning rate 0.3 (25/50/75%
of the way to the best final value after 20/20/30 steps; lr 1 diverges),
SGD 0.183 at lr 10, the top of its grid (10/20/30 steps). The shipped
learned optimizer (``mlp_small_cpu``) leaves it at 0.864: a learned outer
optimizer takes steps of ~``step_mult`` = 1e-3 per meta-parameter, while
Adam needs ~0.3 here, so how the shipped optimizer does depends on whether
it learned to scale its steps up (``self_train.md`` and ``self_train.png`` in ``--out``
show it).

The ``smoke`` arg (``--config configs/self_train.py:smoke``) runs 3 outer
steps of a smaller problem (tests).
"""

import ml_collections

from configs import base
import learned_opt

SMOKE = {  # seconds: a check of the setup
  "num_seeds": 1,
  "num_outer_steps": 3,
  "eval_every": 1,  # advance_runs then does exactly one outer step
  "eval_runs": 2,
  "eval_steps": 10,
  "adam_lrs": (1e-3, 1e-2),
  "sgd_lrs": (0.01, 0.1),
  "task.lopt_hidden": 4,
  "task.inner_static": "dim:2",
  "task.num_inner_specs": 2,
  "task.num_pairs": 2,
  "task.unroll_length": 4,
  "task.min_horizon": 8,
  "task.max_horizon": 16,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The self-training config; ``arg="smoke"`` shrinks it to seconds."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 3
  c.num_outer_steps = 100
  c.eval_every = 10
  c.eval_runs = 8
  c.eval_steps = 100
  c.clip_norm = 0.0
  # The default pretrained optimizer, untuned (its learning rate is not a
  # knob); another shipped name or a learned_opt.save directory also works.
  c.pretrained = learned_opt.pretrained.DEFAULT_NAME
  # ES meta-gradients of this task have norms ~0.03-0.1 at init: SGD needs
  # far larger learning rates than Adam for comparable steps.
  c.adam_lrs = (3e-2, 1e-1, 3e-1, 1.0)
  c.sgd_lrs = (1.0, 3.0, 10.0, 30.0)
  c.level_fractions = (0.25, 0.5, 0.75)

  # The self-training task (meta_train.self_training.task.SelfTrainSpec).
  c.task = ml_collections.ConfigDict()
  c.task.lopt_hidden = 8
  c.task.lopt_layers = 1
  c.task.inner_family = "quadratic"
  c.task.inner_static = "dim:8"
  c.task.num_inner_specs = 8
  c.task.num_pairs = 8
  c.task.unroll_length = 10
  c.task.min_horizon = 50
  c.task.max_horizon = 200
  c.task.std = 0.01
  # Seed 7 makes the task's name a test-split one: meta-training, which
  # samples this family ("self_train") with other seeds, never sees it.
  c.task.seed = 7

  base.apply_variants(c, arg, {"smoke": SMOKE}, "self_train")
  return c
