"""Reductions every estimator shares: unroll outputs -> meta-losses, metrics.

``unroll`` only simulates; these turn its per-step outputs (``UnrollOut``,
``[T, ...]`` fields) into what the estimators combine: a per-instance
meta-loss, step-wise antithetic differences, the split of a truncation at its
first reset (PES), and the scalar metrics every estimator returns.
"""

import jax
import jax.numpy as jnp

from meta_train import unroll


def mean_loss(out: unroll.UnrollOut) -> jax.Array:
  """Per-instance meta-loss of a truncation: weighted mean over steps [pop]."""
  return jnp.mean(out.loss * out.weight, axis=0)


def antithetic_difference(out: unroll.UnrollOut) -> jax.Array:
  """Per-step ``(loss+ - loss-) * weight`` of pairs: ``[T, pairs]``.

  ``out`` has ``[T, pairs, 2]`` fields. Differencing step by step, before
  the mean over steps, makes identical members give exactly 0 (XLA may
  reduce the two members' sums in different orders) and keeps the digits
  that a difference of two O(1) means would lose.
  """
  diff = out.loss[..., 0] - out.loss[..., 1]
  return diff * out.weight[..., 0]  # members share step and horizon


def segment_means(
  values: jax.Array, reset: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Means over a truncation's steps, split at its first reset.

  Args:
    values: per-step values ``[T, n]``.
    reset: per-step reset flags ``[T, n]``.

  Returns:
    ``(before, after)``, each ``[n]``, summing to ``mean(values, 0)``: the
    part from the run in progress when the truncation started, and the
    part from runs started during it.
  """
  started = jnp.cumsum(reset.astype(jnp.int32), axis=0) > 0  # [T, n]
  terms = values / values.shape[0]
  before = jnp.sum(jnp.where(started, 0.0, terms), axis=0)
  after = jnp.sum(jnp.where(started, terms, 0.0), axis=0)
  return before, after


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``values`` [n] over ``mask`` [n] (0 if nothing is kept)."""
  kept = jnp.sum(mask.astype(jnp.float32))
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(kept, 1.0)


def population_metrics(
  meta_loss: jax.Array, finite: jax.Array, reset: jax.Array, inner_steps: int
) -> dict[str, jax.Array]:
  """The metrics every estimator returns.

  Args:
    meta_loss: per-instance meta-loss [n].
    finite: per-instance finiteness [n].
    reset: per-step reset flags [T, n].
    inner_steps: inner steps executed (both antithetic members counted).

  Returns:
    Scalar arrays: ``meta_loss`` (mean over finite instances),
    ``num_nonfinite``, ``num_resets``, ``inner_steps``.
  """
  return {
    "meta_loss": masked_mean(meta_loss, finite),
    "num_nonfinite": jnp.sum(~finite).astype(jnp.int32),
    "num_resets": jnp.sum(reset).astype(jnp.int32),
    "inner_steps": jnp.asarray(inner_steps, jnp.int32),
  }
