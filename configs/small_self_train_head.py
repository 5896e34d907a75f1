"""The self-training configs' optimizer: a step-size head meta-trained on self-training tasks alone (issue 20).

Its product, ``hierarchical_small_cpu_self_train`` (step 1,300), is the
learned outer optimizer of ``configs/self_train.py`` and
``configs/self_train_mlp.py``. They used
``hierarchical_small_cpu_adaptive_memory`` before (1.31x the best Adam on
``configs/self_train.py``, 10 seeds; issue 20 asks for 1.25x). This
campaign starts from exactly that optimizer: its
theta warm-started into ``step_scale="lstm_head"`` (the paper's absolute
step times ``exp(10 * head(h))``, a per-tensor linear head on the LSTM's
state, at zero at the start, so the campaign starts at 1.31x) with its own
online step adaptation (rate 0.5, floor -2 annealed to -5, memory 0.95).
It meta-trains **only the head** (``lopt.trainable = ("lr_head",)``: 65
weights; the estimator perturbs only them, ``meta_train.estimators.
restrict``) with antithetic ES (16 pairs, K=20, outer Adam 5e-4 after 100
warm-up steps; the meta-loss weighted towards the end of each run, as the
configs measure the final meta-loss) over runs of 100-200 outer steps
(the configs run 100; a first start with the campaigns' 100-2000
measured 1.37x at step ~320 and its head's bias had gone negative) on 1,200 train-split specs of the
``self_train`` family alone (a fresh 322-parameter MLPLOpt meta-trained by
ES on quadratics or MLP classifiers). The self-training configs' tasks
(seed 7), and seeds 9 and 38 used to check, are test-split names.

Why only the head: the direction of this optimizer is the one the configs
already measure at 1.31x; the ``width8_self_train_head`` campaign showed
that these tasks want other step sizes, which the head sets. Meta-training
all of theta on a mix of the suite and self-training (the ``full_theta``
variant, stopped at step ~900) moved the configs' task the wrong way:
1.31x at the start, 1.49x at step ~330, 1.59x at ~870 (10 seeds each).
And an ES estimate over 65 weights is far less noisy than over all ~36k.
Only the head moves, so the rest of the optimizer (and what it does on
the suite, except through the step size) stays the shipped one's.

Commands. A leg (SIGTERM checkpoints and stops; the same command resumes
from the workdir):
  export LOPT_DATA_DIR=/path/to/shared/data
  timeout -s TERM 3600 uv run lopt meta-train \\
      --config configs/small_self_train_head.py \\
      --workdir runs/small_self_train_head
The next leg, from the committed state:
  mkdir -p runs/small_self_train_head
  cp campaigns/small_self_train_head/state/leg_state.npz \\
      runs/small_self_train_head/
  (then the same command); commit ``config.json`` and ``leg_state.npz`` into
  ``campaigns/small_self_train_head/state/``, append the leg's metrics rows
  up to its last checkpoint's step, copy ``theta`` to ``thetas/stepN``.
What a leg is measured by (10 seeds; task seeds 0-3 are train-split, 7, 9
and 38 test-split):
  uv run lopt self-train --config configs/self_train.py --out OUT \\
      --config.pretrained=runs/small_self_train_head/theta \\
      [--config.task.seed=9]

Expected runtime on 2 CPU cores: ~2 minutes compiling the two self-training
signatures, then ~1.7 s an outer step (leg 1: 820 steps in 40 minutes,
half of them beside a CI run; leg 2: 1,290 steps in 55 minutes, a
third of them beside evaluations).
Expected outcome (10 seeds per task; ``campaigns/small_self_train_head/
README.md`` has the tables). Leg 1 (steps 0-800, the meta-loss weighted
uniformly: variant ``uniform_weighting``) took the configs' task from
1.31x to 1.03x the best Adam, but as a global step increase that diverged
on some seeds of a train-split task (3.84x) and cost the MLP config (1.01x
-> 1.14x). Leg 2 (steps 800-2,000, weighted towards the end of each run)
moved the head's bias back (steps x1.13 instead of x1.32) and its
per-tensor weights on; step 1,300, chosen on the train-split tasks (task
seeds 0-3: mean 1.15x against the start's 1.28x), reaches 1.08x on the
configs' task, 1.02x on the MLP config, and 1.16x and 1.16x on test-split
seeds 9 and 38 (the start: 0.98x, 0.92x). It is shipped as
``checkpoints/hierarchical_small_cpu_self_train``
(``campaigns/small_self_train_head/ship.py``).

Variants:
  uniform_weighting  the meta-loss weighted uniformly over each run (leg 1).
  full_theta  all of theta, on every signature group of <= 11k parameters
              plus the 1,200 self-training specs (~40% of the steps),
              horizons 100-2000: the first attempt, measured above.
  smoke       4 outer steps on quadratics and 2 self-training specs.
"""

import ml_collections

from configs import base, width8_self_train

# The self-training configs' optimizer (a shipped name).
_START = "hierarchical_small_cpu_adaptive_memory"

# Its architecture and step adaptation (its manifest's), with the head.
_LOPT_KWARGS = {
  "mlp_hidden_size": 32,
  "step_scale": "lstm_head",
  "step_head_mult": 10.0,
  "step_mult": 0.002,
  "param_scale_floor": 0.1,
  "step_adaptation": 0.5,
  "step_adaptation_floor": -2.0,
  "step_adaptation_final_floor": -5.0,
  "step_adaptation_anneal_start": 0.75,
  "step_adaptation_memory": 0.95,
  "step_adaptation_overshoot": 0.3,
}

_VARIANTS = {
  "full_theta": {
    "lopt.trainable": (),
    "estimator.max_horizon": 2000,
    "suite.families": (),
    "suite.num_specs": 2000,
    "suite.extra_specs": ("self_train:1200",),
  },
  "uniform_weighting": {"estimator.meta_loss_weighting": "uniform"},
  "smoke": width8_self_train.smoke,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The campaign config; ``arg``: comma-separated variants."""
  c = width8_self_train.get_config()
  c.lopt.kwargs = ml_collections.ConfigDict(_LOPT_KWARGS)
  c.lopt.init_from = _START
  c.lopt.trainable = ("lr_head",)
  c.suite.families = ("self_train",)
  c.suite.num_specs = 1200
  c.suite.extra_specs = ()
  # The self-training configs run 100 outer steps: meta-train on runs of
  # about that length (the campaign recipe's 100-2000 weighs the long ones).
  c.estimator.max_horizon = 200
  # What the configs measure is the trained optimizer's final meta-loss:
  # weight the late steps of each run more (leg 1, uniform, learned a
  # global step increase that diverged on some tasks; see the docstring).
  c.estimator.meta_loss_weighting = "end"
  base.apply_variants(c, arg, _VARIANTS, "small_self_train_head")
  return c
