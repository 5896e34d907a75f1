"""The outer loop of meta-training: ``run(config, workdir)``.

``run`` reads top to bottom as a list of setup calls that return plain
values (big_vision style), then ``_loop``: the config (parsed once), the
devices (``setup_devices``), the learned optimizer, its train tasks grouped
by static signature and the held-out ones (``components``), the estimator
and the outer optimizer; then the state, restored from the latest
checkpoint or fresh (``restore_or_init``), and one jitted outer step per
signature group (``make_program``). Each outer step picks a group from the
step number, estimates the meta-gradient over that group's population
(whose inner runs carry over between the group's turns) and applies
``outer.make_outer_step``, all in one jitted function with explicit
shardings. A non-finite meta-gradient or update never reaches theta: the
step is skipped and counted.

Every PRNG stream is ``fold_in(root_key, step)`` (or a fixed index), and all
state that evolves is checkpointed, so a run killed at any point and resumed
ends with exactly the theta of an uninterrupted run.

Example:
  >>> cd = configs.tiny.get_config()
  >>> result = train.run(cd, "/tmp/run")   # resumes if /tmp/run has a run
  >>> result.step, result.theta
"""

import contextlib
import functools
import logging
import pathlib
import time
from typing import Any, NamedTuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import learned_opt
from meta_train import (
  checkpointing,
  components,
  leg_state,
  map_budget,
  outer,
)
from meta_train import config as config_lib
from meta_train import mesh as mesh_lib
from meta_train import metrics as metrics_lib
from meta_train import workdir as workdir_lib
from meta_train.evaluation import rollout

# Fixed stream indices under the root key (the per-step streams use the step).
_THETA, _EST_INIT, _STEPS, _GROUPS, _EVAL = range(5)


# Fields whose change makes a workdir's checkpoints meaningless.
class OuterState(NamedTuple):
  """Everything that evolves during meta-training (all of it checkpointed)."""

  theta: Any  # replicated
  opt_state: Any  # replicated
  est_states: tuple  # one per group; leaves [population, ...], P("tasks")
  step: jax.Array  # [] int32, outer steps done
  num_skipped: jax.Array  # [] int32, steps skipped for non-finite values


class TrainResult(NamedTuple):
  """What ``run`` returns."""

  lopt: learned_opt.LearnedOptimizer
  theta: Any  # the final theta, numpy
  step: int  # the final outer step
  state: OuterState  # the final state, on the mesh


def group_step(estimate, outer_tx, clip_norm, root_key, state, tasks, group):
  """One outer step on one group (pure; jitted by ``run``).

  Args:
    estimate: the estimator's ``estimate``.
    outer_tx: the outer optimizer.
    clip_norm: global-norm clip (0: none).
    root_key: the run's root key.
    state: the ``OuterState`` with only this group's estimator state in
      ``est_states``.
    tasks: the group's stacked task.
    group: the group index (for the key stream).

  Returns:
    ``(state, metrics)``.
  """
  key = jax.random.fold_in(jax.random.fold_in(root_key, _STEPS), state.step)
  step = outer.make_outer_step(
    lambda th, s, k: estimate(th, tasks, s, k), outer_tx, clip_norm
  )
  theta, opt_state, est_state, metrics = step(
    state.theta,
    state.opt_state,
    state.est_states,
    jax.random.fold_in(key, group),
  )
  state = OuterState(
    theta,
    opt_state,
    est_state,
    state.step + 1,
    state.num_skipped + metrics["skipped"].astype(jnp.int32),
  )
  return state, metrics


def _reached_preemption(step: int) -> bool:
  """Whether every process has reached the step at which to save and stop.

  With several processes, jax.distributed turns a SIGTERM (preemption, or
  Ctrl-C of ``--num_local_processes``) into an agreed step, so that all of
  them save the same state and then stop.
  """
  if jax.process_count() == 1:
    return False
  return multihost_utils.reached_preemption_sync_point(step)


