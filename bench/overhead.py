"""Train-step overhead of the learned optimizers relative to Adam.

For haiku MLPs of about 10k, 100k and 1M parameters (batch 128, synthetic
classification data), times the jitted train step (forward, backward, optimizer
update, apply) with ``HierarchicalLOpt`` (the paper's step; the scale-aware
``init_rms`` step with progress features; the shipped default
``default_pretrained``, the paper's step with the per-tensor step-size
adaptation), ``MLPLOpt``, ``optax.adam`` and a straightforward implementation
of ``HierarchicalLOpt`` (``bench/straightforward.py``: every MLP input tiled
per entry, all 18 outputs per entry; the yardstick the issue's targets were set
against), all in this process after warm-up. Optimizers are interleaved within
each repeat so that load from other processes hits them alike; the reported
time is the median over repeats. Prints one JSON line per (model, optimizer)
with the ratio to Adam and the optimizer-state bytes per parameter. Wall-clock
time (``step_ms``, ``ratio_to_adam``) is the figure of merit; process CPU time
(``cpu_ms``, ``cpu_ratio_to_adam``) is also reported because it is less
sensitive to other processes on a shared machine, and so is the ratio of the
fastest blocks (``best_step_ms``, ``best_ratio_to_adam``): on a busy machine
other jobs only ever slow a block down, so the minimum is the least disturbed
estimate.

The ``straightforward`` record also gives ``max_rel_update_diff``: the
largest difference between its first two updates and ``HierarchicalLOpt``'s,
relative to the largest update. It is float32 rounding, ~1e-6, except where
a tensor's mean accumulator is ~0: the LSTM's ``sign(mean)`` input can then
flip with rounding (the 100k model's output bias, whose softmax gradient
sums to zero, gives ~1e-2).

A last record per model, ``hierarchical_mlp_matmuls_only``, times the
per-parameter MLP's matmuls alone over as many entries (see
``make_matmul_floor``): the part of the ratio no restructuring around the
MLP can remove.

Usage:
  uv run python bench/overhead.py [--sizes 10k,100k,1M] [--repeats 15]
      [--min-block-s 0.2]

Targets on a 2-core CPU (DESIGN.md §8, issue 2): hierarchical <= 5x Adam at
10k parameters and <= 12x at 1M.
"""

import argparse
import json
import statistics
import sys
import time

import haiku as hk
import jax
import jax.numpy as jnp
import optax
import straightforward

import learned_opt
from learned_opt import features, networks

BATCH = 128
NUM_CLASSES = 10
# name -> (input dim, hidden width); two hidden layers.
MODELS = {"10k": (64, 72), "100k": (128, 256), "1M": (1024, 640)}
# The record of make_matmul_floor's lower bound.
MATMUL_FLOOR = "hierarchical_mlp_matmuls_only"


def make_task(name: str):
  """(params, batch, loss_fn) of an MLP classifier on fixed random data."""
  in_dim, hidden = MODELS[name]
  net = hk.without_apply_rng(
    hk.transform(lambda x: hk.nets.MLP([hidden, hidden, NUM_CLASSES])(x))
  )
  k_init, k_x, k_y = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k_x, (BATCH, in_dim))
  y = jax.random.randint(k_y, (BATCH,), 0, NUM_CLASSES)
  params = net.init(k_init, x)

  def loss_fn(params, x, y):
    logits = net.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, (x, y), loss_fn


def make_step(tx, loss_fn):
  """The jitted train step; params and state are donated."""

  def step(params, state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def optimizers():
  hier = learned_opt.HierarchicalLOpt()
  mlp = learned_opt.MLPLOpt()
  key = jax.random.key(0)
  theta = hier.init(key)
  # The scale-aware design of configs/scale_aware.py (issue 19).
  scaled = learned_opt.HierarchicalLOpt(
    step_scale="init_rms", progress_features=True, step_mult=1e-2
  )
  return {
    "adam": optax.adam(1e-3),
    "hierarchical": hier.optimizer(theta),
    "hierarchical_init_rms": scaled.optimizer(
      scaled.init(key), num_steps=10_000
    ),
    # The shipped default (hierarchical_width8_cpu): the paper's step with
    # the per-tensor step-size adaptation (issue 19) over a trace of past
    # updates, a floor that anneals over the run's end, a deep floor, and a
    # reference RMS (steps shrink with a small model's weights), with a
    # per-parameter MLP of width 8; and the default before it
    # (hierarchical_small_cpu_adaptive_ref0.1): the same rule without the
    # deep floor on the architecture of "hierarchical" (width 32).
    "default_pretrained": learned_opt.load_pretrained(num_steps=10_000),
    "previous_default": learned_opt.load_pretrained(
      "hierarchical_small_cpu_adaptive_ref0.1", num_steps=10_000
    ),
    "mlp": mlp.optimizer(mlp.init(key)),
    "straightforward": straightforward.optimizer(hier, theta),
  }


def max_rel_update_diff(txs, params, batch, loss_fn, num_steps=2) -> float:
  """Largest difference of two optimizers' updates over a few steps.

  Relative to the largest update; both follow the first one's trajectory.
  """
  states = [tx.init(params) for tx in txs]
  updates_fns = [jax.jit(tx.update) for tx in txs]
  worst = 0.0
  for _ in range(num_steps):
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    results = [
      u(grads, s, params, value=loss) for u, s in zip(updates_fns, states)
    ]
    states = [state for _, state in results]
    (first, _), (second, _) = results
    diff = max(
      float(jnp.max(jnp.abs(a - b)))
      for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second))
    )
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(first))
    worst = max(worst, diff / scale)
    params = optax.apply_updates(params, first)
  return worst


