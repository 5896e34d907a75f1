"""The default with an annealed adaptation floor, as a checkpoint to evaluate.

Writes a copy of the default optimizer (``hierarchical_small_cpu_adaptive_x2``)
whose step-adaptation floor falls from -2 to -5 over the last quarter of the
run (``step_adaptation_final_floor=-5``, ``step_adaptation_anneal_start=0.75``;
see ``learned_opt/step_adaptation.py``), same theta, to DIR:

  uv run python campaigns/step_adaptation/annealed_floor.py DIR
  uv run lopt evaluate --optimizer DIR --split test --num-tasks 100 \
      --max-params 11000 --steps 1000 --seeds 2 --horizon-multiple 2 --out OUT

Measured 2026-12-06 (report: annealed_floor_T1000.md beside this file),
held-out seed 0 at T=1000 (2000), against the default's own run of the same
command (checkpoints/hierarchical_small_cpu_adaptive_x2/EVALUATION_T1000.md):
  vs tuned Adam       43/100 (42)  default 43/100 (51)
  vs Adam(1e-3)       92/100 (83)  default 89/100 (86)
  mean normalized     0.198        default 0.201
  rose past T >10%    11           default 10
  final loss lower than the default's on 44 tasks, higher on 54; geometric
  mean per family: test functions 0.22, quadratics 0.89, MLPs 0.97,
  regression 1.01, conv 1.04, autoencoders 1.10.
Past T the floor stays low, and the run to 2T loses what the default gains
there. On 56 train-split tasks at T=500 it had won 27 against tuned Adam
where the default won 24. That did not carry over, so the default keeps its
constant floor. As the outer optimizer of the train-split self-training tasks the
floor never binds: its meta-losses equal the default's to every digit.
"""

import dataclasses
import sys

from learned_opt import checkpoint, pretrained

NAME = "hierarchical_small_cpu_adaptive_x2"


def main(directory: str) -> None:
  lopt, theta, _ = pretrained.load_pretrained_with_info(NAME)
  annealed = dataclasses.replace(
    lopt, step_adaptation_final_floor=-5.0, step_adaptation_anneal_start=0.75
  )
  checkpoint.save(directory, annealed, theta, {"name": f"{NAME}_annealed"})
  print(f"wrote {directory}: {annealed}")


if __name__ == "__main__":
  main(sys.argv[1])