def _save(manager, state: OuterState, cfg, lopt, workdir, step) -> None:
  """Checkpoints the state (all processes) and exports theta (process 0)."""
  checkpointing.save(manager, step, state, config_lib.to_dict(cfg))
  if mesh_lib.is_main_process():
    # config.json comes with the first checkpoint, never before.
    workdir_lib.write_config(workdir, cfg)
    carried = {f: mesh_lib.to_host(getattr(state, f)) for f in leg_state.FIELDS}
    leg_state.save(workdir / leg_state.FILENAME, state._replace(**carried))
    metadata = {"meta_train_step": step, "config": config_lib.to_dict(cfg)}
    checkpointing.export_theta(
      workdir / "theta", lopt, carried["theta"], metadata
    )


class Program(NamedTuple):
  """The jitted pieces of a run and what they close over."""

  step_fns: list  # per group: (root, state of the group, tasks) -> ...
  pick_group: Any  # step -> group index
  root: jax.Array  # the root key, replicated on the mesh


def make_init_fn(init_theta, estimator, outer_tx, num_groups: int):
  """``(root, tasks) -> OuterState``: a fresh state (pure; jitted later)."""

  def init_fn(key, all_tasks):
    theta = init_theta(jax.random.fold_in(key, _THETA))
    k_est = jax.random.fold_in(key, _EST_INIT)
    return OuterState(
      theta=theta,
      opt_state=outer_tx.init(theta),
      est_states=tuple(
        estimator.init(theta, t, jax.random.fold_in(k_est, g))
        for g, t in zip(range(num_groups), all_tasks)
      ),
      step=jnp.zeros([], jnp.int32),
      num_skipped=jnp.zeros([], jnp.int32),
    )

  return init_fn


def state_shardings(abstract: OuterState, mesh) -> OuterState:
  """Theta and counters replicated; estimator states split on ``tasks``."""
  rep, sharded = mesh_lib.replicated(mesh), mesh_lib.task_sharded(mesh)
  return OuterState(
    theta=rep,
    opt_state=rep,
    est_states=jax.tree.map(
      lambda x: sharded if x.ndim else rep, abstract.est_states
    ),
    step=rep,
    num_skipped=rep,
  )


def restore_or_init(
  manager, init_fn, root, tasks, shardings, leg_path=None
) -> OuterState:
  """The latest checkpoint's state, or a fresh one, sharded on the mesh.

  Without a checkpoint but with a leg state at ``leg_path``
  (``leg_state``), the fresh state takes its theta, outer optimizer state
  and step: a campaign's next leg.
  """
  abstract = jax.eval_shape(init_fn, root, tasks)
  if checkpointing.latest_step(manager) is not None:
    target = jax.tree.map(
      lambda s, sub: jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sub
      ),
      shardings,
      abstract,
    )
    return checkpointing.restore_latest(manager, target)[0]
  root_global = mesh_lib.put(root, shardings.step)  # replicated
  fresh = jax.jit(init_fn, out_shardings=shardings)(root_global, tasks)
  if leg_path is None or not pathlib.Path(leg_path).exists():
    return fresh
  # Shapes and dtypes are all load_into reads: no copy of the fresh state
  # (its estimator states are tens of MB) to the host.
  carried = leg_state.load_into(leg_path, fresh)
  logging.warning("starting from the leg state %s (fresh inner runs)", leg_path)
  return fresh._replace(
    **{f: mesh_lib.put(v, shardings.theta) for f, v in carried.items()}
  )


