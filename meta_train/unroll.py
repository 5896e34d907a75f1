"""Vectorized truncated unrolls of inner training with persistent states.

A population of task instances of one static signature trains in parallel.
Each instance carries an ``InnerState``: its parameters and optimizer state,
how many steps of its current inner run it has done, the run's sampled length
(``horizon``), which spec of the stacked task it trains on, and the run's PRNG
key. ``unroll`` advances every instance by ``unroll_length`` inner steps in
one ``lax.scan`` (the caller jits it) and returns per-step normalized losses.

Inner runs outlive truncations: an instance is re-initialised only when its
step reaches its horizon (a new spec index, new parameters, a new horizon), or
when an estimator forces it after a non-finite value (``force_reset``).
Re-initialising unfinished runs at every truncation trains optimizers for the
first K steps only (DESIGN.md §8, short-horizon bias).

PRNG: a run's key derives the spec index, horizon, initial parameters, the
next run's key, and, by ``fold_in(step)``, every batch of the run. So the
members of an antithetic pair, given the same state, see the same data, and
resuming from a saved state reproduces the run.

Example:
  >>> cfg = unroll.UnrollConfig(unroll_length=20)
  >>> states = unroll.init_states(lopt.optimizer, theta, tasks, key, 8, cfg)
  >>> thetas = jax.tree.map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), theta)
  >>> states, out = jax.jit(unroll.unroll, static_argnums=(0, 4))(
  ...     lopt.optimizer, thetas, tasks, states, cfg)
  >>> out.loss.shape  # [K, 8] per-step normalized losses of the truncation
"""

from collections.abc import Callable
import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from meta_train import checks
from task_suite import base as task_base

MetaParams = Any
Params = Any
OptimizerFn = Callable[[MetaParams], optax.GradientTransformationExtraArgs]

SPLITS = ("train", "valid")
WEIGHTINGS = ("uniform", "end")
TRANSFORMS = ("linear", "log")
# The "log" meta-loss is log(max(normalized loss, 0) + LOG_FLOOR): gains
# below a thousandth of the initial loss stop counting (the noise floor of
# most tasks is above it).
LOG_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True)
class UnrollConfig:
  """Static settings of an unroll (hashable: pass as a static argument).

  Attributes:
    unroll_length: K, inner steps per truncation.
    min_horizon: shortest inner run (steps).
    max_horizon: longest inner run; lengths are log-uniform in between.
    valid_every: the optimizer gets the validation loss as ``valid_value``
      every this many inner steps (NaN on others); 0: never. If it divides
      ``unroll_length``, every instance gets it on the same steps (every
      N-th step of each truncation: every N steps of each run, in phase
      with the truncations), so one validation pass serves N steps;
      otherwise on the steps of each run that are multiples of N.
    meta_loss_split: "train" (the training loss of each step, free) or
      "valid" (the loss on a validation batch at the same parameters).
    meta_loss_weighting: "uniform", or "end": step ``s`` of a run of length
      ``H`` is weighted ``2 (s + 1) / (H + 1)`` (mean 1 over a run), so the
      late phase of runs counts more (against short-horizon bias).
    meta_loss_transform: "linear" (the normalized loss) or "log"
      (``log(max(normalized, 0) + LOG_FLOOR)``; a noisy loss can dip below
      0): each decade of loss counts alike, so the last phase of
      convergence (0.01 -> 0.001) weighs as much as the first (1 -> 0.1).
  """

  unroll_length: int = 20
  min_horizon: int = 100
  max_horizon: int = 2000
  valid_every: int = 10
  meta_loss_split: str = "train"
  meta_loss_weighting: str = "uniform"
  meta_loss_transform: str = "linear"

  def __post_init__(self):
    ints = ("unroll_length", "min_horizon", "max_horizon", "valid_every")
    for name in ints:
      checks.check_type(self, name, int)
    checks.check_at_least(self, ("unroll_length", "min_horizon"), 1)
    ok = self.max_horizon >= self.min_horizon
    checks.check(ok, self, "max_horizon", ">= min_horizon")
    checks.check(self.valid_every >= 0, self, "valid_every", ">= 0 (0: never)")
    checks.check_choice(self, "meta_loss_split", SPLITS)
    checks.check_choice(self, "meta_loss_weighting", WEIGHTINGS)
    checks.check_choice(self, "meta_loss_transform", TRANSFORMS)


