"""The design ablation's table, from the arms' workdirs (configs/ablation.py).

Usage:
  uv run python campaigns/ablation/summarize.py runs/ablation ARM...

Each ``runs/ablation/ARM`` holds the run's ``metrics.jsonl`` and, in
``eval/``, the ``lopt evaluate`` report of its final theta. Prints one
markdown row per arm: outer steps, the median seconds per outer step and
their sum (``time/step_s``: the first step of each signature group
includes its compilation; in-run evaluations and checkpoints are
excluded), the
meta-loss over the first and last 10% of the run, the in-run held-out
evaluation at each export, and the held-out report's wins against
per-task tuned Adam and Adam(1e-3), the median final-loss ratio to tuned
Adam and the mean normalized final loss.
"""

import json
import pathlib
import statistics
import sys


def _records(path: pathlib.Path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _row(arm_dir: pathlib.Path) -> str:
  records = _records(arm_dir / "metrics.jsonl")
  steps = [r for r in records if "meta_loss" in r]
  log_every = steps[1]["step"] - steps[0]["step"]
  seconds = sum(r["time/step_s"] for r in steps) * log_every
  median = statistics.median(r["time/step_s"] for r in steps)
  tenth = max(1, len(steps) // 10)
  first = statistics.mean(r["meta_loss"] for r in steps[:tenth])
  last = statistics.mean(r["meta_loss"] for r in steps[-tenth:])
  evals = ", ".join(
    f"{r['eval/final_loss']:.3f} ({r['step']})"
    for r in records
    if "eval/final_loss" in r
  )
  with open(arm_dir / "eval" / "report.json") as f:
    horizon = json.load(f)["horizons"][0]
  overall = horizon["overall"]
  tuned = overall["adam_tuned"]["final_train"]
  default = overall["adam_default"]["final_train"]
  mean_norm = horizon["mean_normalized"]
  return (
    f"| {arm_dir.name} | {steps[-1]['step']} | {median:.3f} s "
    f"| {seconds / 60:.1f} min "
    f"| {first:.3f} -> {last:.3f} | {evals} "
    f"| {tuned['wins']:g}/{tuned['num_tasks']} "
    f"| {default['wins']:g}/{default['num_tasks']} "
    f"| {tuned['median_ratio']:.3f} "
    f"| {mean_norm['candidate']['final_train']:.3f} "
    f"(tuned Adam {mean_norm['adam_tuned']['final_train']:.3f}) |"
  )


def main() -> None:
  root, arms = pathlib.Path(sys.argv[1]), sys.argv[2:]
  print(
    "| arm | outer steps | median time per step | outer-step time "
    "| meta-loss (first -> last "
    "10%) | in-run eval (step) | wins vs tuned Adam | wins vs Adam(1e-3) "
    "| median loss ratio to tuned Adam | mean normalized loss |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for arm in arms:
    print(_row(root / arm))


if __name__ == "__main__":
  main()
