"""The outer loop of meta-training: ``run(config, workdir)``.

Read top to bottom: configuration, the learned optimizer, the train tasks
(grouped by static signature), one estimator per group, the outer optimizer,
the mesh, the initial or restored state, then the loop. Each outer step
picks a signature group from the step number, estimates the meta-gradient
over that group's population (whose inner runs carry over between the
group's turns), clips it, and applies the outer optimizer, all in one jitted
function with explicit shardings. A non-finite meta-gradient or update never
reaches theta: the step is skipped and counted.

Every PRNG stream is ``fold_in(root_key, step)`` (or a fixed index), and all
state that evolves is checkpointed, so a run killed at any point and resumed
ends with exactly the theta of an uninterrupted run.

Example:
  >>> cd = configs.tiny.get_config()
  >>> result = train.run(cd, "/tmp/run")   # resumes if /tmp/run has a run
  >>> result.step, result.theta
"""

import functools
import json
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
from learned_opt import warm_start
from meta_train import checkpointing, estimators, outer
from meta_train import config as config_lib
from meta_train import mesh as mesh_lib
from meta_train import metrics as metrics_lib
from meta_train.evaluation import resolve, rollout
import task_suite

# Fixed stream indices under the root key (the per-step streams use the step).
_THETA, _EST_INIT, _STEPS, _GROUPS, _EVAL = range(5)
# Fields whose change makes a workdir's checkpoints meaningless.
_RUN_IDENTITY = ("seed", "lopt", "suite", "estimator")


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


# ------------------------------------------------------------ components


def make_lopt(cfg: config_lib.LOptConfig) -> learned_opt.LearnedOptimizer:
  """The learned optimizer named by the config."""
  return config_lib.lopt_class(cfg.name)(**cfg.kwargs)


def initial_theta_fn(lopt: learned_opt.LearnedOptimizer, init_from: str):
  """``key -> theta``: ``lopt.init``, or a warm start from ``init_from``.

  The source is loaded (and checked against ``lopt``) here, before any
  compute, so a wrong ``config.lopt.init_from`` fails early.
  """
  if not init_from:
    return lopt.init
  try:
    found = resolve.resolve(init_from, learned_only=True)
    source, source_theta = found.lopt, found.theta
    # Checks compatibility now, on abstract values.
    jax.eval_shape(
      lambda k: warm_start.warm_start_theta(lopt, k, source, source_theta),
      jax.random.key(0),
    )
  except (FileNotFoundError, ValueError) as e:
    raise config_lib.ConfigError(f"config.lopt.init_from: {e}") from None
  return lambda key: warm_start.warm_start_theta(
    lopt, key, source, source_theta
  )


def make_outer_optimizer(
  cfg: config_lib.OuterConfig,
) -> optax.GradientTransformationExtraArgs:
  """The outer optimizer: a baseline by name, or a trained learned one."""
  if cfg.optimizer == "learned":
    lopt, theta, _ = learned_opt.load(cfg.learned_path)
    return lopt.optimizer(theta)
  schedule = {"schedule": "constant", "warmup_steps": cfg.warmup_steps}
  if cfg.schedule == "cosine":
    schedule.update(
      schedule="cosine",
      decay_steps=max(cfg.num_steps, cfg.warmup_steps + 1),
      final_lr_scale=cfg.final_lr_fraction,
    )
  return learned_opt.baseline(
    cfg.optimizer, learning_rate=cfg.learning_rate, **schedule, **cfg.hparams
  )


def sample_train_groups(cfg: config_lib.SuiteConfig) -> list[list[Any]]:
  """Train specs grouped by signature, filtered and capped by the config."""
  specs = task_suite.sample_suite(
    cfg.num_specs, seed=cfg.seed, split="train", weights=_weights(cfg)
  )
  groups = [
    g
    for g in task_suite.group_by_signature(specs).values()
    if not cfg.max_params or task_suite.num_params(g[0]) <= cfg.max_params
  ]
  if not groups:
    raise ValueError(
      f"no train signature has <= config.suite.max_params={cfg.max_params} "
      "parameters; raise it or config.suite.num_specs."
    )
  groups.sort(key=len, reverse=True)  # stable: ties keep signature order
  return groups[: cfg.max_groups or None]


