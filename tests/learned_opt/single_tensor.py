"""Single-tensor forms of the per-tensor features, for the tests.

The optimizers compute their features from sums stacked over all tensors
(``features.*_from_sums``); these helpers give one whole tensor's values
through the same code, so the tests can compare against closed forms.
"""

import jax
import jax.numpy as jnp

from learned_opt.features import (
  _NORM_EPS,
  EntrySums,
  clip_limits,
  entry_terms,
  lstm_stats_from_sums,
  scales_from_sums,
  sums_from_terms,
  tensor_features_from_sums,
)


def clip_gradient(
  g: jax.Array, grad_sq_ema: jax.Array, count: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """``g`` clipped elementwise to ``clip_limits`` (one tensor).

  Args:
    g: the raw gradient of one tensor, float32.
    grad_sq_ema: its EMA of ``mean(g^2)`` so far (a scalar).
    count: number of updates done before this one (int32 scalar).

  Returns:
    The clipped gradient and the new EMA.
  """
  limit, ema = clip_limits(jnp.mean(jnp.square(g)), grad_sq_ema, count)
  return jnp.clip(g, -limit, limit), ema


def stack_sums(sums: list[EntrySums]) -> EntrySums:
  """``EntrySums`` of T tensors stacked on a leading axis."""
  return jax.tree.map(lambda *x: jnp.stack(x), *sums)


def entry_sums(
  g: jax.Array, p: jax.Array, m: jax.Array, v: jax.Array
) -> EntrySums:
  """``EntrySums`` of one tensor (or chunk); arguments as ``entry_terms``."""
  terms = entry_terms(g, p, m, v)
  return sums_from_terms(jax.tree.map(lambda x: jnp.sum(x, axis=-1), terms))


def normalization_scales(x: jax.Array) -> jax.Array:
  """Per-feature scales ``rsqrt(1e-5 + mean(x^2))`` of ``[F, N]`` features."""
  return jax.lax.rsqrt(_NORM_EPS + jnp.mean(jnp.square(x), axis=1))


def per_param_feature_scales(
  g: jax.Array, p: jax.Array, m: jax.Array, v: jax.Array
) -> jax.Array:
  """The normalization scales of one tensor's features, unmaterialized.

  Takes the arguments of ``features.per_param_features``; returns the
  ``[3 + 4*D]`` scales of its rows, in the same order.
  """
  return scales_from_sums(stack_sums([entry_sums(g, p, m, v)]), [g.size])[0]


def tensor_features(p: jax.Array, num_tensors: int) -> jax.Array:
  """The 3 tensor features of one whole tensor among ``num_tensors``."""
  sq = jnp.zeros([2]).at[1].set(jnp.sum(jnp.square(p)))
  sums = EntrySums(sq[None], None, None, None)
  return tensor_features_from_sums(sums, [p.size], num_tensors)[0]


def lstm_tensor_stats(
  g: jax.Array, p: jax.Array, m: jax.Array, v: jax.Array
) -> jax.Array:
  """``lstm_stats_from_sums`` of one whole tensor (see there).

  Args:
    g: clipped gradient, float32.
    p: parameter, float32.
    m: first moments, ``(D,) + p.shape``.
    v: second moments, ``(D,) + p.shape``.

  Returns:
    ``[16]`` float32, in the order of ``LSTM_STAT_NAMES[:16]``.
  """
  sums = stack_sums([entry_sums(g, p, m, v)])
  return lstm_stats_from_sums(sums, [jnp.shape(p)])[0]
