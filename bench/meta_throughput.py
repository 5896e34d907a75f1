"""Meta-training throughput: inner steps per second of the jitted outer step.

Usage:
  uv run python bench/meta_throughput.py [--repeats 5] [--parts all]

Prints JSON lines, one per measurement:

* ``part="throughput"``: truncated ES (antithetic, unroll 20) with 8 and 64
  pairs, HierarchicalLOpt and MLPLOpt, on an ~11k-parameter MLP signature
  (mlp 32x32x32 on 16x16 images, batch 64: 10,666 parameters) and on an
  8-dimensional quadratic (the quadratic family has power-of-two dimensions
  only; 8 is the closest to 10). ``inner_steps_per_s`` counts both antithetic
  members: ``2 * pairs * unroll * outer steps / wall time``, after
  compilation; the median over ``--repeats`` timed windows, with every
  window's value in ``samples``. ``compile_s`` is the first call (compile +
  one step).
* ``part="chunk_size"``: HierarchicalLOpt on the MLP signature with 8 and
  64 pairs, the optimizer's chunk size tuned to the instances vmapped per
  device (what meta-training does, ``learned_opt.for_vmapped_instances``) vs
  its single-instance default, both compiled in this process and alternated.
* ``part="straightforward"``: the same ES step with HierarchicalLOpt and
  with ``bench/straightforward.py`` (the same optimizer written the plain
  way: every input tiled per entry, all 18 outputs per entry, no chunks),
  8 pairs, timed windows alternated in this process; ``ratio`` is ours over
  the straightforward one. Issue 4's target (1,600/s on the MLP signature)
  is twice what it quotes for a straightforward implementation (~800/s).
* ``part="floor"``: what the learned optimizer costs inside meta-training.
  The same ES step (8 pairs) with HierarchicalLOpt, MLPLOpt,
  HierarchicalLOpt with an LSTM of 16 instead of 64, and SGD with a
  meta-learned learning rate (one meta-parameter: the cost of the task and
  the estimator alone), timed windows alternated in this process.
  ``optimizer_share`` is the fraction of an inner step's time spent in the
  learned optimizer: ``1 - rate / floor_rate``.
* ``part="design_cost"``: the ES step (8 pairs) with the arms of issue
  19's design ablation (``configs/ablation.py``): HierarchicalLOpt with the
  paper's step, with the shipped default's scale-aware step (the traced
  step adaptation), and the latter with a per-parameter MLP of width 8 and
  16; timed windows alternated in this process. ``cost_vs_paper`` is the
  paper arm's rate over this one's: the compute of one outer step relative
  to the paper's, which sets the ablation's equal-compute budgets.
* ``part="overhead"``: the whole outer step of ``train.run`` (estimate,
  clip, Adam, non-finite guard, metrics fetch) vs the estimator's
  ``estimate`` alone, on the cheapest signature (where overhead shows most).
* ``part="suite_compile"``: ``lopt meta-train`` on ``configs/small_cpu.py``
  (the default suite, cheap signatures) for one outer step: the wall time of
  the first outer step (compilation included) and of the whole command.
* ``part="cpu_layout"``: the same ES step (HierarchicalLOpt, 8 pairs, MLP
  signature and quadratic) in three layouts of this machine's cores: one
  process with one device using all cores, one process with one device per
  core (``mesh.split_host_cpu``, what ``lopt meta-train`` does on CPU), and
  one process per core joined by ``jax.distributed`` (gloo). Alternated
  ``--repeats`` times, each as fresh subprocesses; ratios to the first.

The throughput, chunk_size and overhead parts run in this process with the
CPU split as ``lopt meta-train`` splits it (``--cpu-devices``, default 0: one
device per core); each record gives its ``devices``.

The CPU of the machine these numbers come from is shared with other jobs, so
single numbers are noisy: compare medians and ratios measured in one run.
"""

import argparse
import functools
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNROLL = 20


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def _specs():
  from task_suite.families import mlp, quadratic

  return {
    "mlp_11k": mlp.MLPSpec(
      hidden=(32, 32, 32),
      image_size=16,
      batch_size=64,
      activation="relu",
      init_scale=1.0,
      dataset="mnist",
      data_seed=0,
    ),
    "quadratic_8": quadratic.QuadraticSpec(
      dim=8, seed=0, cond=10.0, noise_std=0.1, loss_scale=1.0, init_scale=1.0
    ),
  }