class InnerState(NamedTuple):
  """Inner-training state of a population (leading axis ``[pop]``).

  Unbatched (one instance) inside the vmapped per-instance functions.
  """

  params: Params  # leaves [pop, ...]
  opt_state: Any  # leaves [pop, ...]
  step: jax.Array  # [pop] int32, steps done in the current run
  horizon: jax.Array  # [pop] int32, length of the current run
  spec_index: jax.Array  # [pop] int32, index into the stacked task
  key: jax.Array  # [pop, 2] uint32, raw key data of the current run


class UnrollOut(NamedTuple):
  """Per-step outputs of one truncation."""

  loss: jax.Array  # [T, pop] normalized meta-loss of each step
  weight: jax.Array  # [T, pop] meta-loss weight of each step
  reset: jax.Array  # [T, pop] bool, a new run started at this step
  finite: jax.Array  # [pop] bool, every loss and the final state finite


class _RunKeys(NamedTuple):
  spec: jax.Array
  horizon: jax.Array
  init: jax.Array
  next_run: jax.Array


# Steps fold their index (< 2**31) into the run key; the run-level keys use
# this tag, out of their range.
_RUN_TAG = 2**32 - 1


def _run_keys(raw_key: jax.Array) -> _RunKeys:
  run_key = jax.random.fold_in(jax.random.wrap_key_data(raw_key), _RUN_TAG)
  return _RunKeys(*jax.random.split(run_key, 4))


def step_keys(raw_key: jax.Array, step: jax.Array) -> tuple[jax.Array, ...]:
  """Keys of inner step ``step`` of the run with key ``raw_key``.

  Args:
    raw_key: the run's raw key data (``InnerState.key`` of one instance).
    step: the step within the run.

  Returns:
    ``(k_batch, k_loss, k_valid)``: the train batch, the loss's own
    randomness, and the validation batch (and its loss randomness).
  """
  k = jax.random.fold_in(jax.random.wrap_key_data(raw_key), step)
  return tuple(jax.random.split(k, 3))


def num_specs(tasks: task_base.Task) -> int:
  """The leading ``[num_specs]`` size of a stacked task.

  Raises:
    ValueError: if ``tasks`` is not stacked.
  """
  leaves = jax.tree.leaves(tasks.dynamic)
  if not leaves:
    return 1
  if jnp.ndim(leaves[0]) == 0:
    raise ValueError(
      "unroll needs a STACKED task with a leading [num_specs] axis on its "
      "dynamic values; got an unstacked one. Pass "
      "task_suite.stack_tasks([task, ...]) (a list of one task is fine)."
    )
  return int(jnp.shape(leaves[0])[0])


def sample_horizon(key: jax.Array, cfg: UnrollConfig) -> jax.Array:
  """A log-uniform int32 run length in ``[min_horizon, max_horizon]``."""
  lo, hi = math.log(cfg.min_horizon), math.log(cfg.max_horizon + 1)
  h = jnp.floor(jnp.exp(jax.random.uniform(key, (), minval=lo, maxval=hi)))
  return jnp.clip(h, cfg.min_horizon, cfg.max_horizon).astype(jnp.int32)


