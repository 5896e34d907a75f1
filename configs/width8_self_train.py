"""The shipped default, meta-trained on with self-training in its task mix.

Issue 20 asks for "training a learned optimizer" among the meta-training
tasks, as VeLO's task sampler has it. This campaign starts from the shipped
default's theta (``hierarchical_width8_cpu``: ``campaigns/scale_width8/
thetas/step19400`` with its deep floor) and meta-trains it with the width-8
campaign's recipe (antithetic ES, 16 pairs, K=20, horizons 100-2000, outer
Adam 5e-4 after 100 warm-up steps, fresh state) on every signature group of
<= 11k parameters plus 1,200 train-split specs of the ``self_train`` family
(``meta_train/self_training/task.py``: a fresh 322-parameter MLPLOpt
meta-trained by ES on 8-dim quadratics or on MLP classifiers, two
signatures). Groups are drawn in proportion to their specs, so about 40% of
the outer steps are self-training ones. The self-training configs' own
tasks (seed 7) are test-split names: never trained on.

Variants:
  lstm_head  a campaign of its own (``campaigns/width8_self_train_head/``):
             the paper's step times ``exp`` of a per-tensor LSTM head
             (``step_scale="lstm_head"``, Celo's multiplier without the
             RMS; its output times 10, ``step_head_mult``, so the outer
             Adam moves a step size by e^1 in ~200 consistent steps),
             warm-started from leg 2's theta (step 9,500) with the head at
             zero, so it starts from exactly that optimizer and
             meta-training can set each tensor's step size directly.
             Measured (10 seeds): its leg 1 (55 minutes, 2,800 outer
             steps, ``thetas/step2800``) took ``configs/self_train.py``
             from 1.99x the best Adam to 1.53x (lower on each of the 10
             seeds; at step 1,380: 1.67x) and ``configs/self_train_mlp.py``
             from 1.15x to 1.02x, where the same recipe without the head
             moved 2.12x -> 1.99x in 80 minutes; but it won 38 of the
             56 train-split suite tasks against tuned Adam where the start
             won 50: a self-training optimizer, not a default. Leg 2
             (steps 2,800 -> 5,300) gained nothing: 1.64x, and with the
             configs' adaptation rate (0.5) worse on five of seven
             self-training task seeds; the campaign README has the table.
             Workdir ``runs/width8_self_train_head``, state
             ``campaigns/width8_self_train_head/state/``; otherwise the
             same commands with ``configs/width8_self_train.py:lstm_head``.
  smoke      4 outer steps on quadratics and 2 self-training specs (a
             check of the setup, ~1 minute, most of it compiling).

Commands. A leg (SIGTERM checkpoints and stops; the same command resumes
from the workdir):
  export LOPT_DATA_DIR=/path/to/shared/data
  timeout -s TERM 3600 uv run lopt meta-train \\
      --config configs/width8_self_train.py --workdir runs/width8_self_train
The next leg, on any machine, from the committed state:
  mkdir -p runs/width8_self_train
  cp campaigns/width8_self_train/state/leg_state.npz runs/width8_self_train/
  (then the same command), and after it, to commit its state (the
  leg's metrics appended to the campaign's, whose rows past the step the
  leg resumed from were written after its last checkpoint: drop them):
  cp runs/width8_self_train/{config.json,leg_state.npz} \\
      campaigns/width8_self_train/state/
  cat runs/width8_self_train/metrics.jsonl \\
      >> campaigns/width8_self_train/state/metrics.jsonl
What it is for, measured on the self-training configs' test task:
  uv run lopt self-train --config configs/self_train.py --out OUT \\
      --config.pretrained=runs/width8_self_train/theta

Expected runtime on 2 CPU cores: ~10 minutes compiling the 35 groups
(on first use, while the steps go on), then ~1.2 outer steps a second.
Expected outcome, measured: the final evaluation meta-loss of
``configs/self_train.py`` with the theta as the outer optimizer (3 seeds;
the best Adam reaches 0.284) went from 0.660 (2.29x the best Adam) at the
start to 0.596 (2.10x) after 1,500 outer steps and 0.576 (2.03x) after
5,700 (leg 1, ~2,500 of its steps on self-training tasks). At 10 seeds
(the configs' count since): 2.31x at the start, 2.12x at step 5,700 and
1.99x at step 9,500 (leg 2, 80 minutes; the state is
``campaigns/width8_self_train/state/``, the theta ``thetas/step9500``);
``campaigns/width8_self_train/README.md`` has each leg's numbers. Its
learned step magnitude moves slowly: the step is
``direction * 2e-3 * exp(1e-3 * m)`` times the online adaptation, and
these tasks want steps ~100x the learned ones.
"""

import ml_collections

from configs import base, scale_width8

# The shipped default's theta (relative to the repository root, where the
# commands run); its deep floor is a constructor option, set below.
_START = "campaigns/scale_width8/thetas/step19400"

# Leg 2's final theta: where the lstm_head variant's campaign starts.
_HEAD_START = "campaigns/width8_self_train/thetas/step9500"


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """4 outer steps on quadratics and 2 self-training specs."""
  return base.smoke(
    c,
    suite=False,
    evaluate=False,
    overrides={
      "suite.families": ("quadratic",),
      "suite.num_specs": 20,
      "suite.extra_specs": ("self_train:2",),
    },
  )


_VARIANTS = {
  "lstm_head": {
    "lopt.kwargs.step_scale": "lstm_head",
    "lopt.kwargs.step_head_mult": 10.0,
    "lopt.init_from": _HEAD_START,
  },
  "smoke": smoke,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The campaign config; ``arg``: comma-separated variants."""
  c = scale_width8.get_config("all_groups")
  c.lopt.init_from = _START
  c.lopt.kwargs.step_adaptation_deep_floor = -15.0
  c.suite.extra_specs = ("self_train:1200",)
  c.eval.every = 0
  base.apply_variants(c, arg, _VARIANTS, "width8_self_train")
  return c