def build_step(
  lopt_name, task_name: str, num_pairs: int, tune_chunk_size: bool = True
):
  """The jitted outer step of train.run for one signature, and its inputs.

  ``lopt_name`` names a learned optimizer of the configs, or is one.
  """
  import jax

  import learned_opt
  from meta_train import config as config_lib
  from meta_train import estimators, train
  from meta_train import mesh as mesh_lib
  import task_suite

  lopt = (
    config_lib.lopt_class(lopt_name)()
    if isinstance(lopt_name, str)
    else lopt_name
  )
  spec = _specs()[task_name]
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_population(num_pairs, mesh)
  rep, sharded = mesh_lib.replicated(mesh), mesh_lib.task_sharded(mesh)
  tasks = mesh_lib.put(task_suite.stack_tasks([task_suite.get_task(spec)]), rep)
  cfg = estimators.EstimatorConfig(
    name="es",
    num_pairs=num_pairs,
    unroll_length=UNROLL,
    min_horizon=200,
    max_horizon=2000,
  )
  est = estimators.make_estimator(lopt, cfg, mesh.size, tune_chunk_size)
  outer_tx = learned_opt.baseline("adam", learning_rate=1e-3)
  key = mesh_lib.put(jax.random.key(0), rep)

  def init(key, tasks):
    theta = lopt.init(key)
    est_state = est.init(theta, tasks, key)
    zero = jax.numpy.zeros([], jax.numpy.int32)
    return train.OuterState(theta, outer_tx.init(theta), est_state, zero, zero)

  abstract = jax.eval_shape(init, key, tasks)
  est_sh = jax.tree.map(lambda x: sharded if x.ndim else rep, abstract[2])
  part = train.OuterState(rep, rep, est_sh, rep, rep)
  state = jax.jit(init, out_shardings=part)(key, tasks)
  step = jax.jit(
    functools.partial(train.group_step, est.estimate, outer_tx, 30.0),
    static_argnums=(3,),
    in_shardings=(rep, part, rep),
    out_shardings=(part, rep),
    donate_argnums=(1,),
  )
  return step, key, state, tasks, lopt.num_meta_params(), est


def time_window(step, key, state, tasks, num_pairs, num_steps):
  """``(inner steps/s, state)`` over ``num_steps`` outer steps."""
  import jax

  t0 = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(key, state, tasks, 0)
    # train.run fetches the metrics every step; so does the benchmark.
    jax.device_get(metrics["meta_loss"].addressable_data(0))
  wall = time.perf_counter() - t0
  return num_steps * 2 * num_pairs * UNROLL / wall, state


def measure(lopt_name, task_name, num_pairs, num_steps, repeats) -> dict:
  """Compile time and inner steps/s of the outer step (median of windows)."""
  import jax
  from jax.experimental import multihost_utils

  step, key, state, tasks, num_theta, _ = build_step(
    lopt_name, task_name, num_pairs
  )
  t0 = time.perf_counter()
  state, metrics = step(key, state, tasks, 0)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  samples = []
  for _ in range(repeats):
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("window")
    rate, state = time_window(step, key, state, tasks, num_pairs, num_steps)
    samples.append(rate)
  return {
    "lopt": lopt_name,
    "task": task_name,
    "pairs": num_pairs,
    "unroll": UNROLL,
    "num_meta_params": num_theta,
    "processes": jax.process_count(),
    "devices": jax.device_count(),
    "compile_s": round(compile_s, 2),
    "inner_steps_per_s": round(statistics.median(samples)),
    "samples": [round(s) for s in samples],
  }