def new_run(
  optimizer_fn: OptimizerFn,
  theta: MetaParams,
  tasks: task_base.Task,
  raw_key: jax.Array,
  cfg: UnrollConfig,
) -> InnerState:
  """A fresh inner run of one instance (unbatched).

  Args:
    optimizer_fn: theta -> optax transform (e.g. ``lopt.optimizer``).
    theta: this instance's meta-parameters.
    tasks: the stacked task of the signature.
    raw_key: raw key data of the new run.
    cfg: unroll settings.

  Returns:
    The instance's state at step 0.
  """
  keys = _run_keys(raw_key)
  spec_index = jax.random.randint(keys.spec, (), 0, num_specs(tasks))
  params = task_base.index_task(tasks, spec_index).init(keys.init)
  return InnerState(
    params=params,
    opt_state=optimizer_fn(theta).init(params),
    step=jnp.zeros([], jnp.int32),
    horizon=sample_horizon(keys.horizon, cfg),
    spec_index=spec_index.astype(jnp.int32),
    key=raw_key,
  )


def init_states(
  optimizer_fn: OptimizerFn,
  theta: MetaParams,
  tasks: task_base.Task,
  key: jax.Array,
  num: int,
  cfg: UnrollConfig,
  stagger: bool = True,
) -> InnerState:
  """Initial states of a population of ``num`` instances.

  Starts are staggered so that resets do not align: each instance's first
  run is cut to a uniform fraction of its sampled horizon. (Starting at a
  random step with fresh parameters instead would feed the optimizer step
  features that contradict its parameters.)

  Args:
    optimizer_fn: theta -> optax transform.
    theta: meta-parameters (shared, unbatched) for the optimizer init.
    tasks: the stacked task of the signature.
    key: PRNG key.
    num: population size.
    cfg: unroll settings.
    stagger: shorten first runs (False: full horizons, for tests).

  Returns:
    ``InnerState`` with leading axis ``[num]``.
  """

  def one(i):
    k = jax.random.fold_in(key, i)
    k_run, k_stagger = jax.random.split(k)
    state = new_run(optimizer_fn, theta, tasks, jax.random.key_data(k_run), cfg)
    if stagger:
      frac = jax.random.uniform(k_stagger, ())
      first = jnp.ceil(frac * state.horizon.astype(jnp.float32))
      state = state._replace(
        horizon=jnp.clip(first, 1, state.horizon).astype(jnp.int32)
      )
    return state

  return jax.vmap(one)(jnp.arange(num))


def force_reset(states: InnerState, mask: jax.Array) -> InnerState:
  """Makes the masked instances ``[pop]`` start a new run at their next step."""
  return states._replace(step=jnp.where(mask, states.horizon, states.step))


def tree_finite(tree: Any) -> jax.Array:
  """Whether every float leaf of one instance's tree is finite (scalar)."""
  oks = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
  ]
  return jnp.all(jnp.stack(oks)) if oks else jnp.bool_(True)


def step_weight(
  step: jax.Array, horizon: jax.Array, weighting: str
) -> jax.Array:
  """Meta-loss weight of inner step ``step`` of a run of length ``horizon``.

  Args:
    step: int array, the step within the run.
    horizon: int array, the run's length.
    weighting: "uniform" (1) or "end" (``2 (step + 1) / (horizon + 1)``,
      which averages to 1 over a run).

  Returns:
    float32 array shaped like ``step``.
  """
  if weighting == "uniform":
    return jnp.ones(jnp.shape(step), jnp.float32)
  if weighting == "end":
    return (2.0 * (step + 1) / (horizon + 1.0)).astype(jnp.float32)
  raise ValueError(f"meta_loss_weighting must be one of {WEIGHTINGS}, got "
                   f"{weighting!r}.")  # fmt: skip