def make_program(estimator, outer_tx, clip_norm, shardings, groups, root):
  """One jitted outer step per signature group, and the group picker."""
  rep = shardings.step  # replicated

  def make_step(g):
    part = shardings._replace(est_states=shardings.est_states[g])
    fn = functools.partial(group_step, estimator.estimate, outer_tx, clip_norm)
    return jax.jit(
      lambda key, s, t: fn(key, s, t, g),
      in_shardings=(rep, part, rep),
      out_shardings=(part, rep),
      donate_argnums=(1,),
    )

  probs = np.array([len(g) for g in groups], np.float64)
  pick_group = jax.jit(
    lambda s: jax.random.choice(
      jax.random.fold_in(jax.random.fold_in(root, _GROUPS), s),
      len(groups),
      p=jnp.asarray(probs / probs.sum(), jnp.float32),
    )
  )
  return Program(
    [make_step(g) for g in range(len(groups))],
    pick_group,
    mesh_lib.put(root, rep),
  )


def advance(program: Program, state: OuterState, tasks, g: int):
  """One outer step on group ``g``: ``(state, host metrics)``."""
  t0 = time.perf_counter()
  part = state._replace(est_states=state.est_states[g])
  part, m = program.step_fns[g](program.root, part, tasks[g])
  est_states = list(state.est_states)
  est_states[g] = part.est_states
  state = part._replace(est_states=tuple(est_states))
  m = {k: float(v) for k, v in mesh_lib.to_host(m).items()}
  m["time/step_s"] = time.perf_counter() - t0
  m["inner_steps_per_s"] = m["inner_steps"] / m["time/step_s"]
  m["group"] = g
  if m["skipped"]:
    logging.warning(
      "outer step %d skipped: non-finite meta-gradient, meta-loss or "
      "update (group %d); theta unchanged",
      int(mesh_lib.to_host(state.step)),
      g,
    )
  return state, m


def make_eval_hook(cfg: config_lib.Config, lopt, specs, workdir, writer):
  """``(step, theta) -> None``: held-out evaluation, logged and exported.

  None when this process does not evaluate (``eval.every=0``, or not the
  main process).
  """
  if not (cfg.eval.every and mesh_lib.is_main_process()):
    return None
  evaluator = rollout.make_heldout_evaluator(lopt, specs, cfg.eval.num_steps)
  key = jax.random.fold_in(jax.random.key(cfg.seed), _EVAL)

  def evaluate(step, theta):
    theta = mesh_lib.to_host(theta)  # once, for the evaluation and export
    metrics = evaluator(theta, key)
    writer.write(step, metrics)
    if cfg.eval.keep_thetas:
      checkpointing.export_theta(
        workdir / "eval_thetas" / f"step_{step:07d}",
        lopt,
        theta,
        {"meta_train_step": step, "eval": metrics},
      )

  return evaluate