def make_matmul_floor(num_params: int):
  """(step, carry) of the per-parameter MLP's matmuls alone: a lower bound.

  ``HierarchicalLOpt``'s 3 MLP layers (with ReLU) over ``num_params``
  entries of fixed random features, chunked as in the optimizer, and nothing
  else: no features, accumulators, LSTM, model or update. Its ratio to Adam
  is what the per-parameter MLP's arithmetic alone costs on this machine.
  """
  lopt = learned_opt.HierarchicalLOpt()
  k_theta, k_x = jax.random.split(jax.random.key(1))
  layers = lopt.init(k_theta)["mlp"]
  num_features = len(features.per_param_feature_names(lopt.decays))
  w_entry = layers[0]["w"][:num_features].T  # [H, F]
  bias = layers[0]["b"]
  x = jax.random.normal(k_x, (num_features, num_params))

  def step(params, x, batch):
    del batch
    out, h_sum = networks.mlp_entries(
      layers, w_entry, bias, (x,), lambda c, buffer: c, 2, lopt.chunk_size
    )
    return params, x, out[0, 0] + h_sum[0]

  # Donated: returning an undonated x would copy it every step.
  return jax.jit(step, donate_argnums=(0, 1)), x


def time_block(step, carry, batch, iters):
  """Runs ``iters`` steps; returns per-step (wall, process CPU) seconds."""
  params, state = carry
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(iters):
    params, state, loss = step(params, state, batch)
  loss.block_until_ready()
  wall = (time.perf_counter() - start) / iters
  cpu = (time.process_time() - cpu_start) / iters
  return (wall, cpu), (params, state)


def warm_up(step, carry, batch, min_block_s):
  """Compiles ``step``; returns the carry and steps per ~min_block_s block."""
  _, carry = time_block(step, carry, batch, 2)
  (dt, _), carry = time_block(step, carry, batch, 3)
  return carry, max(1, round(min_block_s / max(dt, 1e-6)))


def bench_model(name, repeats, min_block_s):
  params, batch, loss_fn = make_task(name)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  runs = {}
  txs = optimizers()
  agreement = max_rel_update_diff(
    [txs["hierarchical"], txs["straightforward"]], params, batch, loss_fn
  )
  for opt_name, tx in txs.items():
    p = jax.tree.map(jnp.copy, params)
    state = tx.init(p)
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    step = make_step(tx, loss_fn)
    carry, iters = warm_up(step, (p, state), batch, min_block_s)
    runs[opt_name] = dict(step=step, carry=carry, iters=iters, times=[],
                          cpu=[], state_bytes=state_bytes)  # fmt: skip
  floor_step, floor_x = make_matmul_floor(num_params)
  carry, iters = warm_up(
    floor_step, (jax.tree.map(jnp.copy, params), floor_x), batch, min_block_s
  )
  runs[MATMUL_FLOOR] = dict(step=floor_step, carry=carry, iters=iters,
                            times=[], cpu=[], state_bytes=0)  # fmt: skip
  for _ in range(repeats):
    for run in runs.values():
      (dt, cpu), run["carry"] = time_block(
        run["step"], run["carry"], batch, run["iters"]
      )
      run["times"].append(dt)
      run["cpu"].append(cpu)
  adam = statistics.median(runs["adam"]["times"])
  adam_best = min(runs["adam"]["times"])
  adam_cpu = statistics.median(runs["adam"]["cpu"])
  plain = statistics.median(runs["straightforward"]["times"])
  for opt_name, run in runs.items():
    med = statistics.median(run["times"])
    best = min(run["times"])
    cpu = statistics.median(run["cpu"])
    record = {
      "model": f"mlp_{name}",
      "num_params": int(num_params),
      "batch": BATCH,
      "optimizer": opt_name,
      "step_ms": round(1e3 * med, 4),
      "adam_step_ms": round(1e3 * adam, 4),
      "ratio_to_adam": round(med / adam, 3),
      "best_step_ms": round(1e3 * best, 4),
      "best_ratio_to_adam": round(best / adam_best, 3),
      "cpu_ms": round(1e3 * cpu, 4),
      "cpu_ratio_to_adam": round(cpu / adam_cpu, 3),
      "ratio_to_straightforward": round(med / plain, 3),
      "state_bytes_per_param": round(run["state_bytes"] / num_params, 3),
      "repeats": repeats,
      "iters_per_repeat": run["iters"],
      "backend": jax.default_backend(),
    }
    if opt_name == "straightforward":
      record["max_rel_update_diff"] = float(f"{agreement:.3g}")
    print(json.dumps(record), flush=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="10k,100k,1M")
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--min-block-s", type=float, default=0.2)
  args = parser.parse_args(argv)
  sizes = args.sizes.split(",")
  unknown = [s for s in sizes if s not in MODELS]
  if unknown:
    parser.error(f"unknown sizes {unknown}; valid: {','.join(MODELS)}")
  for name in sizes:
    bench_model(name, args.repeats, args.min_block_s)
  return 0


if __name__ == "__main__":
  sys.exit(main())