def _select(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
  """Per-instance ``where`` over trees with leading ``[pop]``."""

  def sel(a, b):
    m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
    return jnp.where(m, a, b)

  return jax.tree.map(sel, on_true, on_false)


def _valid_in_phase(cfg: UnrollConfig) -> bool:
  """Whether every instance gets its validation loss on the same steps."""
  return cfg.valid_every > 0 and cfg.unroll_length % cfg.valid_every == 0


def _schedule(states: InnerState, cfg: UnrollConfig) -> tuple[Any, Any]:
  """Which steps of the truncation need a reset / a validation loss [K].

  For some instance of the population; None where that cannot be predicted
  (runs shorter than the truncation). Predicting it once per truncation
  lets every step skip the re-initialisation and the validation forward
  pass when nobody needs them, with a replicated ``lax.cond`` predicate: a
  per-step ``any`` over a population sharded across devices or processes
  would be one collective per inner step.
  """
  j = jnp.arange(cfg.unroll_length)[:, None]  # [K, 1]
  need_valid = None
  if _valid_in_phase(cfg):
    need_valid = j[:, 0] % cfg.valid_every == 0  # [K], the same for all
  elif not cfg.valid_every:
    need_valid = jnp.zeros([cfg.unroll_length], jnp.bool_)
  if cfg.min_horizon < cfg.unroll_length:  # several resets per truncation
    return None, need_valid
  until_reset = (states.horizon - states.step)[None]  # [1, pop]
  # At most one reset per truncation: a new run lasts >= min_horizon >= K.
  need_reset = jnp.any(j == until_reset, axis=1)  # [K]
  if need_valid is None:
    step = jnp.where(j >= until_reset, j - until_reset, states.step[None] + j)
    need_valid = jnp.any(step % cfg.valid_every == 0, axis=1)  # [K]
  return need_reset, need_valid


def _maybe(pred: Any, fn: Callable, otherwise: Callable, operand: Any) -> Any:
  """``fn(operand)`` if ``pred`` (None: always), else ``otherwise(operand)``."""
  if pred is None:
    return fn(operand)
  return jax.lax.cond(pred, fn, otherwise, operand)


def _reset_done(
  optimizer_fn, cfg, tasks, thetas, theta_axis, states, need_reset
):
  """Starts new runs for instances whose run is over (step == horizon)."""
  done = states.step >= states.horizon  # [pop]

  def reset(states):
    next_keys = jax.vmap(lambda k: jax.random.key_data(_run_keys(k).next_run))(
      states.key
    )
    fresh = jax.vmap(
      lambda th, k: new_run(optimizer_fn, th, tasks, k, cfg),
      in_axes=(theta_axis, 0),
    )(thetas, next_keys)
    return _select(done, fresh, states)

  # Runs end rarely: skip the re-init (random init of every parameter) on
  # the steps where no instance of the population needs it.
  return _maybe(need_reset, reset, lambda s: s, states), done


def valid_loss(
  task: task_base.Task, params: Params, k_valid: jax.Array
) -> jax.Array:
  """The loss of ``params`` on the validation batch of ``k_valid`` (float32).

  Args:
    task: one (unstacked) task.
    params: one instance's parameters.
    k_valid: the step's validation key (third of ``step_keys``).
  """
  k_batch, k_loss = jax.random.split(k_valid)
  loss = task.loss(params, k_loss, task.batch(k_batch, "valid"))
  return jnp.asarray(loss, jnp.float32)


def _valid_losses(cfg, tasks, states, keys, need_valid):
  """Validation losses [pop] where needed (else NaN) and the feed mask."""
  pop = states.step.shape[0]
  nan = jnp.full([pop], jnp.nan, jnp.float32)
  if _valid_in_phase(cfg):  # one forward pass every N steps, for everyone
    feed = jnp.broadcast_to(need_valid, [pop])
  elif cfg.valid_every:
    feed = states.step % cfg.valid_every == 0  # [pop]
  else:
    feed = jnp.zeros([pop], jnp.bool_)
  if not cfg.valid_every and cfg.meta_loss_split == "train":
    return nan, feed

  def valid(states):
    one = lambda p, i, k: valid_loss(task_base.index_task(tasks, i), p, k)
    return jax.vmap(one)(states.params, states.spec_index, keys[2])

  if cfg.meta_loss_split == "valid":
    return valid(states), feed
  # A forward pass on a valid batch only on steps where someone needs it.
  return _maybe(need_valid, valid, lambda s: nan, states), feed


def _population_step(
  optimizer_fn, cfg, tasks, thetas, theta_axis, states, need
):
  """One inner step of every instance; returns new states and step outputs.

  ``need`` is ``(need_reset, need_valid)`` of this step (scalars or None).
  """
  states, reset = _reset_done(
    optimizer_fn, cfg, tasks, thetas, theta_axis, states, need[0]
  )
  keys = jax.vmap(step_keys)(states.key, states.step)  # 3 x [pop] keys

  def train_value_and_grad(params, spec_index, k_batch, k_loss):
    task = task_base.index_task(tasks, spec_index)
    return task.value_and_grad(params, k_loss, task.batch(k_batch, "train"))

  loss, grads = jax.vmap(train_value_and_grad)(
    states.params, states.spec_index, keys[0], keys[1]
  )
  loss = jnp.asarray(loss, jnp.float32)
  valid_loss, feed = _valid_losses(cfg, tasks, states, keys, need[1])
  valid_value = jnp.where(feed, valid_loss, jnp.nan)

  def apply(theta, params, opt_state, grads, loss, valid_value, horizon):
    tx = optimizer_fn(theta)
    updates, new_opt_state = tx.update(
      grads, opt_state, params, value=loss, valid_value=valid_value,
      num_steps=horizon,
    )  # fmt: skip
    new_params = optax.apply_updates(params, updates)
    return (
      optax.tree.cast_like(new_params, params),
      optax.tree.cast_like(new_opt_state, opt_state),
    )

  params, opt_state = jax.vmap(
    apply, in_axes=(theta_axis, 0, 0, 0, 0, 0, 0)
  )(
    thetas, states.params, states.opt_state, grads, loss, valid_value,
    states.horizon,
  )  # fmt: skip

  raw = loss if cfg.meta_loss_split == "train" else valid_loss
  meta = jax.vmap(
    lambda i, x: task_base.index_task(tasks, i).normalize(x).astype(jnp.float32)
  )(states.spec_index, raw)
  if cfg.meta_loss_transform == "log":
    meta = jnp.log(jnp.maximum(meta, 0.0) + LOG_FLOOR)
  weight = step_weight(states.step, states.horizon, cfg.meta_loss_weighting)
  # normalize() may cap an inf loss: check the raw losses too.
  finite = jnp.isfinite(loss) & jnp.isfinite(raw) & jnp.isfinite(meta)
  states = states._replace(
    params=params, opt_state=opt_state, step=states.step + 1
  )
  return states, (meta, weight, reset, finite)


def unroll(
  optimizer_fn: OptimizerFn,
  thetas: MetaParams,
  tasks: task_base.Task,
  states: InnerState,
  cfg: UnrollConfig,
  theta_axis: int | None = 0,
) -> tuple[InnerState, UnrollOut]:
  """Advances every instance by ``cfg.unroll_length`` inner steps.

  Args:
    optimizer_fn: theta -> optax transform (``lopt.optimizer``, or
      ``lambda _: optax.with_extra_args_support(optax.adam(1e-3))``).
    thetas: per-instance meta-parameters, leaves ``[pop, ...]``
      (``theta_axis=0``), or one shared theta (``theta_axis=None``).
    tasks: the stacked task of the signature (an argument, not a constant).
    states: ``InnerState`` with leading axis ``[pop]``.
    cfg: unroll settings (static).
    theta_axis: 0 if ``thetas`` is batched, None if shared.

  Returns:
    ``(states, out)``: the states after the truncation and its ``UnrollOut``.
  """
  num_specs(tasks)  # fails early on an unstacked task

  def body(states, need):
    return _population_step(
      optimizer_fn, cfg, tasks, thetas, theta_axis, states, need
    )

  states, (loss, weight, reset, finite) = jax.lax.scan(
    body, states, _schedule(states, cfg), length=cfg.unroll_length
  )
  finite = jnp.all(finite, axis=0) & jax.vmap(tree_finite)(
    (states.params, states.opt_state)
  )
  return states, UnrollOut(loss, weight, reset, finite)
