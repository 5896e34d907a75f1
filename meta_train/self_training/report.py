"""Summary, markdown table and plot of a self-training comparison.

``summarize`` turns the per-run curves of ``self_training.self_train.run`` into
the reported numbers: for each outer optimizer (and learning rate) the final
evaluation meta-loss (mean over seeds) and the outer steps it needed to reach
meta-loss levels placed at fractions of the way from the initial meta-loss
(the same for everyone: same theta inits and evaluation data) to the best
final one.
"""

import pathlib
from typing import Any

import numpy as np

KINDS = ("learned", "adam", "sgd")
_COLORS = {"learned": "C0", "adam": "C1", "sgd": "C2"}


def first_reached(steps: list[int], curve: np.ndarray, level: float):
  """The first of ``steps`` where ``curve`` is <= ``level`` (None if never)."""
  hits = np.nonzero(np.asarray(curve) <= level)[0]
  return int(steps[hits[0]]) if hits.size else None


def summarize(runs: dict[str, dict[str, Any]], cfg) -> dict[str, Any]:
  """The reported numbers of a self-training comparison.

  Args:
    runs: label -> ``{"optimizer", "learning_rate", "train_meta_loss"
      [seeds][steps], "eval_meta_loss" [seeds][evals], "num_skipped"}``.
    cfg: the ``SelfTrainConfig`` of the run.

  Returns:
    ``{"outer_steps", "eval_steps", "runs", "final_eval_meta_loss",
    "best", "levels", "steps_to_level"}``; ``levels`` has ``fractions``,
    ``values``, ``initial`` and ``best_final``; ``steps_to_level`` maps a
    label to one outer step (or None: not reached) per level.
  """
  eval_steps = list(range(0, cfg.num_outer_steps + 1, cfg.eval_every))
  means = {k: np.mean(r["eval_meta_loss"], axis=0) for k, r in runs.items()}
  final = {k: float(m[-1]) for k, m in means.items()}
  initial = float(np.mean([m[0] for m in means.values()]))
  best_final = min(final.values())
  values = [initial - f * (initial - best_final) for f in cfg.level_fractions]
  best = {}
  for kind in KINDS:
    labels = [k for k, r in runs.items() if r["optimizer"] == kind]
    if labels:
      best[kind] = min(labels, key=final.get)
  return {
    "learned_vs_best_adam": _ratio(runs, best, final),
    "outer_steps": list(range(1, cfg.num_outer_steps + 1)),
    "eval_steps": eval_steps,
    "runs": runs,
    "final_eval_meta_loss": final,
    "best": best,
    "levels": {
      "fractions": list(cfg.level_fractions),
      "values": values,
      "initial": initial,
      "best_final": best_final,
    },
    "steps_to_level": {
      k: [first_reached(eval_steps, m, v) for v in values]
      for k, m in means.items()
    },
  }


def _ratio(runs, best, final) -> dict[str, Any] | None:
  """Final meta-loss of the learned outer optimizer over best Adam's.

  The issue's measure of self-training: the learned optimizer, untuned,
  against Adam at its best learning rate (chosen on the seed mean). Per
  seed too, since both runs of a seed share theta inits and ES noise, and
  with a bootstrap interval over seeds (``ratio_interval``).
  """
  if "learned" not in best or "adam" not in best:
    return None
  learned, adam = best["learned"], best["adam"]
  learned_finals = np.asarray(runs[learned]["eval_meta_loss"])[:, -1]
  adam_finals = np.asarray(runs[adam]["eval_meta_loss"])[:, -1]
  return {
    "learned": learned,
    "adam": adam,
    "ratio": final[learned] / final[adam],
    "per_seed": (learned_finals / adam_finals).tolist(),
    "interval_90": ratio_interval(learned_finals, adam_finals),
  }


def ratio_interval(
  learned_finals, adam_finals, *, level: float = 0.9, num_resamples=2000
) -> list[float]:
  """A bootstrap interval of ``mean(learned) / mean(adam)`` over seeds.

  Why: one seed's ratio ranges from 0.65x to 2.7x on the same task (ES
  runs are chaotic), so the ratio of the seed means needs its spread to be
  read against a target. Seeds are resampled in pairs (a seed's two runs
  share theta inits and ES noise), with a fixed generator, so the interval
  is reproducible. It does not count the choice of Adam's best learning
  rate on the same seeds, which favours Adam.

  Returns:
    ``[low, high]``, the ``(1 -+ level) / 2`` quantiles of the resampled
    ratios.
  """
  learned_finals = np.asarray(learned_finals, np.float64)
  adam_finals = np.asarray(adam_finals, np.float64)
  rng = np.random.default_rng(0)
  picks = rng.integers(
    0, len(learned_finals), (num_resamples, len(learned_finals))
  )
  ratios = learned_finals[picks].mean(axis=1) / adam_finals[picks].mean(axis=1)
  low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
  return [float(low), float(high)]