def run(
  config: Any,
  workdir: str | pathlib.Path,
  *,
  lopt: learned_opt.LearnedOptimizer | None = None,
  outer_tx: optax.GradientTransformationExtraArgs | None = None,
  lock_workdir: bool = True,
  budget: map_budget.MapBudget | None = None,
) -> TrainResult:
  """Meta-trains theta as configured; resumes if ``workdir`` has a run.

  All that can be wrong (config, optimizer, init_from, suite, devices) is
  checked before anything is written; ``config.json`` comes with the first
  checkpoint; the run then holds the workdir's lock (``workdir.lock``).
  Needs ``REQUIRED_JAX_CONFIG`` (JAX's defaults) and changes no process-wide
  setting, except that a multi-process run joins ``jax.distributed``
  (setting ``jax_cpu_collectives_implementation`` first, as that needs).
  For the command's CPU layout, call ``meta_train.use_cpu_layout`` first.

  Args:
    config: an ``ml_collections.ConfigDict`` (or ``config.Config``).
    workdir: the run's directory: checkpoints, metrics, exported theta.
    lopt: a ``LearnedOptimizer`` to meta-train instead of config.lopt's.
    outer_tx: an outer optimizer instead of config.outer's (self-training).
    lock_workdir: False when a launcher holds the workdir's lock.
    budget: the memory-map headroom to check before each compile; None:
      this process's (``map_budget.MapBudget()``). Multi-process runs
      never check (one process stopping alone would leave the others
      waiting in their next collective).

  Returns:
    A ``TrainResult``: the optimizer, the final theta (numpy) and step.

  Raises:
    config.ConfigError, workdir.WorkdirLockedError, RuntimeError (a
    setting of ``REQUIRED_JAX_CONFIG`` is off), or
    map_budget.MapLimitError (checkpointed; the next compile could exhaust
    the process's memory maps).
  """
  # --- Configuration, devices, tasks: all that can be wrong fails here.
  check_jax_config()
  cfg = config_lib.from_config(config)
  workdir = pathlib.Path(workdir).absolute()
  mesh = setup_devices(cfg)
  lopt = lopt or components.make_lopt(cfg.lopt)
  init_theta = components.initial_theta_fn(lopt, cfg.lopt.init_from)
  groups = components.sample_train_groups(cfg.suite)
  test_specs = []
  if cfg.eval.every:
    test_specs = components.sample_test_specs(
      cfg.suite, cfg.eval.num_eval_tasks
    )
  tasks = components.stack_groups(groups, mesh_lib.replicated(mesh))
  estimator = components.make_estimator(lopt, cfg, mesh.size)
  outer_tx = components.freeze_untrainable(
    outer_tx or components.make_outer_optimizer(cfg.outer),
    lopt,
    cfg.lopt.trainable,
  )

  main = mesh_lib.is_main_process()
  with contextlib.ExitStack() as stack:
    # --- Only now the workdir: its lock, and the run it holds.
    if lock_workdir and main:
      stack.enter_context(workdir_lib.lock(workdir))
    manager = checkpointing.make_manager(
      workdir / "checkpoints", cfg.checkpoint.keep
    )
    stack.callback(manager.close)
    leg = workdir / leg_state.FILENAME  # a campaign's small state
    has_state = checkpointing.latest_step(manager) is not None or leg.exists()
    workdir_lib.check_same_run(has_state, workdir, cfg)

    # --- The state (restored or fresh) and the jitted outer steps.
    root = jax.random.key(cfg.seed)
    init_fn = make_init_fn(init_theta, estimator, outer_tx, len(groups))
    shardings = state_shardings(jax.eval_shape(init_fn, root, tasks), mesh)
    state = restore_or_init(manager, init_fn, root, tasks, shardings, leg)
    clip = cfg.outer.clip_norm
    program = make_program(estimator, outer_tx, clip, shardings, groups, root)
    step = int(mesh_lib.to_host(state.step))
    writer = metrics_lib.MetricWriter(
      workdir, step, tensorboard=cfg.log.tensorboard, active=main
    )
    stack.callback(writer.close)
    evaluate = make_eval_hook(cfg, lopt, test_specs, workdir, writer)

    # --- The loop: log, evaluate, checkpoint.
    save = lambda st, n: _save(manager, st, cfg, lopt, workdir, n)
    if jax.process_count() > 1:
      budget = None
    elif budget is None:
      budget = map_budget.MapBudget()
    state, step = _loop(
      cfg, program, state, tasks, writer, evaluate, save, budget
    )
  return TrainResult(lopt, mesh_lib.to_host(state.theta), step, state)


