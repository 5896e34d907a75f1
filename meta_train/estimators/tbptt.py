"""Truncated backpropagation through time (TBPTT) meta-gradients.

The gradient of the truncation's mean normalized meta-loss with respect to
theta, by ``jax.grad`` through the ``lax.scan`` of ``unroll_length`` inner
steps. The state carried between truncations is cut with ``stop_gradient``,
so the estimate ignores theta's effect on earlier truncations (biased toward
short horizons, low variance).

Each instance gets its own copy of theta (leaves ``[tasks, ...]``), so the
per-instance gradients come out separately and a non-finite instance is
dropped with a ``where`` on its own gradient: a NaN unroll multiplies its
zero cotangent into NaN, which a masked sum over a shared theta would spread.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train import unroll
from meta_train.estimators import reductions
from task_suite import base as task_base

MetaParams = Any


class TBPTTState(NamedTuple):
  """TBPTT state: the population's inner runs."""

  inner: unroll.InnerState  # leaves [tasks, ...]


def init(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  num_runs: int,
  theta: MetaParams,
  tasks: task_base.Task,
  key: jax.Array,
) -> TBPTTState:
  """Initial TBPTT state: ``num_runs`` staggered inner runs."""
  return TBPTTState(
    unroll.init_states(optimizer_fn, theta, tasks, key, num_runs, cfg)
  )


def per_instance_grads(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  theta: MetaParams,
  tasks: task_base.Task,
  inner: unroll.InnerState,
) -> tuple[MetaParams, unroll.InnerState, unroll.UnrollOut]:
  """Gradients of each instance's truncation meta-loss.

  Returns:
    ``(grads, states, out)``: grads with leaves ``[tasks, ...]`` (NaN where
    the instance was not finite), the new states, and the ``UnrollOut``.
  """
  n = inner.step.shape[0]
  thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (n,) + t.shape), theta)
  inner = jax.lax.stop_gradient(inner)

  def total_loss(thetas):
    states, out = unroll.unroll(optimizer_fn, thetas, tasks, inner, cfg)
    losses = reductions.mean_loss(out)
    return jnp.sum(jnp.where(out.finite, losses, 0.0)), (states, out)

  grads, (states, out) = jax.grad(total_loss, has_aux=True)(thetas)
  return grads, states, out


def estimate(
  optimizer_fn: unroll.OptimizerFn,
  cfg: unroll.UnrollConfig,
  theta: MetaParams,
  tasks: task_base.Task,
  state: TBPTTState,
  key: jax.Array,
) -> tuple[MetaParams, TBPTTState, dict[str, jax.Array]]:
  """One TBPTT estimate over the population (pure; the caller jits).

  Args:
    optimizer_fn: theta -> optax transform.
    cfg: unroll settings.
    theta: meta-parameters.
    tasks: the stacked task.
    state: ``TBPTTState``.
    key: unused (the data keys live in the inner states).

  Returns:
    ``(grad, state, metrics)``.
  """
  del key
  grads, states, out = per_instance_grads(
    optimizer_fn, cfg, theta, tasks, state.inner
  )
  finite = out.finite
  kept = jnp.maximum(jnp.sum(finite.astype(jnp.float32)), 1.0)

  def mean_finite(g):
    mask = finite.reshape(finite.shape + (1,) * (g.ndim - 1))
    return jnp.sum(jnp.where(mask, g, 0.0), axis=0) / kept

  grad = jax.tree.map(mean_finite, grads)
  metrics = reductions.population_metrics(
    reductions.mean_loss(out),
    finite,
    out.reset,
    finite.shape[0] * cfg.unroll_length,
  )
  return grad, TBPTTState(unroll.force_reset(states, ~finite)), metrics
