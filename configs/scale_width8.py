"""The width-8 scale-aware campaign (issue 19), in resumable legs.

The design ablation at equal compute (``configs/ablation.py``,
``campaigns/ablation/README.md``) found the default's scale-aware step
rule with a per-parameter MLP of width 8 the best arm: 19 of 30 held-out
tasks won against tuned Adam after 6,000 outer steps from scratch, at 0.55x
the ES-step cost of width 32. This campaign continues that arm: it starts
from its final theta (``campaigns/ablation/scale_width8/theta``, fresh outer
Adam state) with the same recipe (antithetic ES with 16 pairs, K=20,
log-uniform horizons 100-2000, linear normalized meta-loss), at a constant
outer learning rate of 5e-4 after 100 warm-up steps, so that legs can be
appended (the arm's cosine ended at 2e-4).

Variants:
  (none)      leg 1's task mix, the ablation's: the 16 largest signature
              groups of <= 11k parameters, 6 of the 8 families (no
              autoencoder or VAE);
  all_groups  every signature group of <= 11k parameters (33, all 8
              families), legs 2 on: leg 1 lost every autoencoder;
  smoke       4 outer steps on 2 signature groups.

Commands. Leg 1 (SIGTERM checkpoints and stops; the same command resumes
from the workdir):
  export LOPT_DATA_DIR=/path/to/shared/data
  timeout -s TERM 3900 uv run lopt meta-train \\
      --config configs/scale_width8.py --workdir runs/scale_width8
The next leg, on any machine, from the committed state of the last one
(``meta_train/leg_state.py``: theta, outer Adam state and step; a workdir
holding only that file starts from it with fresh inner runs):
  mkdir -p runs/scale_width8_all
  cp campaigns/scale_width8/state/leg_state.npz runs/scale_width8_all/
  timeout -s TERM 3600 uv run lopt meta-train \\
      --config configs/scale_width8.py:all_groups \\
      --workdir runs/scale_width8_all --config.eval.every=0
(no in-run evaluation: beside the 33 groups' programs its compile crosses
Linux's default cap of 65,530 memory maps per process, where the run stops
checkpointed (``meta_train/map_budget.py``); ``sudo sysctl -w
vm.max_map_count=262144`` lifts it) and after it, to commit its state:
  cp runs/scale_width8_all/{config.json,metrics.jsonl,leg_state.npz} \\
      campaigns/scale_width8/state/
Held out, the issue's protocol on a theta (``WORKDIR/theta`` is the last
checkpoint's, ``WORKDIR/eval_thetas/step_N`` every 3,000 steps):
  uv run lopt evaluate --optimizer DIR --split test --num-tasks 100 \\
      --max-params 11000 --steps 1000 --seeds 2 --horizon-multiple 2 \\
      --seed 0 --out OUT

Expected runtime on 2 CPU cores: ~3 minutes compiling 16 groups (~12 for
33, compiled on first use while the steps go on), then ~0.12 s per outer
step alone on 16 groups, ~0.19 s on 33 (about half the rate beside an
evaluation). Expected outcome, measured: leg 1 (9,200 outer steps) took
held-out wins against tuned Adam from 66 to 76 of 100 at step 6,000, with
every autoencoder lost; on all groups, leg 3's step 19,400 won 77.5 of 100
with 3 of 9 autoencoders (``campaigns/scale_width8/thetas/step19400``),
and with the deep floor added it is the shipped default
(``hierarchical_width8_cpu``: 77.5 and 69 on suite seeds 0 and 1); the
numbers of each leg are in ``campaigns/scale_width8/README.md``.
"""

import ml_collections

from configs import ablation, base

# Relative to the repository root, where the commands run: config.json
# records it, and a leg on another machine must compare equal.
_START = "campaigns/ablation/scale_width8/theta"

_VARIANTS = {
  # Every signature group of <= 11k parameters (33), not the 16 largest:
  # those 16 hold no autoencoder or VAE (the families it lost on in leg 1).
  "all_groups": {"suite.max_groups": 0},
  "smoke": lambda c: base.smoke(
    c, suite=False, evaluate=False, overrides={"suite.max_groups": 2}
  ),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The campaign config; ``arg``: comma-separated variants."""
  c = ablation.get_config("scale,width8")
  c.lopt.init_from = _START
  c.update_from_flattened_dict(
    {
      "outer.num_steps": 100_000,
      "outer.learning_rate": 5e-4,
      "outer.schedule": "constant",
      "eval.every": 3000,
    }
  )
  base.apply_variants(c, arg, _VARIANTS, "scale_width8")
  return c
