"""Evaluate an optimizer against tuned Adam and SGD-momentum on held-out tasks.

  lopt evaluate --optimizer NAME_OR_PATH --split test --num-tasks 100 \\
      --steps 1000 --seeds 2 --out runs/eval [--horizon-multiple 2]

NAME_OR_PATH is a shipped checkpoint name (``learned_opt.pretrained``), a
checkpoint directory (with a manifest, or written by
``learned_opt.checkpoint.save``), or a baseline name (``nadamw``, ...).
Each task is trained with it and with Adam over a learning-rate grid and
SGD-momentum over a grid, for the same steps and seeds (the same initial
parameters and batches). Writes ``report.json`` (every curve and summary),
``report.md`` (win rates, median loss ratios, per-family breakdown, drift),
``curves.png`` and ``scatter.png`` to ``--out``.
"""

import argparse
import hashlib
import importlib
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from meta_train import map_budget
from meta_train.cli import out_dir
from meta_train.evaluation import report, resolve, rollout
import task_suite

ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SGDM_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
ADAM_DEFAULT_LR = 1e-3
ARMS = (
  report.Arm("adam_default", "Adam(1e-3)", "adam", ADAM_DEFAULT_LR),
  report.Arm("adam_tuned", "Adam tuned", "adam"),
  report.Arm("sgdm_tuned", "SGD-momentum tuned", "momentum"),
)
# Each signature's run program holds ~1,000-2,000 kernel memory maps while
# it lives, and the loop visits every signature once: measured, 100 tasks
# left ~38,000 maps, so ~170 would cross Linux's default cap of 65,530,
# where the process aborts (``meta_train.map_budget``). Past this fraction
# of the cap, the finished signatures' programs are dropped.
RELEASE_FRACTION = 0.5


def resolve_optimizer(name_or_path: str, root=None) -> resolve.Resolved:
  """``resolve.resolve``, with errors worded for ``--optimizer``.

  Raises:
    ValueError: if it is none of these (the message lists the valid names),
      or a corrupted checkpoint (``CheckpointError``).
  """
  try:
    return resolve.resolve(name_or_path, root)
  except FileNotFoundError as e:
    raise ValueError(f"--optimizer {e}") from None


def _lrs(text: str) -> tuple[float, ...]:
  try:
    values = tuple(sorted(float(v) for v in text.split(",")))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"expected comma-separated learning rates, got {text!r}"
    ) from None
  if not values or min(values) <= 0:
    raise argparse.ArgumentTypeError(f"learning rates must be > 0: {text!r}")
  return values


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="lopt evaluate",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  add = parser.add_argument
  add("--optimizer", required=True, help="shipped name, directory or baseline")
  add("--split", default="test", choices=("train", "test"))
  add("--num-tasks", type=int, default=100)
  add("--steps", type=int, default=1000, help="the horizon T")
  add("--seeds", type=int, default=2, help="runs per task and optimizer")
  add("--out", required=True, type=pathlib.Path, help="output directory")
  add("--horizon-multiple", type=int, default=1, help="also run to k*T")
  add("--seed", type=int, default=0, help="suite and run seed")
  add("--families", nargs="+", help="only these task families")
  add("--tasks", nargs="+", help="explicit task names instead of a suite")
  add(
    "--import",
    dest="imports",
    action="append",
    default=[],
    metavar="MODULE",
    help="import MODULE first (e.g. one that calls task_suite.register_task)",
  )
  add(
    "--max-params",
    type=int,
    default=0,
    help="only tasks with at most this many parameters (0: no limit)",
  )
  add(
    "--adam-lrs",
    type=_lrs,
    default=ADAM_LRS,
    help="comma-separated Adam grid; must include 1e-3",
  )
  add("--sgdm-lrs", type=_lrs, default=SGDM_LRS, help="SGD-momentum grid")
  add("--valid-every", type=int, default=0, help="0: about T/10")
  add("--eval-batches", type=int, default=4, help="batches per checkpoint")
  add("--checkpoints-root", type=pathlib.Path, help=argparse.SUPPRESS)
  return parser


def _specs(args) -> list[task_suite.TaskSpec]:
  if args.tasks:
    return [task_suite.parse_name(n) for n in args.tasks]
  weights = None
  if args.families:
    from task_suite import suite

    weights = {f: suite.DEFAULT_WEIGHTS.get(f, 0.1) for f in args.families}
  if not args.max_params:
    return task_suite.sample_suite(
      args.num_tasks, seed=args.seed, split=args.split, weights=weights
    )
  # Draw a larger deterministic pool and keep the first specs under the cap.
  pool = task_suite.sample_suite(
    20 * args.num_tasks, seed=args.seed, split=args.split, weights=weights
  )
  kept = []
  for spec in pool:
    if task_suite.num_params(spec) <= args.max_params:
      kept.append(spec)
      if len(kept) == args.num_tasks:
        return kept
  raise SystemExit(
    f"lopt evaluate: only {len(kept)} {args.split} tasks have at most "
    f"--max-params={args.max_params} parameters; raise it or lower "
    "--num-tasks."
  )


def _task_key(seed: int, name: str) -> jax.Array:
  """Run keys depend on the task's name, not its position in the suite."""
  h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
  return jax.random.fold_in(jax.random.key(seed), h % (2**31))


