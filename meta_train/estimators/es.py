"""Antithetic truncated evolution strategies (truncated ES).

For each pair ``p``, ``z_p ~ N(0, I)`` (a theta-shaped tree) perturbs theta
into ``theta + std z_p`` and ``theta - std z_p`` (an explicit ``[pairs, 2]``
axis, never inferred from a shape). Both members start the truncation from the
pair's carried inner state, so they share the spec, the initialisation and
every data key; they differ only by the sign of the perturbation. The
estimate is

  g = mean_p (L(theta + std z_p) - L(theta - std z_p)) / (2 std) z_p

over pairs whose unrolls stayed finite, with ``L`` the truncation's mean
normalized meta-loss (Salimans et al. 2017; truncated: Metz et al. 2019).
Dividing by ``2 std`` and multiplying by ``z`` (not ``eps / std^2``) keeps
the estimate exactly zero, not 0/0, when ``std`` is tiny.

As in learned_optimization's TruncatedES, the state carried to the next
truncation is the positive member's: keeping both would let the members'
states drift apart and add their difference as noise to every estimate.
"""

from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp

from meta_train import unroll
from meta_train.estimators import reductions
from task_suite import base as task_base

MetaParams = Any


class ESState(NamedTuple):
  """Truncated-ES state: one carried inner state per pair."""

  inner: unroll.InnerState  # leaves [pairs, ...]


def sample_noise(key: jax.Array, theta: MetaParams, num_pairs: int) -> Any:
  """Standard-normal perturbation directions, leaves ``[pairs, ...]``."""
  flat, unravel = jax.flatten_util.ravel_pytree(theta)
  # One draw for all leaves: one RNG in the program, not one per leaf.
  z = jax.random.normal(key, (num_pairs, flat.size), flat.dtype)
  return jax.vmap(unravel)(z)


def perturb(theta: MetaParams, z: Any, std: float) -> MetaParams:
  """``theta + std * sign * z`` with leaves ``[pairs, 2, ...]``, sign (+, -)."""

  def one(t, zl):
    signs = jnp.array([1.0, -1.0], zl.dtype).reshape((1, 2) + (1,) * t.ndim)
    return t[None, None] + std * signs * zl[:, None]

  return jax.tree.map(one, theta, z)


def both_members(tree: Any) -> Any:
  """Both antithetic members from one state: ``[pairs, ...] -> [pairs, 2, ...]``."""
  return jax.tree.map(
    lambda x: jnp.broadcast_to(x[:, None], x.shape[:1] + (2,) + x.shape[1:]),
    tree,
  )


def pair_axes(tree: Any) -> Any:
  """Splits a leading ``[2 * pairs]`` axis into ``[pairs, 2]``."""
  return jax.tree.map(lambda x: x.reshape((-1, 2) + x.shape[1:]), tree)


def flat_axes(tree: Any) -> Any:
  """Merges leading ``[pairs, 2]`` axes into ``[2 * pairs]``."""
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def antithetic_unroll(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  thetas: MetaParams,
  tasks: task_base.Task,
  states: unroll.InnerState,
) -> tuple[unroll.InnerState, unroll.UnrollOut]:
  """Unrolls both members of every pair.

  Args:
    optimizer_fn: theta -> optax transform.
    cfg: unroll settings.
    thetas: perturbed meta-parameters, leaves ``[pairs, 2, ...]``.
    tasks: the stacked task.
    states: inner states, leaves ``[pairs, 2, ...]``.

  Returns:
    ``(states, out)`` with ``[pairs, 2]`` axes (``out`` fields are
    ``[T, pairs, 2]``, ``out.finite`` is ``[pairs, 2]``).
  """
  states, out = unroll.unroll(
    optimizer_fn, flat_axes(thetas), tasks, flat_axes(states), cfg
  )
  steps_first = lambda x: x.reshape(x.shape[:1] + (-1, 2))
  out = unroll.UnrollOut(
    loss=steps_first(out.loss),
    weight=steps_first(out.weight),
    reset=steps_first(out.reset),
    finite=out.finite.reshape(-1, 2),
  )
  return pair_axes(states), out


def weighted_sum(coef: jax.Array, tree: Any) -> Any:
  """``sum_p coef[p] * tree[p]`` for leaves ``[pairs, ...]``."""
  return jax.tree.map(lambda x: jnp.tensordot(coef, x, axes=1), tree)


def init(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  num_pairs: int,
  theta: MetaParams,
  tasks: task_base.Task,
  key: jax.Array,
) -> ESState:
  """Initial truncated-ES state: ``num_pairs`` staggered inner runs."""
  return ESState(
    unroll.init_states(optimizer_fn, theta, tasks, key, num_pairs, cfg)
  )


def estimate(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  std: float,
  theta: MetaParams,
  tasks: task_base.Task,
  state: ESState,
  key: jax.Array,
) -> tuple[MetaParams, ESState, dict[str, jax.Array]]:
  """One truncated-ES estimate over all pairs (pure; the caller jits).

  ``optimizer_fn``, ``cfg`` and ``std`` are bound by ``base.make_estimator``;
  ``state`` comes from ``init`` or a previous ``estimate``, and ``key`` draws
  the perturbations.

  Returns:
    ``(grad, state, metrics)``.
  """
  num_pairs = state.inner.step.shape[0]
  z = sample_noise(key, theta, num_pairs)
  states, out = antithetic_unroll(
    optimizer_fn, cfg, perturb(theta, z, std), tasks, both_members(state.inner)
  )
  losses = reductions.mean_loss(out)  # [pairs, 2]
  delta = jnp.mean(reductions.antithetic_difference(out), axis=0)  # [pairs]
  finite = jnp.all(out.finite, axis=1)  # [pairs]
  kept = jnp.maximum(jnp.sum(finite.astype(jnp.float32)), 1.0)
  coef = jnp.where(finite, delta / (2.0 * std), 0.0)
  grad = weighted_sum(coef / kept, z)
  carried = jax.tree.map(lambda x: x[:, 0], states)
  carried = unroll.force_reset(carried, ~finite)
  metrics = reductions.population_metrics(
    jnp.mean(losses, axis=1),
    finite,
    out.reset[:, :, 0],
    2 * num_pairs * cfg.unroll_length,
  )
  return grad, ESState(carried), metrics
