"""Trains a task with any optimizer for a fixed number of steps, vectorized.

One run trains a task from ``task.init(key)`` with an
``optax.GradientTransformationExtraArgs`` for ``horizon_multiple * num_steps``
steps inside one jitted ``lax.scan`` over checkpoints, each an inner scan of
``valid_every`` steps followed by an evaluation of the parameters on fresh
valid, train and test batches. Every step passes the train-batch loss as
``value``; the step after a checkpoint also passes the checkpoint's
validation loss as ``valid_value`` and the other steps pass NaN ("no
validation loss"), which learned optimizers treat as absent and hand-designed
ones ignore. The final losses at T, 2T, ... are the checkpoints there.

Optimizers are built *inside* the traced function by a hashable factory from
a pytree of hyperparameters, so a learning-rate grid is a ``vmap`` over traced
learning rates and a learned optimizer's ``theta`` is a jit argument, not a
compile-time constant. Runs are ``vmap``ped over seeds (and over the grid);
the task is a jit argument too, so every task of one static signature reuses
one compilation.

Nothing here guards against divergence: a run that blows up records NaN/inf
losses, and the report (``meta_train.report``) counts them as losses.

Example:
  >>> config = evaluation.EvalConfig(num_steps=100)
  >>> keys = evaluation.seed_keys(jax.random.key(0), num_seeds=2)
  >>> adam = evaluation.BaselineFactory("adam")
  >>> grid = evaluation.run_grid(adam, task, jnp.array([1e-3, 1e-2]), keys,
  ...                            config)
  >>> grid.train_loss.shape  # [grid, seeds, steps]
  (2, 2, 100)
"""

import dataclasses
import functools
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

import learned_opt
from learned_opt import baselines
from task_suite import base as task_base

Hparams = Any  # a pytree of arrays: a learning rate, theta, or None


class OptimizerFactory(Protocol):
  """A hashable callable ``hparams -> optax.GradientTransformationExtraArgs``.

  It is a static argument of the jitted run, so it must hash and compare by
  value (a frozen dataclass), or every call would compile again.
  """

  def __call__(
    self, hparams: Hparams
  ) -> optax.GradientTransformationExtraArgs: ...


@dataclasses.dataclass(frozen=True)
class BaselineFactory:
  """Builds ``baselines.baseline(name, **fixed, <hparam>=hparams)``.

  Attributes:
    name: the baseline's name (``"adam"``, ``"momentum"``, ...).
    hparam: the keyword the (possibly traced) hyperparameter is passed as;
      None to ignore ``hparams`` and use the baseline's defaults.
    fixed: further keyword arguments, as ``((key, value), ...)``.
  """

  name: str
  hparam: str | None = "learning_rate"
  fixed: tuple[tuple[str, Any], ...] = ()

  def __call__(self, hparams: Hparams) -> optax.GradientTransformationExtraArgs:
    kwargs = dict(self.fixed)
    if self.hparam is not None:
      kwargs[self.hparam] = hparams
    return baselines.baseline(self.name, **kwargs)


@dataclasses.dataclass(frozen=True)
class LearnedFactory:
  """Builds ``lopt.optimizer(theta)``; ``theta`` is passed as ``hparams``."""

  lopt: learned_opt.LearnedOptimizer

  def __call__(self, hparams: Hparams) -> optax.GradientTransformationExtraArgs:
    return self.lopt.optimizer(hparams)