def markdown(summary: dict[str, Any]) -> str:
  """The table of outer steps to reach each meta-loss level."""
  levels = summary["levels"]
  kinds = [r["optimizer"] for r in summary["runs"].values()]
  best_labels = {
    label for kind, label in summary["best"].items() if kinds.count(kind) > 1
  }
  header = ["outer optimizer", "final meta-loss"] + [
    f"steps to {v:.3f} ({100 * f:g}%)"
    for f, v in zip(levels["fractions"], levels["values"])
  ]
  lines = [
    "# Self-training: outer steps to reach meta-loss levels",
    "",
    f"Task: `{summary.get('task', '?')}`. Meta-loss: mean normalized train "
    "loss of fresh inner runs with the optimizer being trained (mean over "
    f"seeds), evaluated every {summary['eval_steps'][1]} outer steps. "
    f"Initial meta-loss {levels['initial']:.4f}; best final "
    f"{levels['best_final']:.4f}. Levels are fractions of the way from the "
    "initial to the best final meta-loss; `-`: not reached; `*`: the best "
    "learning rate of its grid.",
    "",
  ]
  ratio = summary.get("learned_vs_best_adam")
  if ratio:
    per_seed = ", ".join(f"{r:.2f}" for r in ratio["per_seed"])
    low, high = ratio["interval_90"]
    lines += [
      f"Final meta-loss of `{ratio['learned']}` / `{ratio['adam']}` (the "
      f"best Adam): **{ratio['ratio']:.2f}** (90% bootstrap interval over "
      f"seeds {low:.2f}-{high:.2f}; per seed: {per_seed}).",
      "",
    ]
  lines += [
    "| " + " | ".join(header) + " |",
    "|" + "---|" * len(header),
  ]
  for label, steps in summary["steps_to_level"].items():
    mark = " *" if label in best_labels else ""
    cells = [f"{label}{mark}", f"{summary['final_eval_meta_loss'][label]:.4f}"]
    cells += ["-" if s is None else str(s) for s in steps]
    lines.append("| " + " | ".join(cells) + " |")
  if levels["best_final"] >= levels["initial"]:
    lines += ["", "No outer optimizer lowered the meta-loss."]
  return "\n".join(lines) + "\n"


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
  if window <= 1 or x.shape[-1] < window:
    return x
  kernel = np.ones(window) / window
  return np.convolve(x, kernel, mode="valid")


def plot(summary: dict[str, Any], path: str | pathlib.Path) -> None:
  """Writes the meta-loss curves (evaluation and ES) as a PNG."""
  import matplotlib  # noqa: PLC0415 (headless, imported only when plotting)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, (ax_eval, ax_train) = plt.subplots(1, 2, figsize=(11, 4))
  best = set(summary["best"].values())
  steps = np.asarray(summary["eval_steps"])
  for label, r in summary["runs"].items():
    color = _COLORS.get(r["optimizer"], "k")
    curves = np.asarray(r["eval_meta_loss"])  # [seeds, evals]
    if label in best:
      ax_eval.plot(steps, curves.mean(0), color=color, lw=2, label=label)
      ax_eval.fill_between(
        steps, curves.min(0), curves.max(0), color=color, alpha=0.2
      )
      train = np.asarray(r["train_meta_loss"]).mean(0)
      window = max(1, train.size // 20)
      smooth = _smooth(train, window)
      x = np.arange(1, train.size + 1)[window - 1 :][: smooth.size]
      ax_train.plot(x, smooth, color=color, label=label)
    else:
      ax_eval.plot(
        steps, curves.mean(0), color=color, lw=0.8, ls=":", label=label
      )
  for v in summary["levels"]["values"]:
    ax_eval.axhline(v, color="gray", lw=0.5, ls="--")
  # A diverged grid value would squash every other curve.
  top = 1.5 * max(summary["levels"]["initial"], 1e-3)
  low = min(
    float(np.min(r["eval_meta_loss"])) for r in summary["runs"].values()
  )
  ax_eval.set_ylim(min(0.0, low), top)
  ax_eval.set(
    xlabel="outer step",
    ylabel="meta-loss (fresh inner runs)",
    title="evaluation meta-loss (shaded: seed range)",
  )
  ax_train.set(
    xlabel="outer step",
    ylabel="ES truncation meta-loss",
    title="training meta-loss (moving average)",
  )
  ax_eval.legend(fontsize=7)
  ax_train.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
