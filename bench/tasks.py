"""Train-step cost of each task family, and compilations of the default suite.

For one spec per family (the first of a one-family suite), times an Adam
train step (batch sampling, forward, backward, update) two ways:

* inside a ``lax.scan`` of 20 steps in one jitted call, as the meta-training
  engine runs inner steps (time per step), and
* as a standalone jitted step (params and optimizer state donated),

and reports their ratio (scan / standalone, measured in the same process),
the compile time of the scan and the parameter count. Then it samples the
default 6000-task train suite and 600-task test suite, reporting the sampling
time and the number of distinct static signatures (one compilation each).
One JSON line per result.

Usage:
  uv run python bench/tasks.py [--families mlp,conv] [--repeats 5]
      [--min-block-s 0.2] [--num-train 6000] [--num-test 600]

Data families read ``$LOPT_DATA_DIR`` (default here: ../shared/data when it
exists, as in the tests).
"""

import argparse
import functools
import json
import math
import os
import pathlib
import statistics
import sys
import time

_SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
if "LOPT_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
  os.environ["LOPT_DATA_DIR"] = str(_SHARED_DATA)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from task_suite import registry, suite  # noqa: E402

SCAN_STEPS = 20
ADAM = optax.adam(1e-3)


def _step(task, params, opt_state, key):
  loss, grads = task.value_and_grad(params, key, task.batch(key, "train"))
  updates, opt_state = ADAM.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, donate_argnums=(1, 2))
def standalone_step(task, params, opt_state, key):
  """One train step; also returns the next step's key (no eager dispatch)."""
  params, opt_state, _ = _step(task, params, opt_state, key)
  return params, opt_state, jax.random.fold_in(key, 1)


@jax.jit
def scan_steps(task, params, opt_state, key):
  """``SCAN_STEPS`` train steps in one ``lax.scan``, and the next key."""

  def body(carry, i):
    params, opt_state = carry
    params, opt_state, loss = _step(
      task, params, opt_state, jax.random.fold_in(key, i)
    )
    return (params, opt_state), loss

  (params, opt_state), _ = jax.lax.scan(
    body, (params, opt_state), jnp.arange(SCAN_STEPS)
  )
  return params, opt_state, jax.random.fold_in(key, 1)


def _median_time(fn, state, repeats: int, min_block_s: float):
  """Median seconds per call of ``state = fn(*state)`` over repeated blocks."""
  state = jax.block_until_ready(fn(*state))  # warm-up
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < min_block_s:
    state = jax.block_until_ready(fn(*state))
    calls += 1
  per_call = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      state = fn(*state)
    jax.block_until_ready(state)
    per_call.append((time.perf_counter() - start) / calls)
  return statistics.median(per_call)


def bench_family(name: str, repeats: int, min_block_s: float) -> dict:
  """Timings of one spec of family ``name``."""
  spec = suite.sample_suite(1, seed=0, weights={name: 1.0})[0]
  task = suite.get_task(spec)
  key = jax.random.key(0)
  params = task.init(key)
  num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))

  start = time.perf_counter()
  compiled = scan_steps.lower(task, params, ADAM.init(params), key).compile()
  compile_s = time.perf_counter() - start

  run_scan = lambda *state: compiled(task, *state)
  run_step = lambda *state: standalone_step(task, *state)

  copy = lambda: (jax.tree.map(jnp.copy, params), ADAM.init(params), key)
  scan_s = _median_time(run_scan, copy(), repeats, min_block_s) / SCAN_STEPS
  step_s = _median_time(run_step, copy(), repeats, min_block_s)
  return {
    "bench": "train_step",
    "family": name,
    "spec": spec.name,
    "num_params": num_params,
    "scan_ms_per_step": round(1e3 * scan_s, 4),
    "standalone_ms_per_step": round(1e3 * step_s, 4),
    "scan_over_standalone": round(scan_s / step_s, 3),
    "scan_compile_s": round(compile_s, 2),
  }


def bench_suite(num_train: int, num_test: int) -> dict:
  """Sampling time and compilations of the default train and test suites."""
  start = time.perf_counter()
  train = suite.sample_suite(num_train, seed=0, split="train")
  train_s = time.perf_counter() - start
  start = time.perf_counter()
  test = suite.sample_suite(num_test, seed=0, split="test")
  test_s = time.perf_counter() - start
  train_groups = suite.group_by_signature(train)
  per_family = {}
  for sig in train_groups:
    per_family[sig[0]] = per_family.get(sig[0], 0) + 1
  return {
    "bench": "suite",
    "num_train": num_train,
    "num_test": num_test,
    "train_sample_s": round(train_s, 2),
    "test_sample_s": round(test_s, 2),
    "train_signatures": len(train_groups),
    "test_signatures": len(suite.group_by_signature(test)),
    "all_signatures": len(suite.group_by_signature(train + test)),
    "train_signatures_per_family": per_family,
  }


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--families", default=",".join(registry.FAMILIES))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--min-block-s", type=float, default=0.2)
  parser.add_argument("--num-train", type=int, default=6000)
  parser.add_argument("--num-test", type=int, default=600)
  args = parser.parse_args(argv)
  print(
    json.dumps(
      {
        "bench": "env",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
      }
    ),
    flush=True,
  )
  for name in args.families.split(","):
    registry.get_family(name)  # fail early with the valid names
  for name in args.families.split(","):
    print(
      json.dumps(bench_family(name, args.repeats, args.min_block_s)),
      flush=True,
    )
  print(json.dumps(bench_suite(args.num_train, args.num_test)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
