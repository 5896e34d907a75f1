"""Summaries of an evaluation: win rates, loss ratios, tables, plots, JSON.

Input: one ``TaskRecord`` per task with the candidate optimizer's runs
(``[seeds, ...]``) and each baseline's grid runs (``[grid, seeds, ...]``), as
numpy ``rollout.RolloutResult``s. The compared "arms" are the candidate and,
per ``Arm``, a baseline at a fixed grid value (Adam at 1e-3) or tuned per task
(the grid value with the lowest seed-mean final train loss at the first
horizon T; the same value is used at 2T, so drift is judged for the choice one
would have made at T).

Conventions, chosen so that a diverged run never looks good:
  * a seed-mean is +inf if any seed is NaN or inf;
  * the candidate wins a task against a baseline if its seed-mean is lower,
    scores 1/2 on a tie (both diverged included) and 0 otherwise;
  * ratio = candidate / baseline, 1 when both diverged, 0 when only the
    baseline did and inf when only the candidate did; the median is over
    tasks (meaningful for positive losses).

Final losses are ``task.eval_loss`` averaged over a few batches, the same
for every arm and, per seed, at every horizon (``evaluation.rollout``), so
a rise from T to 2T is the parameters' and not the batches'. It is the
loss itself, except on the noisy quadratics and 2-d test functions, where
it is the expected (noise-free) loss, because a few batches' estimate of
theirs is dominated by the zero-mean noise term near the optimum.

The JSON holds, per task, every arm's curves (train loss per step,
validation loss per checkpoint, final losses per horizon) and metrics, and
every grid value's final and mean losses; NaN and inf are written as null.
"""

from collections.abc import Callable, Sequence
import dataclasses
import json
import math
import pathlib
from typing import Any

import numpy as np

from meta_train.evaluation import plots, rollout

CANDIDATE = "candidate"
METRICS = ("final_train", "mean_train", "final_valid")


@dataclasses.dataclass(frozen=True)
class Arm:
  """A baseline as reported: a grid at a fixed value, or tuned per task.

  Attributes:
    id: key in the JSON (``"adam_default"``).
    label: name in tables and plots (``"Adam(1e-3)"``).
    grid: which grid of the ``TaskRecord`` it draws from.
    value: the fixed grid value; None to tune it per task.
  """

  id: str
  label: str
  grid: str
  value: float | None = None


@dataclasses.dataclass(frozen=True)
class Grid:
  """A baseline's runs over a grid of one hyperparameter on one task."""

  values: tuple[float, ...]  # [G]
  result: rollout.RolloutResult  # numpy, leading axes [G, S]


@dataclasses.dataclass(frozen=True)
class TaskRecord:
  """All runs on one task.

  Attributes:
    name: the task's spec name.
    family: the task's family, for the per-family breakdown.
    candidate: the evaluated optimizer's runs, numpy, leading axis [S].
    grids: baseline name -> its grid runs.
    normalize: the task's ``normalize`` on numpy arrays, for the plots and
      the mean normalized losses; None to plot raw losses.
    seconds: wall time spent on this task (compilation included).
  """

  name: str
  family: str
  candidate: rollout.RolloutResult
  grids: dict[str, Grid]
  normalize: Callable[[np.ndarray], np.ndarray] | None = None
  seconds: float = 0.0


def seed_mean(x: np.ndarray) -> np.ndarray:
  """Mean over the seed axis (-1), +inf where any seed is NaN or inf."""
  x = np.asarray(x, np.float64)
  return np.where(np.all(np.isfinite(x), axis=-1), np.mean(x, axis=-1), np.inf)


def curve_mean(curve) -> np.ndarray:
  """Mean over the step axis (-1), in float64.

  A diverging run's float32 losses can be finite but near the float32
  limit; their float32 sum would overflow to inf (and warn).
  """
  return np.mean(np.asarray(curve, np.float64), axis=-1)


def _metrics(run: rollout.RolloutResult, h: int, num_steps: int) -> dict:
  """Seed-mean metrics of ``run`` ([S, ...]) at horizon index ``h``."""
  curve = np.asarray(run.train_loss)[:, : (h + 1) * num_steps]  # [S, L]
  finite = np.all(np.isfinite(curve)) and np.all(
    np.isfinite(np.asarray(run.final_train)[:, h])
  )
  return {
    "final_train": float(seed_mean(np.asarray(run.final_train)[:, h])),
    "mean_train": float(seed_mean(curve_mean(curve))),
    "final_valid": float(seed_mean(np.asarray(run.final_valid)[:, h])),
    "final_test": float(seed_mean(np.asarray(run.final_test)[:, h])),
    "diverged": not finite,
  }


