"""Plots of an evaluation report (matplotlib, Agg backend: no display needed).

Both take the output of ``report.summarize``: per-family mean train-loss
curves with the seeds' range shaded, and a per-task scatter of the
candidate's final train loss against a baseline's.
"""

from collections.abc import Sequence
import pathlib

import numpy as np


def plot_curves(
  summary: dict,
  series: Sequence[tuple[str, str]],
  path: pathlib.Path,
  normalized_curves: dict[str, dict[str, np.ndarray]] | None = None,
) -> None:
  """Per-family mean train-loss curves, shaded between the seeds' extremes.

  Args:
    summary: the output of ``report.summarize``.
    series: ``(arm id, label)`` of each optimizer to draw.
    path: the PNG to write.
    normalized_curves: task name -> arm id -> ``[S, L]`` normalized curve;
      raw losses are plotted when None.
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  tasks = summary["tasks"]
  families = sorted({t["family"] for t in tasks})
  ncols = min(3, len(families))
  nrows = -(-len(families) // ncols)
  fig, axes = plt.subplots(
    nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False
  )
  for ax, fam in zip(axes.flat, families):
    sub = [t for t in tasks if t["family"] == fam]
    means = []
    for arm_id, label in series:
      curves = np.stack(
        [
          normalized_curves[t["name"]][arm_id]
          if normalized_curves
          else t["arms"][arm_id]["curves"]["train_loss"]
          for t in sub
        ]
      ).astype(np.float64)  # [tasks, S, L]
      per_seed = np.mean(curves, axis=0)  # [S, L]: family mean per seed
      steps = np.arange(per_seed.shape[-1])
      means.append(np.mean(per_seed, axis=0))
      (line,) = ax.plot(steps, means[-1], label=label, lw=1.2)
      ax.fill_between(
        steps,
        np.min(per_seed, axis=0),
        np.max(per_seed, axis=0),
        color=line.get_color(),
        alpha=0.2,
      )
    for h in summary["horizons"][:-1]:
      ax.axvline(h["step"], color="gray", ls="--", lw=0.8)
    ax.set_title(f"{fam} ({len(sub)} tasks)")
    ax.set_xlabel("step")
    ax.set_ylabel(
      "normalized train loss" if normalized_curves else "train loss"
    )
    _robust_ylim(ax, np.stack(means))
  for ax in list(axes.flat)[len(families) :]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _robust_ylim(ax, means: np.ndarray) -> None:
  """All of every mean curve but the highest 1% (a diverging one's spikes)."""
  finite = means[np.isfinite(means)]
  if finite.size:
    lo, hi = finite.min(), np.percentile(finite, 99.0)
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
    ax.set_ylim(lo - pad, hi + pad)


def plot_scatter(
  summary: dict,
  x_series: tuple[str, str],
  y_series: tuple[str, str],
  path: pathlib.Path,
) -> None:
  """Scatter of two arms' final train losses at T, one dot per task.

  Args:
    summary: the output of ``report.summarize``.
    x_series: ``(arm id, label)`` on the x axis (a baseline).
    y_series: ``(arm id, label)`` on the y axis (the candidate).
    path: the PNG to write.

  Diverged runs (inf) are drawn at the plot's edge with an x marker.
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  tasks = summary["tasks"]
  (x_id, x_label), (y_id, y_label) = x_series, y_series
  x = np.array([t["arms"][x_id]["metrics"][0]["final_train"] for t in tasks])
  y = np.array([t["arms"][y_id]["metrics"][0]["final_train"] for t in tasks])
  both = np.concatenate([x, y])
  finite = both[np.isfinite(both)]
  lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
  log = finite.size > 0 and lo > 0
  edge = hi * 2 if log else hi + 0.1 * (hi - lo + 1)
  fig, ax = plt.subplots(figsize=(5, 5))
  families = sorted({t["family"] for t in tasks})
  for fam in families:
    idx = [i for i, t in enumerate(tasks) if t["family"] == fam]
    xs, ys = np.minimum(x[idx], edge), np.minimum(y[idx], edge)
    bad = ~(np.isfinite(x[idx]) & np.isfinite(y[idx]))
    (pts,) = ax.plot(xs[~bad], ys[~bad], "o", ms=4, label=fam, alpha=0.8)
    if bad.any():
      ax.plot(xs[bad], ys[bad], "x", color=pts.get_color(), ms=6)
  ax.plot([lo, edge], [lo, edge], color="gray", lw=0.8, ls="--")
  if log:
    ax.set_xscale("log")
    ax.set_yscale("log")
  ax.set_xlabel(f"{x_label} final train loss")
  ax.set_ylabel(f"{y_label} final train loss")
  ax.set_title(f"below the diagonal: {y_label} better")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
