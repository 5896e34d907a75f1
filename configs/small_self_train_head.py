"""The self-training configs' own optimizer, given a step-size head and meta-trained with self-training in the mix (issue 20).

``configs/self_train.py`` uses ``hierarchical_small_cpu_adaptive_memory``
as its learned outer optimizer (1.31x the best Adam, 10 seeds; issue 20
asks for 1.25x). This campaign starts from exactly that optimizer: its
theta warm-started into ``step_scale="lstm_head"`` (the paper's absolute
step times ``exp(10 * head(h))``, a per-tensor linear head on the LSTM's
state, at zero at the start) with its own online step adaptation (rate
0.5, floor -2 annealed to -5, memory 0.95). It then meta-trains with the
``width8_self_train`` recipe (antithetic ES, 16 pairs, K=20, horizons
100-2000, outer Adam 5e-4 after 100 warm-up steps, every signature group
of <= 11k parameters plus 1,200 train-split ``self_train`` specs, ~40% of
the outer steps). Why: the ``width8_self_train_head`` campaign showed that
the head moves the self-training tasks' step sizes far faster than the
paper's step (1.99x -> 1.53x in one leg), but from a theta whose
adaptation is five times slower than the configs'; here meta-training
trains the optimizer as the configs deploy it.

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
What a leg is measured by (10 seeds; the task seeds 7, 9 and 38 are
test-split names, never trained on):
  uv run lopt self-train --config configs/self_train.py --out OUT \\
      --config.pretrained=runs/small_self_train_head/theta \\
      [--config.task.seed=9]

Expected runtime on 2 CPU cores: ~10 minutes compiling the groups (while
the steps go on), then slower steps than the width-8 campaign's (the
per-parameter MLP is 32 wide). Measured results:
``campaigns/small_self_train_head/README.md``.

Variants:
  smoke  4 outer steps on quadratics and 2 self-training specs.
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

_VARIANTS = {"smoke": width8_self_train.smoke}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The campaign config; ``arg``: comma-separated variants."""
  c = width8_self_train.get_config()
  c.lopt.kwargs = ml_collections.ConfigDict(_LOPT_KWARGS)
  c.lopt.init_from = _START
  base.apply_variants(c, arg, _VARIANTS, "small_self_train_head")
  return c