def part_overhead(repeats: int) -> None:
  """Outer step (estimate + clip + Adam + guard + metrics) vs estimate alone."""
  import jax

  lopt_name, task_name, num_pairs = "hierarchical", "quadratic_8", 8
  num_steps = _steps_for(task_name, num_pairs)
  step, key, state, tasks, _, est = build_step(lopt_name, task_name, num_pairs)
  estimate = jax.jit(est.estimate, donate_argnums=(2,))
  copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)
  theta, est_state = copy(state[0]), copy(state[2])
  _, est_state, em = estimate(theta, tasks, est_state, key)
  state, m = step(key, state, tasks, 0)
  jax.block_until_ready((em, m))
  per_window = 2 * num_pairs * UNROLL * num_steps
  outer, alone = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(num_steps):
      state, m = step(key, state, tasks, 0)
      jax.device_get(m["meta_loss"])
    outer.append(per_window / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for _ in range(num_steps):
      _, est_state, em = estimate(theta, tasks, est_state, key)
      jax.device_get(em["meta_loss"])
    alone.append(per_window / (time.perf_counter() - t0))
  _emit(
    {
      "part": "overhead",
      "lopt": lopt_name,
      "task": task_name,
      "pairs": num_pairs,
      "outer_step_inner_steps_per_s": round(statistics.median(outer)),
      "estimate_only_inner_steps_per_s": round(statistics.median(alone)),
      "ratio": round(statistics.median(outer) / statistics.median(alone), 3),
    }
  )


def _steps_for(task_name: str, num_pairs: int) -> int:
  """Outer steps per timed window: about a second or more of work."""
  if task_name.startswith("quadratic"):
    return 40 if num_pairs <= 8 else 10
  return 8 if num_pairs <= 8 else 2


def part_throughput(repeats: int) -> None:
  for lopt_name in ("hierarchical", "mlp"):
    for task_name in ("mlp_11k", "quadratic_8"):
      for num_pairs in (8, 64):
        record = measure(
          lopt_name,
          task_name,
          num_pairs,
          _steps_for(task_name, num_pairs),
          repeats,
        )
        _emit({"part": "throughput", **record})


def alternated_rates(builds: dict, num_pairs: int, num_steps: int, repeats):
  """Inner steps/s of several outer steps, their timed windows alternated.

  Args:
    builds: name -> ``build_step(...)`` result; each step is run once
      (compiled) before timing.

  Returns:
    name -> the ``repeats`` windows' rates, so that load from other
    processes hits every variant alike.
  """
  import jax

  runs = {}
  for name, (step, key, state, tasks, _, _) in builds.items():
    state, metrics = step(key, state, tasks, 0)
    jax.block_until_ready(metrics)
    runs[name] = [step, key, state, tasks]
  samples = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      rate, run[2] = time_window(*run, num_pairs, num_steps)
      samples[name].append(rate)
  return samples


def alternated_medians(lopts: dict, task_name: str, num_pairs: int, repeats):
  """``(median rates, samples)`` of the ES step with each of ``lopts``."""
  builds = {
    name: build_step(lopt, task_name, num_pairs) for name, lopt in lopts.items()
  }
  samples = alternated_rates(
    builds, num_pairs, _steps_for(task_name, num_pairs), repeats
  )
  return {k: statistics.median(v) for k, v in samples.items()}, samples


def part_straightforward(repeats: int) -> None:
  """Ours vs the straightforward HierarchicalLOpt, windows alternated."""
  import jax
  import straightforward

  import learned_opt

  lopts = {
    "hierarchical": learned_opt.HierarchicalLOpt(),
    "straightforward": straightforward.StraightforwardHierarchicalLOpt(),
  }
  for task_name in ("mlp_11k", "quadratic_8"):
    num_pairs = 8
    median, samples = alternated_medians(lopts, task_name, num_pairs, repeats)
    _emit(
      {
        "part": "straightforward",
        "task": task_name,
        "pairs": num_pairs,
        "unroll": UNROLL,
        "devices": jax.device_count(),
        "inner_steps_per_s": round(median["hierarchical"]),
        "straightforward_inner_steps_per_s": round(median["straightforward"]),
        "ratio": round(median["hierarchical"] / median["straightforward"], 2),
        "samples": {k: [round(x) for x in v] for k, v in samples.items()},
      }
    )


def _learned_lr_sgd():
  """SGD whose log learning rate is the only meta-parameter."""
  import dataclasses
  from typing import ClassVar

  import jax.numpy as jnp
  import optax

  import learned_opt

  @dataclasses.dataclass(frozen=True)
  class LearnedLRSGD(learned_opt.LearnedOptimizer):
    architecture: ClassVar[str] = "bench_learned_lr_sgd"

    def init(self, key):
      del key
      return {"log_lr": jnp.log(jnp.asarray(1e-2, jnp.float32))}

    def optimizer(self, theta):
      return optax.with_extra_args_support(optax.sgd(jnp.exp(theta["log_lr"])))

  return LearnedLRSGD()


def part_floor(repeats: int) -> None:
  """The ES step with several optimizers, down to a learned-LR SGD."""
  import jax

  import learned_opt

  lopts = {
    "hierarchical": learned_opt.HierarchicalLOpt(),
    "hierarchical_lstm16": learned_opt.HierarchicalLOpt(lstm_hidden_size=16),
    "mlp": learned_opt.MLPLOpt(),
    "learned_lr_sgd": _learned_lr_sgd(),
  }
  for task_name in ("mlp_11k", "quadratic_8"):
    num_pairs = 8
    median, samples = alternated_medians(lopts, task_name, num_pairs, repeats)
    floor = median["learned_lr_sgd"]
    for name in lopts:
      _emit(
        {
          "part": "floor",
          "lopt": name,
          "task": task_name,
          "pairs": num_pairs,
          "unroll": UNROLL,
          "devices": jax.device_count(),
          "inner_steps_per_s": round(median[name]),
          "floor_inner_steps_per_s": round(floor),
          "optimizer_share": round(1.0 - median[name] / floor, 3),
          "samples": [round(x) for x in samples[name]],
        }
      )


def part_design_cost(repeats: int) -> None:
  """The cost of one ES step for each arm of the design ablation."""
  import jax

  from configs import scale_aware
  import learned_opt

  scale = dict(scale_aware.DEFAULT_STEP)
  lopts = {
    "paper": learned_opt.HierarchicalLOpt(),
    "scale": learned_opt.HierarchicalLOpt(**scale),
    "scale_width16": learned_opt.HierarchicalLOpt(mlp_hidden_size=16, **scale),
    "scale_width8": learned_opt.HierarchicalLOpt(mlp_hidden_size=8, **scale),
  }
  for task_name in ("mlp_11k", "quadratic_8"):
    num_pairs = 8
    median, samples = alternated_medians(lopts, task_name, num_pairs, repeats)
    for name in lopts:
      _emit(
        {
          "part": "design_cost",
          "lopt": name,
          "task": task_name,
          "pairs": num_pairs,
          "unroll": UNROLL,
          "devices": jax.device_count(),
          "inner_steps_per_s": round(median[name]),
          "cost_vs_paper": round(median["paper"] / median[name], 3),
          "samples": [round(x) for x in samples[name]],
        }
      )


def part_chunk_size(repeats: int) -> None:
  """Chunk size tuned to the vmapped instances vs the optimizer's default.

  Both outer steps are compiled in this process and their timed windows
  alternate, so load from other processes hits them alike.
  """
  import jax

  import learned_opt

  lopt_name, task_name = "hierarchical", "mlp_11k"
  lopt = learned_opt.HierarchicalLOpt()
  num_devices = jax.device_count()
  for num_pairs in (8, 64):
    per_device = 2 * num_pairs // num_devices
    tuned = learned_opt.for_vmapped_instances(lopt, per_device).chunk_size
    builds = {
      name: build_step(lopt_name, task_name, num_pairs, tune_chunk_size=tune)
      for name, tune in (("default", False), ("tuned", True))
    }
    samples = alternated_rates(
      builds, num_pairs, _steps_for(task_name, num_pairs), repeats
    )
    median = {k: statistics.median(v) for k, v in samples.items()}
    _emit(
      {
        "part": "chunk_size",
        "lopt": lopt_name,
        "task": task_name,
        "pairs": num_pairs,
        "devices": num_devices,
        "instances_per_device": per_device,
        "default_chunk": lopt.chunk_size,
        "tuned_chunk": tuned,
        "default_inner_steps_per_s": round(median["default"]),
        "tuned_inner_steps_per_s": round(median["tuned"]),
        "ratio_tuned_to_default": round(median["tuned"] / median["default"], 3),
        "samples": {k: [round(x) for x in v] for k, v in samples.items()},
      }
    )


def part_suite_compile() -> None:
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [
      sys.executable,
      "-m",
      "meta_train.cli.meta_train",
      "--config",
      str(ROOT / "configs" / "small_cpu.py"),
      "--workdir",
      workdir,
      "--config.outer.num_steps=1",
      "--config.outer.warmup_steps=0",
      "--config.eval.every=0",
      "--config.log.progress=false",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    total = time.perf_counter() - t0
    if proc.returncode:
      raise RuntimeError(proc.stderr[-3000:])
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
  _emit(
    {
      "part": "suite_compile",
      "config": "configs/small_cpu.py",
      "first_outer_step_s": round(first["time/step_s"], 2),
      "command_total_s": round(total, 2),
      "group": first["group"],
    }
  )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_workers(num: int, devices: int, args: list[str]) -> dict:
  """Runs ``num`` worker processes (one per core if num > 1).

  A single worker with ``devices > 1`` makes its CPU that many devices, one
  per core, as ``lopt meta-train`` does (``mesh.split_host_cpu``).
  """
  from meta_train import mesh as mesh_lib

  cores = mesh_lib.usable_cores()
  port = _free_port()
  procs = []
  for i in range(num):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    preexec = None
    if num > 1:
      mine = cores[i::num]
      env.update(
        JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
        JAX_NUM_PROCESSES=str(num),
        JAX_PROCESS_ID=str(i),
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
      )
      preexec = functools.partial(os.sched_setaffinity, 0, mine)
    else:
      env["LOPT_BENCH_CPU_DEVICES"] = str(devices)
    procs.append(
      subprocess.Popen(
        [sys.executable, __file__, "--worker", *args],
        env=env,
        preexec_fn=preexec,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  try:
    outs = [p.communicate(timeout=1800) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, (_, err) in zip(procs, outs):
    if p.returncode:
      raise RuntimeError(err[-3000:])
  return json.loads(outs[0][0].strip().splitlines()[-1])


def part_cpu_layout(repeats: int) -> None:
  """One device on all cores vs one device per core vs one process per core.

  Fresh subprocesses, alternated ``repeats`` times; ratios are to the
  one-device layout.
  """
  from meta_train import mesh as mesh_lib

  num_cores = len(mesh_lib.usable_cores())
  layouts = {
    "one_device_all_cores": (1, 1),
    "one_device_per_core": (1, num_cores),
    "one_process_per_core": (num_cores, 1),
  }
  for task_name in ("mlp_11k", "quadratic_8"):
    args = ["hierarchical", task_name, "8", str(_steps_for(task_name, 8))]
    samples = {name: [] for name in layouts}
    for _ in range(repeats):
      for name, (num, devices) in layouts.items():
        record = _run_workers(num, devices, [*args, "3"])
        samples[name].append(record["inner_steps_per_s"])
    median = {k: statistics.median(v) for k, v in samples.items()}
    base = median["one_device_all_cores"]
    _emit(
      {
        "part": "cpu_layout",
        "lopt": "hierarchical",
        "task": task_name,
        "pairs": 8,
        "cores": num_cores,
        **{k: round(v) for k, v in median.items()},
        **{f"ratio_{k}": round(v / base, 3) for k, v in median.items()},
        "samples": samples,
      }
    )


def _worker(args: list[str]) -> None:
  lopt_name, task_name, pairs, steps, repeats = args
  from meta_train import config as config_lib
  from meta_train import mesh as mesh_lib

  mesh_cfg = config_lib.MeshConfig(
    cpu_devices=int(os.environ.get("LOPT_BENCH_CPU_DEVICES", "1"))
  )
  mesh_lib.split_host_cpu(mesh_cfg, int(pairs))
  # Joins the processes when the JAX_* variables are set (as train.run does).
  mesh_lib.initialize_distributed(mesh_cfg)
  record = measure(lopt_name, task_name, int(pairs), int(steps), int(repeats))
  print(json.dumps(record), flush=True)


def main() -> None:
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    _worker(sys.argv[2:])
    return
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--parts",
    default="all",
    help="comma-separated: throughput, straightforward, floor, design_cost, "
    "chunk_size, overhead, suite_compile, cpu_layout (or all)",
  )
  parser.add_argument(
    "--cpu-devices",
    type=int,
    default=0,
    help="CPU devices of this process (0: one per core, as lopt meta-train)",
  )
  args = parser.parse_args()
  parts = (
    (
      "throughput",
      "straightforward",
      "floor",
      "design_cost",
      "chunk_size",
      "overhead",
      "suite_compile",
      "cpu_layout",
    )
    if args.parts == "all"
    else args.parts.split(",")
  )
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from meta_train import config as config_lib
  from meta_train import mesh as mesh_lib

  # Every population here (8 and 64 pairs) divides over 1, 2 or 4 devices.
  mesh_lib.split_host_cpu(
    config_lib.MeshConfig(cpu_devices=args.cpu_devices), 64
  )
  if "throughput" in parts:
    part_throughput(args.repeats)
  if "straightforward" in parts:
    part_straightforward(args.repeats)
  if "floor" in parts:
    part_floor(args.repeats)
  if "design_cost" in parts:
    part_design_cost(args.repeats)
  if "chunk_size" in parts:
    part_chunk_size(args.repeats)
  if "overhead" in parts:
    part_overhead(args.repeats)
  if "suite_compile" in parts:
    part_suite_compile()
  if "cpu_layout" in parts:
    part_cpu_layout(args.repeats)


if __name__ == "__main__":
  main()
