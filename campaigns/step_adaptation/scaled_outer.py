"""Diagnostic behind learned_opt/step_adaptation.py (not a shipped feature).

Self-trains with the *old* default optimizer's updates multiplied by a
constant c, one run per c, as the outer optimizer of configs/self_train.py
("q") or configs/self_train_mlp.py ("m"), to see whether the learned
direction is right and only the step size wrong. Prints the final
evaluation meta-loss per seed and its mean.

  uv run python campaigns/step_adaptation/scaled_outer.py q 1,3,10,30,100
  uv run python campaigns/step_adaptation/scaled_outer.py m 2,4,8

Measured 2026-12-05 (3 seeds; best Adam 0.289 on q and 0.470 on m):
  q: c=1 1.036, 3 0.642, 10 0.328, 30 0.524, 100 0.974
  m: c=2 0.488, 4 0.439, 8 0.456
"""

import dataclasses
import sys

import numpy as np
import optax

from configs import self_train, self_train_mlp
from meta_train.evaluation import resolve
from meta_train.self_training import self_train as st
from meta_train.self_training import task as stt


@dataclasses.dataclass(frozen=True)
class Scaled:
  """The learned optimizer's updates times ``c`` (hashable for jit)."""

  lopt: object
  c: float
  num_steps: int

  def __call__(self, theta):
    tx = self.lopt.optimizer(theta, num_steps=self.num_steps)
    return optax.chain(tx, optax.scale(self.c))


def main(which: str, multipliers: str) -> None:
  module = self_train if which == "q" else self_train_mlp
  cfg = st.from_config_dict(module.get_config())
  source = resolve.resolve("hierarchical_small_cpu", learned_only=True)
  task = stt.FAMILY.task(cfg.spec)
  for c in map(float, multipliers.split(",")):
    factory = Scaled(source.lopt, c, cfg.num_outer_steps)
    contender = st.Contender("learned", ("x",), factory, source.theta, None)
    curves, _ = st._train_contender(task, contender, cfg, lambda *a: None)
    final = np.asarray(curves["x"]["eval_meta_loss"])[:, -1]
    print(
      f"{which} c={c:g} per seed {np.round(final, 4)} mean {final.mean():.4f}"
    )


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