def _normalizer(task):
  normalize = jax.jit(jax.vmap(task.normalize))

  def apply(x):
    x = np.asarray(x, np.float32)
    return np.asarray(normalize(jnp.asarray(x.reshape(-1)))).reshape(x.shape)

  return apply


def _to_numpy(result: rollout.RolloutResult) -> rollout.RolloutResult:
  return rollout.RolloutResult(*(np.asarray(x) for x in result))


def make_groups(
  candidate: resolve.Resolved, grids: dict[str, tuple[float, ...]]
) -> list[rollout.Group]:
  """The candidate, then each baseline's learning-rate grid."""
  groups = [rollout.Group(candidate.factory, candidate.hparams)]
  for name, values in grids.items():
    lrs = jnp.asarray(values, jnp.float32)
    groups.append(rollout.Group(resolve.BaselineFactory(name), lrs, grid=True))
  return groups


def evaluate_task(
  spec,
  candidate: resolve.Resolved,
  grids: dict,
  config,
  num_seeds: int,
  seed: int,
) -> report.TaskRecord:
  """Runs the candidate and every baseline grid on one task (one program)."""
  start = time.perf_counter()
  task = task_suite.get_task(spec)
  keys = rollout.seed_keys(_task_key(seed, spec.name), num_seeds)
  groups = make_groups(candidate, grids)
  cand, *results = rollout.run_groups(groups, task, keys, config)
  runs = {
    name: report.Grid(tuple(values), _to_numpy(result))
    for (name, values), result in zip(grids.items(), results)
  }
  cand = _to_numpy(cand)
  return report.TaskRecord(
    name=spec.name,
    family=spec.family,
    candidate=cand,
    grids=runs,
    normalize=_normalizer(task),
    seconds=time.perf_counter() - start,
  )


def release_if_crowded(read=map_budget.read_maps) -> bool:
  """Drops the compiled run programs once the process holds more than
  ``RELEASE_FRACTION`` of its memory-map cap; True if it did.

  ``read`` gives ``(maps in use, cap)`` or None where unknown (nothing is
  dropped); a test substitutes its own.
  """
  counts = read()
  if counts is None or counts[0] < RELEASE_FRACTION * counts[1]:
    return False
  rollout.release_programs()
  return True


def main(argv: list[str]) -> int:
  """Runs ``lopt evaluate``; returns the exit status."""
  args = build_parser().parse_args(argv)
  for module in args.imports:  # the user's task families register here
    importlib.import_module(module)
  for flag in ("num_tasks", "steps", "seeds", "horizon_multiple"):
    if getattr(args, flag) < 1:
      print(
        f"lopt evaluate: --{flag.replace('_', '-')} must be >= 1",
        file=sys.stderr,
      )
      return 2
  if ADAM_DEFAULT_LR not in args.adam_lrs:
    print(
      f"lopt evaluate: --adam-lrs must include {ADAM_DEFAULT_LR} (the "
      "default Adam baseline)",
      file=sys.stderr,
    )
    return 2
  try:
    config = rollout.RolloutConfig(
      num_steps=args.steps,
      horizon_multiple=args.horizon_multiple,
      valid_every=args.valid_every,
      num_eval_batches=args.eval_batches,
    )
    candidate = resolve_optimizer(args.optimizer, args.checkpoints_root)
    specs = _specs(args)
    out_dir.prepare(args.out)
  except (ValueError, FileNotFoundError) as e:
    print(f"lopt evaluate: {e}", file=sys.stderr)
    return 2
  grids = {"adam": args.adam_lrs, "momentum": args.sgdm_lrs}
  groups = task_suite.group_by_signature(specs)
  start = time.perf_counter()
  records, compilations = [], 0
  total = sum(len(group) for group in groups.values())
  with tqdm.tqdm(total=total, desc="tasks", unit="task") as bar:
    for group in groups.values():
      compiled_before = rollout.compilation_count()
      for spec in group:
        records.append(
          evaluate_task(spec, candidate, grids, config, args.seeds, args.seed)
        )
        bar.update()
      compilations += rollout.compilation_count() - compiled_before
      release_if_crowded()
  seconds = time.perf_counter() - start
  meta = {
    "optimizer": candidate.label,
    "split": args.split,
    "num_tasks": len(records),
    "steps": args.steps,
    "horizon_multiple": args.horizon_multiple,
    "seeds": args.seeds,
    "seed": args.seed,
    "signatures": len(groups),
    "compilations": compilations,
    "seconds": round(seconds, 1),
    "seconds_per_task": round(seconds / len(records), 2),
    "adam_lrs": list(args.adam_lrs),
    "sgdm_lrs": list(args.sgdm_lrs),
    "valid_every": config.chunk,
    "eval_batches": args.eval_batches,
    "optimizer_info": _short_info(candidate.info),
  }
  paths = report.write_report(
    args.out,
    records,
    ARMS,
    candidate_label=candidate.label,
    meta=meta,
    num_steps=args.steps,
    horizon_multiple=args.horizon_multiple,
  )
  print(
    f"evaluated {len(records)} tasks in {seconds:.1f} s "
    f"({len(groups)} signatures); wrote "
    + ", ".join(str(p) for p in paths.values())
  )
  return 0


def _short_info(info: dict) -> dict:
  """The manifest without its (large) evaluation section."""
  return {k: v for k, v in info.items() if k != "evaluation"}