def sample_test_specs(cfg: config_lib.SuiteConfig, num: int) -> list[Any]:
  """Held-out (test-split) specs passing the same filters as training.

  Raises:
    ValueError: if no test-split spec passes them.
  """
  for pool in (20 * num, 4 * num, num):  # small families run out of specs
    try:
      specs = task_suite.sample_suite(
        pool, seed=cfg.seed, split="test", weights=_weights(cfg)
      )
      break
    except ValueError:
      specs = []
  if cfg.max_params:
    specs = [s for s in specs if task_suite.num_params(s) <= cfg.max_params]
  if not specs:
    raise ValueError(
      "no test-split task passes config.suite's filters (families, "
      f"max_params={cfg.max_params}) for evaluation; relax them or set "
      "config.eval.every=0."
    )
  return specs[:num]


def _weights(cfg: config_lib.SuiteConfig) -> dict[str, float] | None:
  # Listed families are drawn with equal weights; none listed: the default mix.
  return {f: 1.0 for f in cfg.families} if cfg.families else None


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


def _check_workdir(workdir: pathlib.Path, cfg: config_lib.Config) -> None:
  """Refuses to resume a workdir that holds a different run."""
  path = workdir / "config.json"
  current = config_lib.to_dict(cfg)
  if path.exists():
    saved = json.loads(path.read_text())
    try:  # Fields added since the run started take their defaults.
      saved = config_lib.to_dict(config_lib.from_config(saved))
    except config_lib.ConfigError:
      pass  # compared as saved; a difference is reported below
    changed = [k for k in _RUN_IDENTITY if saved.get(k) != current[k]]
    if changed:
      raise config_lib.ConfigError(
        f"{workdir} holds a run with a different config."
        f"{', config.'.join(changed)} (saved: "
        f"{ {k: saved.get(k) for k in changed} }); resume it with the same "
        "values or use a new --workdir."
      )
  if mesh_lib.is_main_process():
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(current, indent=2))
    tmp.replace(path)


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
    metadata = {"meta_train_step": step, "config": config_lib.to_dict(cfg)}
    checkpointing.export_theta(
      workdir / "theta", lopt, mesh_lib.to_host(state.theta), metadata
    )


