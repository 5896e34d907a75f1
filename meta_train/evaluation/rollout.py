"""Trains a task with any optimizer for a fixed number of steps, vectorized.

One run trains a task from ``task.init(key)`` with an
``optax.GradientTransformationExtraArgs`` for ``horizon_multiple * num_steps``
steps inside one jitted ``lax.scan`` over checkpoints, each an inner scan of
``valid_every`` steps followed by an evaluation of the parameters on fresh
valid batches and on the run's fixed train and test batches (the same at
every checkpoint, so the final losses at T and 2T differ only by what the
parameters did in between). Every step passes the train-batch loss as
``value``; the step after a checkpoint also passes the checkpoint's
validation loss as ``valid_value`` and the other steps pass NaN ("no
validation loss"), which learned optimizers treat as absent and hand-designed
ones ignore. The final losses at T, 2T, ... are the checkpoints there.

Optimizers are built *inside* the traced function by a hashable factory from
a pytree of hyperparameters, so a learning-rate grid is a ``vmap`` over traced
learning rates and a learned optimizer's ``theta`` is a jit argument, not a
compile-time constant. Several optimizers ("groups": the candidate, Adam's
grid, SGD-momentum's grid) run in one program: each step computes the
gradients of all runs with one vmapped ``task.value_and_grad`` and then
applies each group's vmapped update, so the task, whose code dominates the
compile time, is traced once. The task is a jit argument, so every task of
one static signature reuses that compilation.

Nothing here guards against divergence: a run that blows up records NaN/inf
losses, and the report (``evaluation.report``) counts them as losses.

Example:
  >>> config = rollout.RolloutConfig(num_steps=100)
  >>> keys = rollout.seed_keys(jax.random.key(0), num_seeds=2)
  >>> learned, adam = rollout.run_groups(
  ...     [rollout.Group(resolve.LearnedFactory(lopt), theta),
  ...      rollout.Group(resolve.BaselineFactory("adam"),
  ...                    jnp.array([1e-3, 1e-2]), grid=True)],
  ...     task, keys, config)
  >>> learned.train_loss.shape, adam.train_loss.shape
  ((2, 100), (2, 2, 100))
"""

from collections.abc import Sequence
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from meta_train import checks
from meta_train.evaluation import resolve
import task_suite
from task_suite import base as task_base

