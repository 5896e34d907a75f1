"""Headline numbers of a full report with some of its tasks re-run.

  uv run python campaigns/step_adaptation/merge_reports.py FULL/report.json \
      SUBSET/report.json

SUBSET is ``lopt evaluate`` on some of FULL's tasks (``--tasks``, with the
same ``--steps``, ``--seeds``, ``--horizon-multiple`` and ``--seed``); its
tasks replace FULL's. Used to re-measure reports after evaluations began to
report the expected loss of the noisy quadratics and 2-d test functions
(``expected_loss.md``): only those tasks' numbers change, and the rollouts
are deterministic, so the merge equals a full re-run. Prints the wins at T
and 2T against each baseline, per family against tuned Adam, and the tasks
whose loss rose past T by more than 10%.
"""

import collections
import json
import sys


def main(full_path: str, subset_path: str) -> None:
  with open(full_path) as f:
    full = json.load(f)
  with open(subset_path) as f:
    subset = json.load(f)
  new = {t["name"]: t for t in subset["tasks"]}
  missing = set(new) - {t["name"] for t in full["tasks"]}
  if missing:
    sys.exit(f"subset tasks not in the full report: {sorted(missing)[:3]}")
  tasks = [new.get(t["name"], t) for t in full["tasks"]]
  for h, label in enumerate(("T", "2T")[: len(full["horizons"])]):
    wins = {
      b: sum(t["wins"][b]["final_train"][h] for t in tasks)
      for b in ("adam_default", "adam_tuned", "sgdm_tuned")
    }
    per_family = collections.defaultdict(list)
    for t in tasks:
      per_family[t["family"]].append(t["wins"]["adam_tuned"]["final_train"][h])
    families = " ".join(
      f"{k} {sum(v)}/{len(v)}" for k, v in sorted(per_family.items())
    )
    print(f"{label}: wins {wins}; vs tuned Adam per family: {families}")
  for arm, drift in full["drift"].items():
    rose = set(drift["upward_drift_over_10pct"]) - set(new)
    rose |= set(subset["drift"][arm]["upward_drift_over_10pct"])
    print(f"rose past T by > 10%, {arm}: {len(rose)}")


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  main(*sys.argv[1:])