def run(
  config: Any,
  workdir: str | pathlib.Path,
  *,
  lopt: learned_opt.LearnedOptimizer | None = None,
  outer_tx: optax.GradientTransformationExtraArgs | None = None,
) -> TrainResult:
  """Meta-trains theta as configured; resumes if ``workdir`` has a run.

  Args:
    config: an ``ml_collections.ConfigDict`` (or ``config.Config``).
    workdir: the run's directory: checkpoints, metrics, exported theta.
    lopt: optional learned optimizer to meta-train instead of
      ``config.lopt``'s (any ``LearnedOptimizer``).
    outer_tx: optional outer optimizer overriding ``config.outer``'s (e.g.
      a trained learned optimizer, for self-training).

  Returns:
    The learned optimizer, the final theta (numpy) and the final step.

  Raises:
    config.ConfigError: on a bad config, before any compute.
  """
  # --- Configuration: everything that can be wrong fails here.
  cfg = config_lib.from_config(config)
  workdir = pathlib.Path(workdir).absolute()
  jax.config.update("jax_threefry_partitionable", True)
  mesh_lib.initialize_distributed(cfg.mesh)
  _check_workdir(workdir, cfg)
  mesh = mesh_lib.make_mesh(cfg.mesh.num_devices)
  mesh_lib.check_population(cfg.estimator.num_pairs, mesh)
  rep, sharded = mesh_lib.replicated(mesh), mesh_lib.task_sharded(mesh)

  # --- The learned optimizer, the tasks and their estimators.
  lopt = lopt or make_lopt(cfg.lopt)
  init_theta = initial_theta_fn(lopt, cfg.lopt.init_from)
  groups = sample_train_groups(cfg.suite)
  if cfg.eval.every:
    test_specs = sample_test_specs(cfg.suite, cfg.eval.num_eval_tasks)
  tasks = [
    mesh_lib.put(
      task_suite.stack_tasks([task_suite.get_task(s) for s in g]), rep
    )
    for g in groups
  ]
  probs = np.array([len(g) for g in groups], np.float64)
  estimator = estimators.make_estimator(lopt, cfg.estimator, mesh.size)
  if outer_tx is None:
    outer_tx = make_outer_optimizer(cfg.outer)

  # --- Initial state: restored from the latest checkpoint, or fresh.
  root = jax.random.key(cfg.seed)
  root_global = mesh_lib.put(root, rep)
  est_inits = [
    functools.partial(
      lambda g, th, t, k: estimator.init(
        th, t, jax.random.fold_in(jax.random.fold_in(k, _EST_INIT), g)
      ),
      g,
    )
    for g in range(len(groups))
  ]

  def init_fn(key, all_tasks):
    theta = init_theta(jax.random.fold_in(key, _THETA))
    return OuterState(
      theta=theta,
      opt_state=outer_tx.init(theta),
      est_states=tuple(f(theta, t, key) for f, t in zip(est_inits, all_tasks)),
      step=jnp.zeros([], jnp.int32),
      num_skipped=jnp.zeros([], jnp.int32),
    )

  abstract = jax.eval_shape(init_fn, root, tasks)
  shardings = OuterState(
    theta=rep,
    opt_state=rep,
    est_states=jax.tree.map(
      lambda x: sharded if x.ndim else rep, abstract.est_states
    ),
    step=rep,
    num_skipped=rep,
  )
  manager = checkpointing.make_manager(
    workdir / "checkpoints", cfg.checkpoint.keep
  )
  if checkpointing.latest_step(manager) is not None:
    target = jax.tree.map(
      lambda s, sub: jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sub
      ),
      shardings,
      abstract,
    )
    state, _ = checkpointing.restore(manager, target)
  else:
    state = jax.jit(init_fn, out_shardings=shardings)(root_global, tasks)
  step = int(mesh_lib.to_host(state.step))

  # --- The jitted outer step, one compilation per signature group.
  def make_step(g):
    part = shardings._replace(est_states=shardings.est_states[g])
    fn = functools.partial(
      group_step, estimator.estimate, outer_tx, cfg.outer.clip_norm
    )
    return jax.jit(
      lambda key, s, t: fn(key, s, t, g),
      in_shardings=(rep, part, rep),
      out_shardings=(part, rep),
      donate_argnums=(1,),
    )

  step_fns = [make_step(g) for g in range(len(groups))]
  pick_group = jax.jit(
    lambda s: jax.random.choice(
      jax.random.fold_in(jax.random.fold_in(root, _GROUPS), s),
      len(groups),
      p=jnp.asarray(probs / probs.sum(), jnp.float32),
    )
  )
  eval_key = jax.random.fold_in(root, _EVAL)

  # --- The loop: log, evaluate, checkpoint.
  main = mesh_lib.is_main_process()
  writer = metrics_lib.MetricWriter(
    workdir, step, tensorboard=cfg.log.tensorboard, active=main
  )
  if cfg.eval.every and main:
    evaluator = rollout.make_heldout_evaluator(
      lopt, test_specs, cfg.eval.num_steps
    )

  def evaluate(step, theta):
    theta = mesh_lib.to_host(theta)  # once, for the evaluation and export
    metrics = evaluator(theta, eval_key)
    writer.write(step, metrics)
    if cfg.eval.keep_thetas:
      checkpointing.export_theta(
        workdir / "eval_thetas" / f"step_{step:07d}",
        lopt,
        theta,
        {"meta_train_step": step, "eval": metrics},
      )

  if step == 0 and cfg.eval.every and main:
    evaluate(0, state.theta)
  bar = tqdm.tqdm(
    total=cfg.outer.num_steps,
    initial=step,
    disable=not (cfg.log.progress and main),
    desc="meta-train",
    dynamic_ncols=True,
  )
  window: list[dict[str, float]] = []
  saved_step = step
  interrupted = False
  try:
    while step < cfg.outer.num_steps:
      g = int(pick_group(step))
      t0 = time.perf_counter()
      part = state._replace(est_states=state.est_states[g])
      part, m = step_fns[g](root_global, part, tasks[g])
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
          step + 1,
          g,
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
        means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
        means["num_skipped"] = int(mesh_lib.to_host(state.num_skipped))
        means["group"] = g
        writer.write(step, means)
        window = []
      if cfg.eval.every and (step % cfg.eval.every == 0 or last) and main:
        evaluate(step, state.theta)
      preempted = _reached_preemption(step)
      if step % cfg.checkpoint.every == 0 or preempted:
        _save(manager, state, cfg, lopt, workdir, step)
        saved_step = step
      if preempted:
        raise KeyboardInterrupt
  except KeyboardInterrupt:
    interrupted = True
    raise
  finally:
    bar.close()
    alive = not any(
      x.is_deleted() for x in jax.tree.leaves(state) if isinstance(x, jax.Array)
    )
    # Processes interrupted otherwise than by a preemption notice stop at
    # different points, and a multi-process save would wait for the others
    # forever: they keep their last checkpoint instead.
    coordinated = jax.process_count() == 1 or not interrupted
    if step != saved_step and alive and coordinated:
      _save(manager, state, cfg, lopt, workdir, step)
    writer.close()
    manager.close()
  return TrainResult(lopt, mesh_lib.to_host(state.theta), step, state)
