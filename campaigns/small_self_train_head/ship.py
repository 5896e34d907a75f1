"""Ships the campaign's chosen theta as ``checkpoints/<name>``.

  uv run lopt evaluate --optimizer campaigns/small_self_train_head/thetas/step1300 \
      --split test --num-tasks 100 --max-params 11000 --steps 500 --seeds 1 \
      --out REPORT
  uv run python campaigns/small_self_train_head/ship.py REPORT

writes ``checkpoints/hierarchical_small_cpu_self_train`` from
``thetas/step1300`` (the step chosen on the train-split self-training
tasks; ``README.md`` has the table) with a manifest that records the
campaign's config, its outer steps, how the step was chosen, what it
measured as the outer optimizer of self-training and its held-out
evaluation on the suite (``REPORT``, also copied as
``EVALUATION_T500.md``). It refuses to overwrite an existing checkpoint.
"""

import json
import pathlib
import shutil
import sys

from learned_opt import pretrained

NAME = "hierarchical_small_cpu_self_train"
STEP = 1300
HERE = pathlib.Path(__file__).resolve().parent

# Final evaluation meta-loss over the best Adam's, 10 seeds, as
# ``configs/self_train.py --config.task.seed=S`` measures it (README.md).
EVALUATION = {
  "self_train_ratio_to_best_adam": {
    "configs/self_train.py (task seed 7, test split)": 1.08,
    "configs/self_train_mlp.py (task seed 7, test split)": 1.02,
    "quadratic task seeds 9, 38 (test split)": [1.16, 1.16],
    "quadratic task seeds 0-3 (train split)": [0.92, 1.36, 1.34, 0.96],
  },
  "start_hierarchical_small_cpu_adaptive_memory": {
    "configs/self_train.py": 1.31,
    "configs/self_train_mlp.py": 1.01,
    "quadratic task seeds 9, 38": [0.98, 0.92],
    "quadratic task seeds 0-3": [1.20, 1.26, 1.42, 1.24],
  },
}

NOTES = (
  "hierarchical_small_cpu_adaptive_memory (weights of hierarchical_small_cpu,"
  " 4,500 outer ES steps, with online step adaptation at the rate 0.5) with a"
  " per-tensor step-size head (step_scale='lstm_head', multiplier 10) whose"
  " 65 weights alone were meta-trained, by antithetic ES on 1,200 train-split"
  " specs of the self_train family (a fresh MLPLOpt meta-trained by ES on"
  " quadratics or MLP classifiers), for 1,300 outer steps: 800 with the"
  " meta-loss weighted uniformly over each run, then 500 weighted towards"
  " its end (configs/small_self_train_head.py). Every other weight is the"
  " start's. Step 1,300 was chosen among the exported thetas of steps"
  " 800-2,000 by the mean ratio to the best Adam on the four train-split"
  " quadratic tasks (task seeds 0-3); the self-training configs' tasks are"
  " test-split. It is the outer optimizer of configs/self_train.py and"
  " configs/self_train_mlp.py, not a general-purpose default: the head was"
  " trained on self-training tasks only. Built by"
  " campaigns/small_self_train_head/ship.py."
)


def main(report: str) -> None:
  report_dir = pathlib.Path(report)
  summary = json.loads((report_dir / "report.json").read_text())
  out = pretrained.checkpoints_root() / NAME
  if out.exists():
    sys.exit(f"{out} exists; delete it first to rebuild it")
  lopt, theta, info = pretrained.load_any(HERE / "thetas" / f"step{STEP}")
  if info.get("meta_train_step") != STEP:
    sys.exit(f"thetas/step{STEP} holds step {info.get('meta_train_step')}")
  config = info["config"]
  pretrained.save_pretrained(
    out,
    lopt,
    theta,
    config=config,
    outer_steps=STEP,
    suite_seed=config["suite"]["seed"],
    evaluation={
      **{k: summary[k] for k in ("meta", "horizons", "drift")},
      "self_training": EVALUATION,
    },
    notes=NOTES,
  )
  shutil.copy(report_dir / "report.md", out / "EVALUATION_T500.md")
  print("wrote", out)


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
