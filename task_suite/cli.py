"""List task families, show a task, sample suites of task names.

lopt tasks list [--num-tasks 6000] [--seed 0] [--split train]
lopt tasks show NAME
lopt tasks sample --n N [--split test] [--seed S] [--weights mlp=2,conv=1]
"""

import argparse
import collections
import math
import sys

import jax

from task_suite import registry, suite


def _parse_weights(text: str | None) -> dict[str, float] | None:
  if not text:
    return None
  weights = {}
  for part in text.split(","):
    name, sep, value = part.partition("=")
    try:
      weights[name.strip()] = float(value)
    except ValueError:
      sep = ""
    if not sep:
      raise ValueError(
        f"bad --weights entry {part!r}; expected FAMILY=WEIGHT, e.g. "
        "--weights mlp=2,quadratic=1"
      )
  return weights


def _cmd_list(args: argparse.Namespace) -> int:
  weights = suite.resolve_weights(_parse_weights(args.weights))
  specs = suite.sample_suite(args.num_tasks, args.seed, args.split, weights)
  counts = collections.Counter(s.family for s in specs)
  signatures = collections.Counter(
    sig[0] for sig in suite.group_by_signature(specs)
  )
  print(
    f"{args.split} suite: {len(specs)} tasks, seed {args.seed}, "
    f"{sum(signatures.values())} static signatures (compilations)"
  )
  header = f"{'family':<16}{'weight':>8}{'tasks':>8}{'signatures':>12}"
  print(header)
  print("-" * len(header))
  for name in registry.names():
    print(
      f"{name:<16}{weights.get(name, 0.0):>8.3f}{counts[name]:>8d}"
      f"{signatures[name]:>12d}"
    )
  print("-" * len(header))
  print(
    f"{'total':<16}{sum(weights.values()):>8.3f}{len(specs):>8d}"
    f"{sum(signatures.values()):>12d}"
  )
  return 0


def _describe_arrays(tree) -> list[str]:
  lines = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    shape = "x".join(str(d) for d in leaf.shape) or "scalar"
    lines.append(f"  {jax.tree_util.keystr(path)}: {leaf.dtype}[{shape}]")
  return lines


def _cmd_show(args: argparse.Namespace) -> int:
  spec = suite.parse_name(args.name)
  task = suite.get_task(spec)
  key = jax.random.key(0)
  params = jax.eval_shape(task.init, key)
  batch = jax.eval_shape(lambda k: task.batch(k, "train"), key)
  num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  print(f"name: {spec.name}")
  print(f"family: {spec.family}")
  print(f"split: {suite.split_of(spec)}")
  for kind, names in (
    ("static", spec.static_names()),
    ("dynamic", spec.dynamic_names()),
  ):
    print(f"{kind} fields:")
    for n in names:
      print(f"  {n} = {getattr(spec, n)!r}")
    if not names:
      print("  (none)")
  print(f"parameters: {num_params} in {len(jax.tree.leaves(params))} tensors")
  print("\n".join(_describe_arrays(params)))
  print("train batch:")
  print("\n".join(_describe_arrays(batch)) or "  (empty)")
  data_bytes = sum(x.nbytes for x in jax.tree.leaves(task.data))
  if data_bytes:
    print(
      f"data (in memory, shared by the signature): {data_bytes / 2**20:.1f} MiB"
    )
    print("\n".join(_describe_arrays(task.data)))
  else:
    print("data: none (synthetic, generated on device from the batch key)")
  return 0


def _cmd_sample(args: argparse.Namespace) -> int:
  weights = _parse_weights(args.weights)
  for spec in suite.sample_suite(args.n, args.seed, args.split, weights):
    print(spec.name)
  return 0


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="lopt tasks", description=__doc__.splitlines()[0]
  )
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("list", help="families, weights, counts, signatures")
  p.add_argument("--num-tasks", type=int, default=6000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--split", choices=suite.SPLITS, default="train")
  p.add_argument("--weights", help="FAMILY=WEIGHT,... (default: broad mix)")
  p.set_defaults(fn=_cmd_list)

  p = sub.add_parser("show", help="a task's fields, parameters and data")
  p.add_argument("name", help="a task name, e.g. from `lopt tasks sample`")
  p.set_defaults(fn=_cmd_show)

  p = sub.add_parser("sample", help="task names of a suite, one per line")
  p.add_argument("--n", type=int, required=True, help="number of tasks")
  p.add_argument("--split", choices=suite.SPLITS, default="train")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--weights", help="FAMILY=WEIGHT,... (default: broad mix)")
  p.set_defaults(fn=_cmd_sample)
  return parser


def main(argv: list[str]) -> int:
  """Runs ``lopt tasks`` with ``argv`` (without the ``tasks`` word).

  Returns:
    The exit status: 0 on success, 2 on bad input (explained on stderr).
  """
  args = _parser().parse_args(argv)
  try:
    return args.fn(args)
  except (ValueError, TypeError, OSError) as e:  # OSError: missing data
    print(f"lopt tasks {args.command}: error: {e}", file=sys.stderr)
    return 2