@dataclasses.dataclass(frozen=True)
class ChoiceFactory:
  """One of several optimizers, picked by a traced index.

  ``hparams = (index, inner)``: every option is built from ``inner`` and
  updated, and the update of option ``index`` is returned. A vmap over
  ``(index, inner)`` so runs several baselines' grids in one program, in
  which the task's gradient (most of the compile time) is traced once
  instead of once per baseline. The unused options cost only their
  elementwise updates and their state.

  Attributes:
    options: the factories to choose from.
  """

  options: tuple[OptimizerFactory, ...]

  def __call__(self, hparams: Hparams) -> optax.GradientTransformationExtraArgs:
    index, inner = hparams
    txs = [factory(inner) for factory in self.options]

    def init_fn(params):
      return tuple(tx.init(params) for tx in txs)

    def update_fn(updates, state, params=None, **extra_args):
      outs = [
        tx.update(updates, s, params, **extra_args) for tx, s in zip(txs, state)
      ]
      chosen = jax.tree.map(
        lambda *us: jax.lax.select_n(index, *us), *[u for u, _ in outs]
      )
      return chosen, tuple(s for _, s in outs)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Static settings of an evaluation run (hashable: a jit static argument).

  Attributes:
    num_steps: the horizon T at which final losses are reported.
    horizon_multiple: runs go on to ``horizon_multiple * T`` steps, so that
      late instability (loss drifting up after the horizon) shows.
    valid_every: steps between validation losses; 0 picks the largest divisor
      of ``num_steps`` that is at most ``num_steps // 10`` (at least 1).
    num_eval_batches: fresh batches averaged per split at each checkpoint.
  """

  num_steps: int
  horizon_multiple: int = 1
  valid_every: int = 0
  num_eval_batches: int = 4

  def __post_init__(self):
    if self.num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
    if self.horizon_multiple < 1:
      raise ValueError(
        f"horizon_multiple must be >= 1, got {self.horizon_multiple}"
      )
    if self.num_eval_batches < 1:
      raise ValueError(
        f"num_eval_batches must be >= 1, got {self.num_eval_batches}"
      )
    if self.valid_every < 0 or (
      self.valid_every and self.num_steps % self.valid_every
    ):
      raise ValueError(
        f"valid_every={self.valid_every} must divide num_steps="
        f"{self.num_steps} (or be 0 to choose automatically)"
      )

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


class RunResult(NamedTuple):
  """Curves and final losses of runs; ``...`` = [grid,] seeds.

  ``C = total_steps / valid_every`` validation points and ``M =
  horizon_multiple`` evaluation points (at steps T, 2T, ...).
  """

  train_loss: jax.Array  # [..., total_steps] train-batch loss before step t
  valid_loss: jax.Array  # [..., C] mean over eval valid batches at N, 2N, ..
  final_train: jax.Array  # [..., M] mean over eval train batches at mT
  final_valid: jax.Array  # [..., M] valid_loss at mT
  final_test: jax.Array  # [..., M] mean over eval test batches at mT


class _Carry(NamedTuple):
  params: Any
  opt_state: Any
  valid_value: jax.Array  # [] NaN except on the step after a validation
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
  task, params, key, splits: tuple[str, ...], num_batches: int
) -> jax.Array:
  """``[len(splits)]`` mean losses of ``params`` over fresh batches.

  The batches of all splits go through one vmapped ``task.loss``, so the
  loss is traced (and compiled) once rather than once per split.
  """
  batches, loss_keys = [], []
  for i, split in enumerate(splits):
    k_batch, k_loss = jax.random.split(jax.random.fold_in(key, i))
    batch_keys = jax.random.split(k_batch, num_batches)
    batches.append(jax.vmap(lambda k, s=split: task.batch(k, s))(batch_keys))
    loss_keys.append(jax.random.split(k_loss, num_batches))
  loss_fn = jax.vmap(task.loss, in_axes=(None, 0, 0))
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


def _init_one(factory, task, hparams, key) -> _Carry:
  tx = factory(hparams)
  params = task.init(jax.random.fold_in(key, 0))
  nan = jnp.full((), jnp.nan, jnp.float32)
  return _Carry(params, tx.init(params), nan, jnp.zeros((), jnp.int32))


def _segment_one(
  factory, segment: tuple[int, int, int], task, hparams, key, carry: _Carry
) -> tuple[_Carry, tuple[jax.Array, jax.Array]]:
  """``num_steps`` steps of one run from ``carry`` (no batch axes).

  Returns the carry and ``([T] train losses, [T / N, 3] checkpoint losses
  on valid, train and test)``.
  """
  num_steps, chunk, num_eval_batches = segment
  tx = factory(hparams)
  k_data, k_eval = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
  nan = jnp.full((), jnp.nan, jnp.float32)

  def step_fn(c: _Carry, _):
    k_batch, k_loss = jax.random.split(jax.random.fold_in(k_data, c.step))
    batch = task.batch(k_batch, "train")
    loss, grads = task.value_and_grad(c.params, k_loss, batch)
    loss = loss.astype(jnp.float32)
    updates, opt_state = tx.update(
      grads, c.opt_state, c.params, value=loss, valid_value=c.valid_value
    )
    params = optax.apply_updates(c.params, updates)
    return _Carry(params, opt_state, nan, c.step + 1), loss

  def chunk_fn(c: _Carry, _):
    c, losses = jax.lax.scan(step_fn, c, length=chunk)
    # Every checkpoint evaluates all splits (one trace of the loss serves the
    # optimizer's validation input and the final losses); at the default
    # chunk of T/10 steps this costs a few percent of the run.
    evals = _split_losses(
      task,
      c.params,
      jax.random.fold_in(k_eval, c.step),
      ("valid", "train", "test"),
      num_eval_batches,
    )  # [3]
    return c._replace(valid_value=evals[0]), (losses, evals)

  carry, (losses, evals) = jax.lax.scan(
    chunk_fn, carry, length=num_steps // chunk
  )
  return carry, (losses.reshape(-1), evals)


def _batched(fn, grid: bool, carry_axis: int | None):
  """vmaps ``fn(hparams, key, carry)`` over seeds, then over the grid."""
  over_seeds = jax.vmap(fn, in_axes=(None, 0, carry_axis))
  if not grid:
    return over_seeds
  return jax.vmap(over_seeds, in_axes=(0, None, carry_axis))


@functools.partial(jax.jit, static_argnames=("factory", "grid"))
def _init(task, hparams, keys, *, factory, grid: bool) -> _Carry:
  fn = lambda h, k, _: _init_one(factory, task, h, k)
  return _batched(fn, grid, None)(hparams, keys, None)


# The horizon multiple is not part of the compiled program: a run to 2T is
# two calls of the same segment, so it reuses the compilation of the run to T
# and reproduces its first T steps exactly.
@functools.partial(jax.jit, static_argnames=("factory", "segment", "grid"))
def _segment(task, hparams, keys, carry, *, factory, segment, grid: bool):
  fn = lambda h, k, c: _segment_one(factory, segment, task, h, k, c)
  return _batched(fn, grid, 0)(hparams, keys, carry)


def _run(factory, task, hparams, keys, config: EvalConfig, grid: bool):
  segment = (config.num_steps, config.chunk, config.num_eval_batches)
  carry = _init(task, hparams, keys, factory=factory, grid=grid)
  losses, evals = [], []
  for _ in range(config.horizon_multiple):
    carry, (seg_losses, seg_evals) = _segment(
      task, hparams, keys, carry, factory=factory, segment=segment, grid=grid
    )
    losses.append(seg_losses)  # [..., T]
    evals.append(seg_evals)  # [..., T / N, 3]
  evals = jnp.concatenate(evals, axis=-2)  # [..., C, 3]
  per_horizon = config.num_steps // config.chunk
  at_horizons = evals[..., per_horizon - 1 :: per_horizon, :]  # [..., M, 3]
  return RunResult(
    train_loss=jnp.concatenate(losses, axis=-1),
    valid_loss=evals[..., 0],
    final_train=at_horizons[..., 1],
    final_valid=at_horizons[..., 0],
    final_test=at_horizons[..., 2],
  )


def run_grid(
  factory: OptimizerFactory,
  task: task_base.Task,
  hparams: Hparams,
  keys: jax.Array,
  config: EvalConfig,
) -> RunResult:
  """Runs every grid value x every seed in one vmapped computation.

  Args:
    factory: builds the optimizer from one grid value (traced).
    task: the task (a jit argument: same-signature tasks share compilation).
    hparams: a pytree whose leaves have a leading ``[grid]`` axis, e.g. an
      array of learning rates.
    keys: ``[seeds]`` run keys from ``seed_keys``.
    config: the run settings.

  Returns:
    A ``RunResult`` with leading axes ``[grid, seeds]``.
  """
  return _run(factory, task, hparams, keys, config, grid=True)


def run_seeds(
  factory: OptimizerFactory,
  task: task_base.Task,
  hparams: Hparams,
  keys: jax.Array,
  config: EvalConfig,
) -> RunResult:
  """Runs one optimizer (e.g. a learned one, ``hparams=theta``) per seed.

  Args:
    factory: builds the optimizer from ``hparams``.
    task: the task (a jit argument).
    hparams: the optimizer's hyperparameters, shared by all seeds (a learned
      optimizer's theta, or None for a baseline at its defaults).
    keys: ``[seeds]`` run keys.
    config: the run settings.

  Returns:
    A ``RunResult`` with a leading ``[seeds]`` axis.
  """
  return _run(factory, task, hparams, keys, config, grid=False)


def run_baseline_grids(
  grids: dict[str, tuple[float, ...]],
  task: task_base.Task,
  keys: jax.Array,
  config: EvalConfig,
) -> dict[str, RunResult]:
  """Runs several baselines' learning-rate grids as one program.

  Args:
    grids: baseline name (``baselines.BASELINE_NAMES``) -> learning rates.
    task: the task.
    keys: ``[seeds]`` run keys.
    config: the run settings.

  Returns:
    Baseline name -> its ``RunResult`` with leading axes ``[grid, seeds]``,
    the same as ``run_grid(BaselineFactory(name), ...)`` would give.
  """
  names = tuple(grids)
  factory = ChoiceFactory(tuple(BaselineFactory(n) for n in names))
  index = [i for i, n in enumerate(names) for _ in grids[n]]
  lrs = [lr for n in names for lr in grids[n]]
  hparams = (jnp.asarray(index, jnp.int32), jnp.asarray(lrs, jnp.float32))
  result = run_grid(factory, task, hparams, keys, config)
  out, start = {}, 0
  for n in names:
    stop = start + len(grids[n])
    out[n] = RunResult(*(x[start:stop] for x in result))
    start = stop
  return out


def compilation_count() -> int:
  """How many (signature, optimizer, settings) run programs were compiled."""
  return _segment._cache_size()