def select(
  record: TaskRecord, arm: Arm
) -> tuple[rollout.RolloutResult, float | None]:
  """The runs ([S, ...]) an arm stands for on a task, and its grid value.

  Raises:
    ValueError: if the grid is missing or lacks the arm's fixed value.
  """
  if arm.grid not in record.grids:
    raise ValueError(
      f"task {record.name} has no {arm.grid!r} grid (has "
      f"{sorted(record.grids)}) for arm {arm.id!r}"
    )
  grid = record.grids[arm.grid]
  if arm.value is None:
    score = seed_mean(np.asarray(grid.result.final_train)[..., 0])  # [G]
    index = int(np.argmin(score))
  else:
    matches = [
      i for i, v in enumerate(grid.values) if math.isclose(v, arm.value)
    ]
    if not matches:
      raise ValueError(
        f"arm {arm.id!r} needs {arm.grid}={arm.value} in the grid "
        f"{grid.values}; add it to the grid"
      )
    index = matches[0]
  run = rollout.RolloutResult(*(np.asarray(x)[index] for x in grid.result))
  return run, float(grid.values[index])


def _win(candidate: float, baseline: float) -> float:
  if candidate < baseline:
    return 1.0
  return 0.5 if candidate == baseline else 0.0


def _ratio(candidate: float, baseline: float) -> float:
  if candidate == baseline:
    return 1.0
  if math.isinf(baseline) or baseline == 0:
    return 0.0 if math.isinf(baseline) else math.inf
  return candidate / baseline


def _relative_rise(first: float, last: float) -> float:
  if first == last:
    return 0.0
  if not math.isfinite(first) or first == 0:
    return math.inf if last > first else -math.inf
  return (last - first) / abs(first)


def _comparisons(tasks: Sequence[dict], arms: Sequence[Arm], h: int) -> dict:
  """Win rates and median ratios of the candidate against every arm."""
  out = {}
  for arm in arms:
    out[arm.id] = {}
    for m in METRICS:
      wins = [t["wins"][arm.id][m][h] for t in tasks]
      ratios = [
        _ratio(
          t["arms"][CANDIDATE]["metrics"][h][m],
          t["arms"][arm.id]["metrics"][h][m],
        )
        for t in tasks
      ]
      out[arm.id][m] = {
        "win_rate": float(np.mean(wins)),
        "wins": int(sum(w == 1.0 for w in wins)),
        "ties": int(sum(w == 0.5 for w in wins)),
        "num_tasks": len(wins),
        "median_ratio": float(np.median(ratios)),
      }
  return out


def _task_summary(
  record: TaskRecord, arms: Sequence[Arm], num_steps: int, num_horizons: int
) -> dict:
  runs = {CANDIDATE: (record.candidate, None)}
  runs.update({arm.id: select(record, arm) for arm in arms})
  out = {"name": record.name, "family": record.family}
  out["seconds"] = record.seconds
  out["arms"] = {}
  for arm_id, (run, value) in runs.items():
    metrics = [_metrics(run, h, num_steps) for h in range(num_horizons)]
    entry = {"hparam": value, "metrics": metrics}
    first, last = metrics[0]["final_train"], metrics[-1]["final_train"]
    entry["drift"] = last > first
    # Noise alone makes half of converged runs "drift"; the relative rise
    # tells a real one apart.
    entry["drift_relative"] = _relative_rise(first, last)
    if record.normalize is not None:
      entry["normalized"] = [
        _normalized_metrics(record.normalize, run, h, num_steps)
        for h in range(num_horizons)
      ]
    entry["curves"] = {k: np.asarray(v) for k, v in run._asdict().items()}
    out["arms"][arm_id] = entry
  cand = out["arms"][CANDIDATE]["metrics"]
  out["wins"] = {
    arm.id: {
      m: [
        _win(cand[h][m], out["arms"][arm.id]["metrics"][h][m])
        for h in range(num_horizons)
      ]
      for m in METRICS
    }
    for arm in arms
  }
  out["grids"] = {
    name: {
      "values": list(g.values),
      "final_train": np.asarray(g.result.final_train),  # [G, S, M]
      "final_valid": np.asarray(g.result.final_valid),  # [G, S, M]
      "final_test": np.asarray(g.result.final_test),  # [G, S, M]
      # [G, S]: the full curves of the chosen values are under "arms".
      "mean_train": curve_mean(g.result.train_loss),
    }
    for name, g in record.grids.items()
  }
  return out


def _normalized_metrics(normalize, run, h: int, num_steps: int) -> dict:
  curve = normalize(np.asarray(run.train_loss)[:, : (h + 1) * num_steps])
  return {
    "final_train": float(
      seed_mean(normalize(np.asarray(run.final_train)[:, h]))
    ),
    "mean_train": float(seed_mean(curve_mean(curve))),
  }


