"""Train small built-in models with the shipped learned optimizer and Adam.

Usage:
  lopt demo [--checkpoint NAME_OR_PATH] [--out DIR] [--steps N] [--seeds S]
            [--tasks quadratic,rosenbrock,regression,mnist]

Loads the shipped learned optimizer (``learned_opt.load_pretrained()``, or
``--checkpoint``: a shipped name or a checkpoint directory), trains each
built-in task (a rotated quadratic, the Rosenbrock function, a
teacher-student regression MLP, and an MLP on 8x8 MNIST when the dataset is
on disk; nothing is downloaded) with it, with Adam at its default learning
rate 1e-3 and with Adam at the best learning rate of a half-decade grid
1e-4..1e-1 ("tuned Adam", picked per task on the final train loss), for the
same steps and seeds. Prints a table of final and mean train losses and
writes ``demo.png`` (loss curves), ``demo.md`` (the table) and ``demo.json``
(every number) to ``--out`` (default ``./lopt_demo``).
"""

import argparse
import json
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt import pretrained
from meta_train.cli import out_dir
from meta_train.evaluation import resolve, rollout
from task_suite import data
from task_suite.families import mlp, quadratic, regression, test_functions

ADAM_GRID = tuple(float(x) for x in np.logspace(-4, -1, 7))  # has 1e-3
TASK_NAMES = ("quadratic", "rosenbrock", "regression", "mnist")


def demo_tasks(names=TASK_NAMES) -> tuple[dict[str, Any], list[str]]:
  """The built-in demo tasks, and notes on the ones that were skipped.

  Returns:
    ``({label: task}, notes)``.
  """
  specs = {
    "quadratic": quadratic.QuadraticSpec(
      dim=32, seed=3, cond=100.0, noise_std=0.1, init_scale=1.0
    ),
    "rosenbrock": test_functions.TestFunctionSpec(
      function="rosenbrock", x0=-1.5, y0=2.0, init_scale=0.1
    ),
    "regression": regression.RegressionSpec(
      input_dim=8,
      hidden=(32,),
      output_dim=1,
      batch_size=64,
      activation="tanh",
      teacher_seed=1,
      noise_std=0.1,
    ),
    "mnist": mlp.MLPSpec(
      hidden=(32,),
      image_size=8,
      batch_size=128,
      activation="relu",
      init_scale=1.0,
      dataset="mnist",
      data_seed=0,
    ),
  }
  labels = {
    "quadratic": "quadratic (32-d, cond 100, noisy)",
    "rosenbrock": "Rosenbrock (2-d)",
    "regression": "teacher-student MLP 8-32-1",
    "mnist": "MNIST 8x8 MLP 64-32-10",
  }
  families = {
    "quadratic": quadratic.QuadraticFamily(),
    "rosenbrock": test_functions.TestFunctionFamily(),
    "regression": regression.RegressionFamily(),
    # source="files": the demo never downloads (tfds would, if installed).
    "mnist": mlp.MLPFamily(
      load_images=lambda name, size: data.load_images(
        name, size, source="files"
      )
    ),
  }
  tasks, notes = {}, []
  for name in names:
    if name not in specs:
      raise ValueError(
        f"unknown demo task {name!r}; valid: {', '.join(TASK_NAMES)}"
      )
    try:
      tasks[labels[name]] = families[name].task(specs[name])
    except (OSError, ImportError) as e:  # no dataset on disk: skip it
      first = str(e).split(". ")[0]
      notes.append(
        f"skipped {labels[name]}: {first}. To include it, set "
        "LOPT_DATA_DIR to a folder with the mnist/ and fashion_mnist/ files."
      )
  return tasks, notes