def _loop(cfg, program, state, tasks, writer, evaluate, save, budget):
  """Outer steps from ``state`` to ``cfg.outer.num_steps``.

  Logs every ``log.every`` steps, evaluates (``evaluate``, None: never)
  every ``eval.every``, checkpoints (``save(state, step)``) every
  ``checkpoint.every`` and, when it stops early, on its way out. Before
  each first use of a program (a group's outer step, the evaluation) it
  asks ``budget`` (a ``map_budget.MapBudget``; None: never) whether its
  compile fits in the process's memory maps.

  Returns:
    ``(state, step)`` at the end.
  """
  step = int(mesh_lib.to_host(state.step))
  main = mesh_lib.is_main_process()
  compiled = set()  # the programs this process has run: no compile left

  def first_use(kind, what, fn, *args):
    if budget is None or (kind, what) in compiled:
      return fn(*args)
    before = budget.check(kind, what)
    out = fn(*args)
    budget.measured(kind, before)
    compiled.add((kind, what))
    return out

  evaluation = ("evaluation", "the in-run evaluation")
  if step == 0 and evaluate:
    first_use(*evaluation, evaluate, 0, state.theta)
  bar = tqdm.tqdm(
    total=cfg.outer.num_steps,
    initial=step,
    disable=not (cfg.log.progress and main),
    desc="meta-train",
    dynamic_ncols=True,
  )
  window, saved_step, interrupted = [], step, False
  try:
    while step < cfg.outer.num_steps:
      g = int(program.pick_group(step))
      what = f"the outer step of signature group {g}"
      state, m = first_use(
        "outer step", what, advance, program, state, tasks, g
      )
      window.append(m)
      step += 1
      bar.update(1)
      bar.set_postfix(
        meta_loss=f"{m['meta_loss']:.4g}",
        inner_steps_s=f"{m['inner_steps_per_s']:.0f}",
      )
      last = step == cfg.outer.num_steps
      if step % cfg.log.every == 0 or last:
        writer.write(step, _window_means(window, state, g))
        window = []
      if evaluate and (step % cfg.eval.every == 0 or last):
        first_use(*evaluation, evaluate, step, state.theta)
      preempted = _reached_preemption(step)
      if step % cfg.checkpoint.every == 0 or preempted:
        save(state, step)
        saved_step = step
      if preempted:
        raise KeyboardInterrupt
  except KeyboardInterrupt:
    interrupted = True
    raise
  finally:
    bar.close()
    # Processes interrupted otherwise than by a preemption notice stop at
    # different points, and a multi-process save would wait for the others
    # forever: they keep their last checkpoint instead.
    coordinated = jax.process_count() == 1 or not interrupted
    if step != saved_step and _alive(state) and coordinated:
      save(state, step)
  return state, step


# Process-wide JAX settings ``run`` needs: partitionable threefry makes the
# random draws of a sharded population independent of the device count, so
# a run resumed on another mesh (or run by the CLI or from Python) draws
# the same numbers. The CLI sets them at its entry; ``run`` only checks.
REQUIRED_JAX_CONFIG = {"jax_threefry_partitionable": True}


def check_jax_config() -> None:
  """Raises unless the process-wide ``REQUIRED_JAX_CONFIG`` holds.

  Raises:
    RuntimeError: naming the setting and the call that fixes it.
  """
  for name, value in REQUIRED_JAX_CONFIG.items():
    if getattr(jax.config, name) != value:
      raise RuntimeError(
        f"meta-training needs the JAX setting {name}={value} (JAX's "
        f"default), but this process has {getattr(jax.config, name)}. Call "
        f"jax.config.update({name!r}, {value}) before train.run; the lopt "
        "command sets it itself."
      )


def setup_devices(cfg: config_lib.Config):
  """Joins the processes (if configured) and makes the mesh."""
  mesh_lib.initialize_distributed(cfg.mesh)
  mesh = mesh_lib.make_mesh(cfg.mesh.num_devices)
  mesh_lib.check_population(cfg.estimator.num_pairs, mesh)
  return mesh


def _window_means(window: list[dict], state: OuterState, g: int) -> dict:
  """Means of the metrics since the last write, with the run's counters."""
  means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
  means["num_skipped"] = int(mesh_lib.to_host(state.num_skipped))
  means["group"] = g
  return means


def _alive(state: OuterState) -> bool:
  """Whether no array of ``state`` was donated away (an interrupted step)."""
  return not any(
    x.is_deleted() for x in jax.tree.leaves(state) if isinstance(x, jax.Array)
  )