def summarize(
  records: Sequence[TaskRecord],
  arms: Sequence[Arm],
  *,
  num_steps: int,
  horizon_multiple: int = 1,
) -> dict:
  """Per-task values and overall / per-family comparisons, JSON-ready.

  Args:
    records: one per task.
    arms: the baselines to compare the candidate with.
    num_steps: the horizon T.
    horizon_multiple: how many horizons the runs cover (T, 2T, ...).

  Returns:
    ``{"tasks": [...], "horizons": [...], "drift": {...}}``: ``tasks`` holds
    each arm's metrics per horizon, its curves and per-baseline wins;
    ``horizons[h]`` the overall and per-family win rates and median ratios at
    step ``(h + 1) * T``; ``drift`` the tasks whose loss rose from T to the
    last horizon, or diverged, per arm.
  """
  if not records:
    raise ValueError("summarize needs at least one TaskRecord")
  tasks = [_task_summary(r, arms, num_steps, horizon_multiple) for r in records]
  families = sorted({t["family"] for t in tasks})
  arm_ids = [CANDIDATE] + [a.id for a in arms]
  horizons = []
  for h in range(horizon_multiple):
    entry = {"step": (h + 1) * num_steps}
    entry["overall"] = _comparisons(tasks, arms, h)
    entry["per_family"] = {}
    for fam in families:
      sub = [t for t in tasks if t["family"] == fam]
      entry["per_family"][fam] = {"num_tasks": len(sub)}
      entry["per_family"][fam].update(_comparisons(sub, arms, h))
    entry["diverged"] = {
      a: sum(t["arms"][a]["metrics"][h]["diverged"] for t in tasks)
      for a in arm_ids
    }
    if all("normalized" in t["arms"][CANDIDATE] for t in tasks):
      entry["mean_normalized"] = {
        a: {
          m: float(np.mean([t["arms"][a]["normalized"][h][m] for t in tasks]))
          for m in ("final_train", "mean_train")
        }
        for a in arm_ids
      }
    horizons.append(entry)
  drift = {
    a: {
      "upward_drift": [t["name"] for t in tasks if t["arms"][a]["drift"]],
      "upward_drift_over_10pct": [
        t["name"] for t in tasks if t["arms"][a]["drift_relative"] > 0.1
      ],
      "diverged": [
        t["name"] for t in tasks if t["arms"][a]["metrics"][-1]["diverged"]
      ],
    }
    for a in arm_ids
  }
  return {"tasks": tasks, "horizons": horizons, "drift": drift}


def to_json(tree: Any) -> Any:
  """Numpy to lists, non-finite floats to None, floats to 6 digits."""
  if isinstance(tree, dict):
    return {str(k): to_json(v) for k, v in tree.items()}
  if isinstance(tree, list | tuple):
    return [to_json(v) for v in tree]
  if isinstance(tree, np.ndarray):
    return to_json(tree.tolist())
  if isinstance(tree, np.generic):
    return to_json(tree.item())
  if isinstance(tree, float):
    return float(f"{tree:.6g}") if math.isfinite(tree) else None
  return tree


def write_json(path: pathlib.Path, data: dict) -> None:
  """Writes ``data`` as strict JSON (no NaN tokens)."""
  with open(path, "w") as f:
    json.dump(to_json(data), f, allow_nan=False)


# ------------------------------------------------------------------ tables


def _fmt(x: float | None) -> str:
  if x is None or not math.isfinite(x):
    return "inf" if x is not None and x > 0 else "nan"
  return f"{x:.3g}"