def _tail_mean(x: np.ndarray) -> np.ndarray:
  """Mean over the last 5% of steps (the 'final' train loss)."""
  n = max(1, x.shape[-1] // 20)
  return x[..., -n:].mean(-1)


def train_task(task, lopt, theta, steps: int, seeds: int, key) -> dict:
  """Curves and summary of one task for the three optimizers."""
  keys = rollout.seed_keys(key, seeds)
  learned = rollout.train_curves(
    task,
    theta,
    keys,
    factory=resolve.LearnedFactory(lopt),
    num_steps=steps,
    grid=False,
  )
  grid = rollout.train_curves(
    task,
    jnp.asarray(ADAM_GRID, jnp.float32),
    keys,
    factory=resolve.BaselineFactory("adam"),
    num_steps=steps,
    grid=True,
  )
  grid_curves = np.asarray(grid, np.float64)  # [grid, seeds, T]
  finals = _tail_mean(grid_curves).mean(-1)  # [grid]
  finals = np.where(np.isfinite(finals), finals, np.inf)
  best = int(np.argmin(finals))
  default = ADAM_GRID.index(1e-3)
  curves = {
    "learned": np.asarray(learned, np.float64),
    "adam 1e-3": grid_curves[default],
    f"tuned adam {ADAM_GRID[best]:.2g}": grid_curves[best],
  }
  return {
    "tuned_adam_lr": ADAM_GRID[best],
    "curves": {k: v.tolist() for k, v in curves.items()},
    "final": {k: float(_tail_mean(v).mean()) for k, v in curves.items()},
    "mean": {k: float(v.mean()) for k, v in curves.items()},
  }


def table(results: dict[str, dict]) -> str:
  """Markdown table: final and mean train loss per task and optimizer."""
  lines = [
    "| task | optimizer | final train loss | mean train loss |",
    "|---|---|---|---|",
  ]
  for task, r in results.items():
    for opt in r["final"]:
      lines.append(
        f"| {task} | {opt} | {r['final'][opt]:.4g} | {r['mean'][opt]:.4g} |"
      )
  return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: pathlib.Path, title: str) -> None:
  """One panel per task: train loss (mean over seeds) per optimizer."""
  import matplotlib  # noqa: PLC0415 (headless, imported only here)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  n = len(results)
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
  for ax, (task, r) in zip(axes[0], results.items()):
    for (opt, curve), color in zip(r["curves"].items(), ("C0", "C1", "C2")):
      c = np.asarray(curve)  # [seeds, T]
      steps = np.arange(1, c.shape[-1] + 1)
      ax.plot(steps, c.mean(0), color=color, lw=1.2, label=opt)
      ax.fill_between(steps, c.min(0), c.max(0), color=color, alpha=0.15)
    finite = np.asarray([v for v in r["curves"].values()], np.float64).ravel()
    if np.all(np.isfinite(finite)) and np.all(finite > 0):
      ax.set_yscale("log")
    ax.set(title=task, xlabel="step", ylabel="train loss")
    ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _parse(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="lopt demo", description=__doc__.splitlines()[0]
  )
  p.add_argument(
    "--checkpoint",
    default=pretrained.DEFAULT_NAME,
    help="shipped optimizer name or checkpoint directory",
  )
  p.add_argument("--out", default="lopt_demo", help="output folder")
  p.add_argument("--steps", type=int, default=1000, help="steps per run")
  p.add_argument("--seeds", type=int, default=2, help="runs per optimizer")
  p.add_argument(
    "--tasks",
    default=",".join(TASK_NAMES),
    help=f"comma-separated subset of {','.join(TASK_NAMES)}",
  )
  args = p.parse_args(argv)
  if args.steps < 1 or args.seeds < 1:
    p.error("--steps and --seeds must be >= 1")
  return args


def main(argv: list[str]) -> int:
  """Entry point of ``lopt demo``; returns the exit status."""
  args = _parse(argv)
  start = time.perf_counter()
  try:
    optimizer = resolve.resolve(args.checkpoint, learned_only=True)
    lopt, theta = optimizer.lopt, optimizer.theta
    name = optimizer.label
    if "name" not in optimizer.info:  # not a pretrained manifest
      name = f"{args.checkpoint} ({lopt.architecture})"
    tasks, notes = demo_tasks([t for t in args.tasks.split(",") if t])
    out = out_dir.prepare(args.out)
  except (FileNotFoundError, ValueError) as e:
    print(f"lopt demo: {e}", file=sys.stderr)
    return 2
  print(f"learned optimizer: {name}; {args.steps} steps x {args.seeds} seeds")
  results = {}
  for i, (label, task) in enumerate(tasks.items()):
    print(f"  training {label} ...", flush=True)
    results[label] = train_task(
      task, lopt, theta, args.steps, args.seeds, jax.random.key(i)
    )
  text = table(results)
  print()
  print(text)
  for note in notes:
    print(f"note: {note}")
  (out / "demo.md").write_text(text + "".join(f"\n{n}\n" for n in notes))
  summary = {
    "optimizer": name,
    "steps": args.steps,
    "seeds": args.seeds,
    "notes": notes,
    "tasks": results,
  }
  (out / "demo.json").write_text(json.dumps(summary))
  plot(results, out / "demo.png", f"learned optimizer {name} vs Adam")
  print(
    f"plot: {(out / 'demo.png').resolve()}  (table: demo.md, curves: "
    f"demo.json; {time.perf_counter() - start:.0f} s)"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
