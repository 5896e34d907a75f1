"""Self-training: a fresh MLPLOpt meta-trained by learned, Adam and SGD.

Command:
  uv run lopt self-train --config configs/self_train.py --out /tmp/self_train
  (add --config.pretrained=PATH to use another learned outer optimizer: a
  shipped name under checkpoints/ or a learned_opt.save directory)

Expected runtime: a few minutes on 2 CPU cores, most of it compilation
(three programs: the learned outer optimizer, the Adam grid, the SGD grid,
each vmapped over its learning rates and seeds).

Expected outcome: the task is meta-training a fresh per-parameter MLP
optimizer (hidden 8, 1 layer: 322 meta-parameters) by antithetic truncated
ES (8 pairs, 10-step truncations of 50-200-step runs) on 8 quadratics of
dimension 8. Every outer optimizer starts from the same theta (meta-loss
~1: the fresh optimizer barely moves the parameters) with the same ES noise;
within the 100 outer steps the evaluation meta-loss (mean normalized loss of
8 fresh 100-step inner runs) drops clearly below 1 for Adam at its best
learning rate. ``/tmp/self_train/self_train.md`` tabulates the outer steps
each optimizer needed to get 25/50/75% of the way from the initial to the
best final meta-loss; ``self_train.png`` shows the curves; how the learned
outer optimizer compares depends on the shipped checkpoint (a learned
optimizer meta-trained on inner problems, not on ES meta-gradients, is out
of distribution here).

The ``smoke`` arg (``--config configs/self_train.py:smoke``) runs 3 outer
steps of a smaller problem (tests).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The self-training config; ``arg="smoke"`` shrinks it to seconds."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 2
  c.num_outer_steps = 100
  c.eval_every = 10
  c.eval_runs = 8
  c.eval_steps = 100
  c.clip_norm = 0.0
  c.pretrained = "hierarchical"
  # ES meta-gradients of this task have norms ~0.03-0.1 at init: SGD needs
  # far larger learning rates than Adam for comparable steps.
  c.adam_lrs = (3e-2, 1e-1, 3e-1, 1.0)
  c.sgd_lrs = (1.0, 3.0, 10.0)
  c.level_fractions = (0.25, 0.5, 0.75)

  # The self-training task (meta_train.self_train.SelfTrainSpec).
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
  c.task.seed = 0

  if arg == "smoke":
    c.num_seeds = 1
    c.num_outer_steps = 3
    c.eval_every = 1  # advance_runs then does exactly one outer step
    c.eval_runs = 2
    c.eval_steps = 10
    c.adam_lrs = (1e-3, 1e-2)
    c.sgd_lrs = (0.01, 0.1)
    c.task.lopt_hidden = 4
    c.task.inner_static = "dim:2"
    c.task.num_inner_specs = 2
    c.task.num_pairs = 2
    c.task.unroll_length = 4
    c.task.min_horizon = 8
    c.task.max_horizon = 16
  elif arg:
    raise ValueError(
      f"configs/self_train.py: unknown arg {arg!r}; valid: smoke"
    )
  return c