Hparams = resolve.Hparams
OptimizerFactory = resolve.OptimizerFactory


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Static settings of an evaluation run (hashable: a jit static argument).

  Attributes:
    num_steps: the horizon T at which final losses are reported.
    horizon_multiple: runs go on to ``horizon_multiple * T`` steps, so that
      late instability (loss drifting up after the horizon) shows.
    valid_every: steps between validation losses; 0 picks the largest divisor
      of ``num_steps`` that is at most ``num_steps // 10`` (at least 1).
    num_eval_batches: batches averaged per split at each checkpoint (fresh
      ones for the validation loss, the run's fixed ones for train and
      test).
  """

  num_steps: int
  horizon_multiple: int = 1
  valid_every: int = 0
  num_eval_batches: int = 4

  def __post_init__(self):
    positive = ("num_steps", "horizon_multiple", "num_eval_batches")
    checks.check_at_least(self, positive, 1)
    ok = self.valid_every == 0 or (
      self.valid_every > 0 and self.num_steps % self.valid_every == 0
    )
    allowed = f"0 (automatic) or divide num_steps={self.num_steps}"
    checks.check(ok, self, "valid_every", allowed)

  @property
  def chunk(self) -> int:
    """Steps between validation losses (``valid_every`` resolved)."""
    if self.valid_every:
      return self.valid_every
    cap = max(1, self.num_steps // 10)
    return max(d for d in range(1, cap + 1) if self.num_steps % d == 0)

  @property
  def total_steps(self) -> int:
    return self.num_steps * self.horizon_multiple


class RolloutResult(NamedTuple):
  """Curves and final losses of runs; ``...`` = [grid,] seeds.

  ``C = total_steps / valid_every`` validation points and ``M =
  horizon_multiple`` evaluation points (at steps T, 2T, ...).
  """

  train_loss: jax.Array  # [..., total_steps] train-batch loss before step t
  valid_loss: jax.Array  # [..., C] mean over eval valid batches at N, 2N, ..
  final_train: jax.Array  # [..., M] mean over fixed eval train batches, mT
  final_valid: jax.Array  # [..., M] valid_loss at mT
  final_test: jax.Array  # [..., M] mean over fixed eval test batches, mT


class Group(NamedTuple):
  """One optimizer's runs in an evaluation of several optimizers.

  Attributes:
    factory: builds the optimizer from one value of ``hparams``.
    hparams: with ``grid``, a pytree whose leaves have a leading ``[grid]``
      axis (e.g. learning rates); else shared by all runs (theta, or None).
    grid: whether ``hparams`` is a grid to run every value of.
  """

  factory: OptimizerFactory
  hparams: Hparams
  grid: bool = False


class _Carry(NamedTuple):
  params: tuple  # per group: params with a leading [runs] axis
  opt_state: tuple  # per group: optimizer states, leading [runs] axis
  valid_value: jax.Array  # [runs] NaN except on the step after a checkpoint
  step: jax.Array  # int32 []


def seed_keys(key: jax.Array, num_seeds: int) -> jax.Array:
  """``[num_seeds]`` run keys; share them across optimizers for a fair test.

  Every optimizer run with the same key starts from the same initial
  parameters and sees the same batches (common random numbers).
  """
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
  return jax.random.split(key, num_seeds)


def _split_losses(
  task,
  params,
  keys: Sequence[jax.Array],
  splits: tuple[str, ...],
  num_batches: int,
) -> jax.Array:
  """``[len(splits)]`` mean losses of ``params``, split ``i`` on ``keys[i]``.

  The batches of all splits go through one vmapped ``task.eval_loss``, so the
  loss is traced (and compiled) once rather than once per split.
  """
  batches, loss_keys = [], []
  for i, (split, key) in enumerate(zip(splits, keys, strict=True)):
    k_batch, k_loss = jax.random.split(jax.random.fold_in(key, i))
    batch_keys = jax.random.split(k_batch, num_batches)
    batches.append(jax.vmap(lambda k, s=split: task.batch(k, s))(batch_keys))
    loss_keys.append(jax.random.split(k_loss, num_batches))
  loss_fn = jax.vmap(task.eval_loss, in_axes=(None, 0, 0))
  shapes = [jax.tree.map(jnp.shape, b) for b in batches]
  if all(s == shapes[0] for s in shapes):
    stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *batches)
    losses = loss_fn(params, jnp.concatenate(loss_keys), stacked)
    losses = losses.reshape(len(splits), num_batches)
  else:  # splits with different batch shapes need a loss trace each
    losses = jnp.stack(
      [loss_fn(params, k, b) for k, b in zip(loss_keys, batches)]
    )
  return jnp.mean(losses.astype(jnp.float32), axis=1)


def _layout(hparams: tuple, grids: tuple[bool, ...], num_seeds: int):
  """Per group: its run count and its hparams repeated to one per run.

  Runs are ordered group by group, grid value-major then seed; run ``r`` of
  a group uses seed ``r % num_seeds``.
  """
  sizes, per_run = [], []
  for h, grid in zip(hparams, grids):
    if grid:
      size = jax.tree.leaves(h)[0].shape[0]
      h = jax.tree.map(lambda x: jnp.repeat(x, num_seeds, axis=0), h)
    else:
      size = 1
    sizes.append(size * num_seeds)
    per_run.append(h)
  return sizes, per_run


def _per_run(factory, grid: bool, method: str):
  """vmaps ``factory(h).<method>(...)`` over runs (hparams too if grid)."""

  def one(h, *args, **kwargs):
    return getattr(factory(h), method)(*args, **kwargs)

  return one, (0 if grid else None)


@functools.partial(jax.jit, static_argnames=("factories", "grids"))
def _init(task, hparams, keys, *, factories, grids) -> _Carry:
  num_seeds = keys.shape[0]
  sizes, per_run = _layout(hparams, grids, num_seeds)
  params_s = jax.vmap(lambda k: task.init(jax.random.fold_in(k, 0)))(keys)
  params, states = [], []
  for factory, grid, size, h in zip(factories, grids, sizes, per_run):
    seed = np.arange(size) % num_seeds  # [runs]
    p = jax.tree.map(lambda x, seed=seed: x[seed], params_s)
    init, h_axis = _per_run(factory, grid, "init")
    params.append(p)
    states.append(jax.vmap(init, in_axes=(h_axis, 0))(h, p))
  nan = jnp.full((sum(sizes),), jnp.nan, jnp.float32)
  return _Carry(tuple(params), tuple(states), nan, jnp.zeros((), jnp.int32))


def _concat(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *trees)


def _split(tree: Any, sizes: Sequence[int]) -> list[Any]:
  """Splits the leading axis of every leaf into consecutive ``sizes``."""
  stops = np.cumsum(sizes).tolist()
  starts = [0] + stops[:-1]
  return [
    jax.tree.map(lambda x, a=a, b=b: x[a:b], tree)
    for a, b in zip(starts, stops)
  ]


# The horizon multiple is not part of the compiled program: a run to 2T is
# two calls of the same segment, so it reuses the compilation of the run to T
# and reproduces its first T steps exactly.
@functools.partial(jax.jit, static_argnames=("factories", "grids", "segment"))
def _segment(task, hparams, keys, carry, *, factories, grids, segment):
  """``num_steps`` steps of every run of every group, as one ``lax.scan``.

  The gradients of all runs come from one vmapped ``task.value_and_grad``,
  so the task (most of the compile time) is traced once for all the
  optimizers; each group then applies its own vmapped update.

  Returns:
    The carry and ``([T, runs] train losses, [T / N, runs, 3] checkpoint
    losses on valid, train and test)``.
  """
  num_steps, chunk, num_eval_batches = segment
  num_seeds = keys.shape[0]
  sizes, per_run = _layout(hparams, grids, num_seeds)
  seed = np.concatenate([np.arange(n) % num_seeds for n in sizes])  # [runs]
  k_data = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)  # [S]
  k_eval = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)[seed]  # [runs]
  k_fixed = jax.vmap(lambda k: jax.random.fold_in(k, 3))(keys)[seed]  # [runs]
  updates_fns = [_per_run(f, g, "update") for f, g in zip(factories, grids)]
  nan = jnp.full((len(seed),), jnp.nan, jnp.float32)

  def step_fn(c: _Carry, _):
    step_keys = jax.vmap(
      lambda k: jax.random.split(jax.random.fold_in(k, c.step))
    )(k_data)  # [S, 2]
    k_batch, k_loss = step_keys[:, 0], step_keys[:, 1]
    batches = jax.vmap(lambda k: task.batch(k, "train"))(k_batch)  # [S, ...]
    batch = jax.tree.map(lambda x: x[seed], batches)  # [runs, ...]
    params = _concat(c.params)
    loss, grads = jax.vmap(task.value_and_grad)(params, k_loss[seed], batch)
    loss = loss.astype(jnp.float32)  # [runs]
    new_params, new_states = [], []
    parts = zip(
      updates_fns,
      per_run,
      _split(grads, sizes),
      c.opt_state,
      c.params,
      _split(loss, sizes),
      _split(c.valid_value, sizes),
    )
    for (update, h_axis), h, g, state, p, value, valid in parts:
      u, state = jax.vmap(
        lambda h, g, s, p, v, vv, update=update: update(
          h, g, s, p, value=v, valid_value=vv, num_steps=num_steps
        ),
        in_axes=(h_axis, 0, 0, 0, 0, 0),
      )(h, g, state, p, value, valid)
      new_params.append(optax.apply_updates(p, u))
      new_states.append(state)
    c = _Carry(tuple(new_params), tuple(new_states), nan, c.step + 1)
    return c, loss

  def chunk_fn(c: _Carry, _):
    c, losses = jax.lax.scan(step_fn, c, length=chunk)
    # Every checkpoint evaluates all splits (one trace of the loss serves the
    # optimizer's validation input and the final losses); at the default
    # chunk of T/10 steps this costs a few percent of the run. The
    # validation loss (the learned optimizers' input, and the validation
    # curve) is on fresh batches at every checkpoint; the train
    # and test losses are on the same batches at every checkpoint of a run,
    # so that their change from T to 2T is the parameters', not the
    # batches'. Measured on 100 held-out tasks (T=1000, suite seed 1): with
    # fresh batches at each horizon, 14 of the default's runs and 20 of
    # tuned Adam's "rose" by more than 10% from T to 2T, mostly batch
    # noise on small regressions, conv nets and MLPs; with these, 7 and 13.
    evals = jax.vmap(
      lambda p, kv, kf: _split_losses(
        task,
        p,
        (jax.random.fold_in(kv, c.step), kf, kf),
        ("valid", "train", "test"),
        num_eval_batches,
      )
    )(_concat(c.params), k_eval, k_fixed)  # [runs, 3]
    return c._replace(valid_value=evals[:, 0]), (losses, evals)

  carry, (losses, evals) = jax.lax.scan(
    chunk_fn, carry, length=num_steps // chunk
  )
  return carry, (losses.reshape(num_steps, -1), evals)


def run_groups(
  groups: Sequence[Group],
  task: task_base.Task,
  keys: jax.Array,
  config: RolloutConfig,
) -> list[RolloutResult]:
  """Runs several optimizers (each over seeds, grids too) as one program.

  Every run of every group with seed ``s`` starts from the same parameters
  and sees the same batches.

  Args:
    groups: the optimizers and their hyperparameters.
    task: the task (a jit argument: same-signature tasks share compilation).
    keys: ``[seeds]`` run keys from ``seed_keys``.
    config: the run settings.

  Returns:
    One ``RolloutResult`` per group, with leading axes ``[grid, seeds]`` for a
    grid group and ``[seeds]`` otherwise.
  """
  if not groups:
    raise ValueError("run_groups needs at least one Group")
  static = {
    "factories": tuple(g.factory for g in groups),
    "grids": tuple(bool(g.grid) for g in groups),
  }
  hparams = tuple(g.hparams for g in groups)
  segment = (config.num_steps, config.chunk, config.num_eval_batches)
  carry = _init(task, hparams, keys, **static)
  losses, evals = [], []
  for _ in range(config.horizon_multiple):
    carry, (seg_losses, seg_evals) = _segment(
      task, hparams, keys, carry, segment=segment, **static
    )
    losses.append(seg_losses)  # [T, runs]
    evals.append(seg_evals)  # [T / N, runs, 3]
  losses = jnp.concatenate(losses).T  # [runs, M * T]
  evals = jnp.moveaxis(jnp.concatenate(evals), 0, 1)  # [runs, C, 3]
  per_horizon = config.num_steps // config.chunk
  at_horizons = evals[:, per_horizon - 1 :: per_horizon]  # [runs, M, 3]
  every = RolloutResult(
    train_loss=losses,
    valid_loss=evals[..., 0],
    final_train=at_horizons[..., 1],
    final_valid=at_horizons[..., 0],
    final_test=at_horizons[..., 2],
  )
  num_seeds = keys.shape[0]
  sizes, _ = _layout(hparams, static["grids"], num_seeds)
  results = []
  for group, part in zip(groups, _split(every, sizes)):
    shape = (-1, num_seeds) if group.grid else (num_seeds,)
    results.append(
      RolloutResult(*(x.reshape(shape + x.shape[1:]) for x in part))
    )
  return results


def run_seeds(
  factory: OptimizerFactory,
  task: task_base.Task,
  hparams: Hparams,
  keys: jax.Array,
  config: RolloutConfig,
) -> RolloutResult:
  """Runs one optimizer (e.g. a learned one, ``hparams=theta``) per seed.

  Args:
    factory: builds the optimizer from ``hparams``.
    task: the task (a jit argument).
    hparams: the optimizer's hyperparameters, shared by all seeds (a learned
      optimizer's theta, or None for a baseline at its defaults).
    keys: ``[seeds]`` run keys.
    config: the run settings.

  Returns:
    A ``RolloutResult`` with a leading ``[seeds]`` axis.
  """
  return run_groups([Group(factory, hparams)], task, keys, config)[0]


# ------------------------------------------ the demo's and meta-training's


def train_scan(task, tx, params, k_data: jax.Array, num_steps: int):
  """``num_steps`` plain training steps in one ``lax.scan`` (no checkpoints).

  Step ``i`` trains on ``task.batch`` of ``fold_in(k_data, i)`` and passes
  its loss as ``value``. The demo's curves and meta-training's held-out
  evaluation both run this loop.

  Returns:
    ``(final params, train-batch losses [num_steps])``.
  """

  def step(carry, i):
    params, opt_state = carry
    k_batch, k_loss = jax.random.split(jax.random.fold_in(k_data, i))
    batch = task.batch(k_batch, "train")
    loss, grads = task.value_and_grad(params, k_loss, batch)
    updates, opt_state = tx.update(
      grads, opt_state, params, value=loss, num_steps=num_steps
    )
    return (optax.apply_updates(params, updates), opt_state), loss

  carry = (params, tx.init(params))
  (params, _), losses = jax.lax.scan(step, carry, jnp.arange(num_steps))
  return params, losses


@functools.partial(jax.jit, static_argnames=("factory", "num_steps", "grid"))
def train_curves(task, hparams, keys, *, factory, num_steps: int, grid: bool):
  """Train-batch losses ``[grid,] seeds, num_steps`` of vmapped runs.

  A single ``lax.scan`` per run and nothing else (the demo's loop):
  compilation dominates the demo's time, and ``run_groups``'s held-out
  checkpoints would double it.
  """

  def one(hp, key):
    params = task.init(jax.random.fold_in(key, 0))
    k_data = jax.random.fold_in(key, 1)
    return train_scan(task, factory(hp), params, k_data, num_steps)[1]

  fn = jax.vmap(one, in_axes=(None, 0))
  if grid:
    fn = jax.vmap(fn, in_axes=(0, None))
  return fn(hparams, keys)


def make_heldout_evaluator(lopt, specs, num_steps: int, num_batches: int = 4):
  """A function ``(theta, key) -> metrics`` of held-out tasks trained anew.

  Each task trains from ``task.init`` for ``num_steps`` steps with
  ``lopt.optimizer(theta)``; its final loss is the normalized mean loss of
  the final parameters on ``num_batches`` fresh train (and test) batches.
  Tasks of one signature are vmapped: one compilation per signature.

  Args:
    lopt: the learned optimizer.
    specs: the held-out task specs.
    num_steps: inner training steps per task.
    num_batches: batches averaged for the final losses.

  Returns:
    The evaluation function (host floats out).
  """
  stacked = [
    task_suite.stack_tasks([task_suite.get_task(s) for s in g])
    for g in task_suite.group_by_signature(specs).values()
  ]

  def one_task(theta, task, key):
    k_init, k_data, k_final = jax.random.split(key, 3)
    tx = lopt.optimizer(theta)
    params = train_scan(task, tx, task.init(k_init), k_data, num_steps)[0]

    def final(split, k):
      k_batch, k_loss = jax.random.split(k)
      return task.eval_loss(params, k_loss, task.batch(k_batch, split))

    keys = jax.random.split(k_final, num_batches)
    return tuple(
      task.normalize(jnp.mean(jax.vmap(functools.partial(final, s))(keys)))
      for s in ("train", "test")
    )

  @jax.jit
  def group_losses(theta, tasks, key):
    keys = jax.random.split(key, jax.tree.leaves(tasks.dynamic)[0].shape[0])
    axes = (None, task_suite.vmap_axes(tasks), 0)
    return jax.vmap(one_task, in_axes=axes)(theta, tasks, keys)

  def evaluate(theta, key) -> dict[str, float]:
    out = [
      group_losses(theta, t, jax.random.fold_in(key, i))
      for i, t in enumerate(stacked)
    ]
    train_loss = np.concatenate([np.asarray(o[0]) for o in out])
    test_loss = np.concatenate([np.asarray(o[1]) for o in out])
    return {
      "eval/final_loss": float(np.mean(train_loss)),
      "eval/final_test_loss": float(np.mean(test_loss)),
    }

  return evaluate


def compilation_count() -> int:
  """How many (signature, optimizers, settings) run programs are compiled
  and held (``release_programs`` drops them)."""
  return _segment._cache_size()


def release_programs() -> None:
  """Drops every compiled run program of ``run_groups``, with its memory.

  XLA's CPU backend keeps ~3 kernel memory maps per compiled kernel for as
  long as a program lives (``meta_train.map_budget``); a later call with
  the same signature compiles again.
  """
  _init.clear_cache()
  _segment.clear_cache()
