"""Persistent evolution strategies (PES, Vicol et al. 2021).

Like antithetic truncated ES, but each member of a pair keeps its own inner
state across truncations, and the pair remembers the sum ``xi`` of the noise
directions it used since its current inner run started. With ``z_t`` the
direction of truncation ``t``, the estimate of pair ``p`` is

  (L+ - L-) / (2 std) * (xi + z_t),    then xi <- xi + z_t

(their estimator with antithetic sampling), which is unbiased for the
gradient of the whole inner run's loss: the loss of truncation ``t`` depends
on every perturbation applied since the run started, and ``xi`` credits
them all.
When a run ends inside a truncation, the losses of the steps after the reset
belong to the new run and are credited to ``z_t`` only, and ``xi`` restarts
from ``z_t``. Its variance grows with the run length (DESIGN.md §8: 8-30x
that of truncated ES at equal population).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train import unroll
from meta_train.estimators import es, reductions
from task_suite import base as task_base

MetaParams = Any


class PESState(NamedTuple):
  """PES state: both members' inner runs and the accumulated directions."""

  inner: unroll.InnerState  # leaves [pairs, 2, ...]
  accum: MetaParams  # leaves [pairs, ...], sum of z since the run started


def init(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  num_pairs: int,
  theta: MetaParams,
  tasks: task_base.Task,
  key: jax.Array,
) -> PESState:
  """Initial PES state: ``num_pairs`` staggered runs, zero accumulators."""
  states = unroll.init_states(optimizer_fn, theta, tasks, key, num_pairs, cfg)
  both = es.both_members(states)
  accum = jax.tree.map(
    lambda t: jnp.zeros((num_pairs,) + t.shape, t.dtype), theta
  )
  return PESState(both, accum)


def estimate(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  std: float,
  theta: MetaParams,
  tasks: task_base.Task,
  state: PESState,
  key: jax.Array,
) -> tuple[MetaParams, PESState, dict[str, jax.Array]]:
  """One PES estimate over all pairs (pure; the caller jits).

  Arguments as ``es.estimate``; ``state`` is a ``PESState``.

  Returns:
    ``(grad, state, metrics)``.
  """
  num_pairs = state.inner.step.shape[0]
  z = es.sample_noise(key, theta, num_pairs)
  states, out = es.antithetic_unroll(
    optimizer_fn, cfg, es.perturb(theta, z, std), tasks, state.inner
  )
  # Loss differences of the run in progress, and of runs started since.
  before, after = reductions.segment_means(
    reductions.antithetic_difference(out), out.reset[:, :, 0]
  )  # [pairs] each
  finite = jnp.all(out.finite, axis=1)  # [pairs]
  kept = jnp.maximum(jnp.sum(finite.astype(jnp.float32)), 1.0)
  coef = lambda delta: jnp.where(finite, delta / (2.0 * std), 0.0) / kept
  c_before, c_after = coef(before), coef(after)
  grad = jax.tree.map(
    lambda a, b: a + b,
    es.weighted_sum(c_before, state.accum),
    es.weighted_sum(c_before + c_after, z),
  )
  # Both members share key, horizon and step, so they restart together.
  restarted = jnp.any(out.reset[:, :, 0], axis=0)  # [pairs]

  def new_accum(a, zl):
    shape = (num_pairs,) + (1,) * (a.ndim - 1)
    a = jnp.where(restarted.reshape(shape), zl, a + zl)
    return jnp.where(finite.reshape(shape), a, 0.0)

  accum = jax.tree.map(new_accum, state.accum, z)
  dropped = jnp.broadcast_to(~finite[:, None], (num_pairs, 2))
  metrics = reductions.population_metrics(
    jnp.mean(reductions.mean_loss(out), axis=1),
    finite,
    out.reset[:, :, 0],
    2 * num_pairs * cfg.unroll_length,
  )
  return grad, PESState(unroll.force_reset(states, dropped), accum), metrics