def _comparison_table(comparisons: dict, arms: Sequence[Arm]) -> list[str]:
  names = {"final_train": "final train", "mean_train": "mean train"}
  names["final_valid"] = "final valid"
  head = ["baseline"] + [f"win rate, {names[m]}" for m in METRICS]
  head += [f"median ratio, {names[m]}" for m in METRICS]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for arm in arms:
    c = comparisons[arm.id]
    cells = [arm.label]
    cells += [
      f"{c[m]['win_rate']:.2f} ({c[m]['wins']}/{c[m]['num_tasks']})"
      for m in METRICS
    ]
    cells += [_fmt(c[m]["median_ratio"]) for m in METRICS]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def markdown(
  summary: dict, arms: Sequence[Arm], candidate_label: str, meta: dict
) -> str:
  """The report as markdown: win rates, per family, drift, timing.

  Args:
    summary: the output of ``summarize``.
    arms: the baselines, as given to ``summarize``.
    candidate_label: the evaluated optimizer's name.
    meta: run settings shown in the header (split, steps, seeds, seconds...).

  Returns:
    The markdown text.
  """
  tasks = summary["tasks"]
  lines = [f"# Evaluation of {candidate_label}", ""]
  lines.append(
    ", ".join(f"{k}: {v}" for k, v in meta.items() if not isinstance(v, dict))
  )
  lines.append("")
  lines.append(
    "Win rate: fraction of tasks where the candidate's seed-mean loss is "
    "lower (ties 1/2; NaN/inf counts as the worst loss). Median ratio: "
    "median over tasks of candidate / baseline loss. Final losses are "
    "means over the same batches for every arm and, per seed, at every "
    "horizon, so a rise past the first horizon is the parameters'."
  )
  for h in summary["horizons"]:
    step = h["step"]
    lines += ["", f"## Candidate vs baselines at step {step}", ""]
    lines += _comparison_table(h["overall"], arms)
    lines += ["", f"### Per family (final train loss, step {step})", ""]
    head = ["family", "tasks"] + [f"win rate vs {a.label}" for a in arms]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fam, c in h["per_family"].items():
      cells = [fam, str(c["num_tasks"])]
      cells += [f"{c[a.id]['final_train']['win_rate']:.2f}" for a in arms]
      lines.append("| " + " | ".join(cells) + " |")
    if "mean_normalized" in h:
      lines += ["", f"### Mean normalized loss (step {step})", ""]
      lines += ["| optimizer | final train | mean train |", "|---|---|---|"]
      for arm_id, label in labels(arms, candidate_label):
        v = h["mean_normalized"][arm_id]
        lines.append(
          f"| {label} | {_fmt(v['final_train'])} | {_fmt(v['mean_train'])} |"
        )
  if len(summary["horizons"]) > 1:
    first, last = (
      summary["horizons"][0]["step"],
      summary["horizons"][-1]["step"],
    )
    lines += ["", f"## Stability from step {first} to step {last}", ""]
    lines += [
      f"| optimizer | tasks with loss({last}) > loss({first}) | "
      f"... by more than 10% | tasks with NaN/inf by {last} |",
      "|---|---|---|---|",
    ]
    n = len(tasks)
    for arm_id, label in labels(arms, candidate_label):
      d = summary["drift"][arm_id]
      lines.append(
        f"| {label} | {len(d['upward_drift'])}/{n} | "
        f"{len(d['upward_drift_over_10pct'])}/{n} | {len(d['diverged'])}/{n} |"
      )
  lines += ["", "## Per task (final train loss, seed mean)", ""]
  head = ["task", candidate_label] + [a.label for a in arms]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for t in tasks:
    cells = [f"`{t['name']}`"]
    for arm_id, _ in labels(arms, candidate_label):
      cells.append(
        " -> ".join(
          _fmt(m["final_train"]) for m in t["arms"][arm_id]["metrics"]
        )
      )
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def labels(arms: Sequence[Arm], candidate_label: str) -> list[tuple[str, str]]:
  return [(CANDIDATE, candidate_label)] + [(a.id, a.label) for a in arms]


# ------------------------------------------------------------------ output


def write_report(
  out_dir: str | pathlib.Path,
  records: Sequence[TaskRecord],
  arms: Sequence[Arm],
  *,
  candidate_label: str,
  meta: dict,
  num_steps: int,
  horizon_multiple: int = 1,
) -> dict[str, pathlib.Path]:
  """Writes report.json, report.md, curves.png and scatter.png.

  Args:
    out_dir: created if missing.
    records: one per task.
    arms: the baselines; the scatter uses the first tuned one.
    candidate_label: the evaluated optimizer's name.
    meta: run settings and timings, copied into the JSON and the markdown.
    num_steps: the horizon T.
    horizon_multiple: how many horizons the runs cover.

  Returns:
    File kind -> path.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  summary = summarize(
    records, arms, num_steps=num_steps, horizon_multiple=horizon_multiple
  )
  paths = {
    "json": out_dir / "report.json",
    "markdown": out_dir / "report.md",
    "curves": out_dir / "curves.png",
    "scatter": out_dir / "scatter.png",
  }
  write_json(
    paths["json"],
    {
      "meta": meta,
      "candidate": candidate_label,
      "arms": [dataclasses.asdict(a) for a in arms],
      **summary,
    },
  )
  paths["markdown"].write_text(markdown(summary, arms, candidate_label, meta))
  normalized = None
  if all(r.normalize is not None for r in records):
    normalized = {
      t["name"]: {
        a: r.normalize(t["arms"][a]["curves"]["train_loss"]) for a in t["arms"]
      }
      for r, t in zip(records, summary["tasks"])
    }
  series = labels(arms, candidate_label)
  plots.plot_curves(summary, series, paths["curves"], normalized)
  tuned = next((a for a in arms if a.value is None), arms[0])
  plots.plot_scatter(
    summary, (tuned.id, tuned.label), series[0], paths["scatter"]
  )
  return paths
