"""Accumulators and input features of the learned optimizers (DESIGN.md §3).

Everything here is a pure function of one tensor (or of the loss), written so
that the optimizers can compute per-tensor quantities once and never tile them
over the entries of a tensor.

Layouts:
  * a parameter tensor ``p`` of shape ``S`` has accumulators ``m`` and ``v`` of
    shape ``S + (D,)`` (``D`` = number of decays), float32: ``2 * D`` floats
    of state per parameter and nothing else per parameter;
  * per-parameter features are ``[N, F]`` with ``N = p.size`` entries and
    ``F = len(per_param_feature_names(decays))`` columns, *raw* (not yet
    normalized): the normalization of column ``i`` is the per-tensor scale
    ``normalization_scales(x)[i]``, which the optimizers fold into the first
    layer's weights.

Feature widths are computed from the name lists, never typed in.
"""

from collections.abc import Sequence
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_DECAYS = (0.5, 0.9, 0.99, 0.999, 0.9999)
STEP_TIMESCALES = (1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5)
CLIP_DECAY = 0.99  # EMA decay of the per-tensor mean squared gradient
CLIP_MULTIPLE = 10.0  # gradients are clipped to +-CLIP_MULTIPLE * RMS
TRAIN_LOSS_DECAY = 0.9
VALID_LOSS_DECAY = 0.95
MAX_RANK = 4  # the LSTM's shape features cover ranks 0..4

_NORM_EPS = 1e-5  # x * rsqrt(_NORM_EPS + mean(x^2))
_V_EPS = 1e-6  # rsqrt(v + _V_EPS)
_LOG_EPS = 1e-8
# Bias-correction denominators are guarded with a max: under jit XLA's
# algebraic simplifier rewrites `(1 - x) + 1e-8` to `1 - x` in float32.
_MIN_DENOM = 1e-8


def per_param_feature_names(
  decays: Sequence[float] = DEFAULT_DECAYS,
) -> tuple[str, ...]:
  """Names of the per-parameter features, in column order."""
  names = ["g", "p", "log_abs_p"]
  for prefix in ("m", "v", "m_rsqrt_v", "rsqrt_v"):
    names += [f"{prefix}_{d:g}" for d in decays]
  return tuple(names)


STEP_FEATURE_NAMES = tuple(f"sin_t_over_{tau:g}pi" for tau in STEP_TIMESCALES)
TENSOR_FEATURE_NAMES = ("log_num_tensors_minus_1", "log_norm_p", "log_size")
LOSS_FEATURE_NAMES = ("train_loss_z", "valid_loss_z")
LSTM_STAT_NAMES = (
  "log_abs_mean_m",
  "sign_mean_m",
  "log_abs_mean_v",
  "sign_mean_v",
  "log_abs_mean_p",
  "sign_mean_p",
  "log_var_m",
  "log_var_v",
  "log_var_p",
  "log_norm_p",
  "log_norm_g",
  "is_scalar",
  *(f"log_dim{i}_minus_1" for i in range(MAX_RANK)),
  *LOSS_FEATURE_NAMES,
)
# The per-parameter features with the default decays (23 names).
FEATURE_NAMES = per_param_feature_names(DEFAULT_DECAYS)


def clipped_log(x: jax.Array) -> jax.Array:
  """``clip(log(1e-8 + |x|), -5, 5)``, the form of every log feature."""
  return jnp.clip(jnp.log(_LOG_EPS + jnp.abs(x)), -5.0, 5.0)


def bias_correction(decay: float, count: jax.Array) -> jax.Array:
  """``1 - decay**count`` guarded away from zero (see ``_MIN_DENOM``)."""
  return jnp.maximum(1.0 - decay ** count.astype(jnp.float32), _MIN_DENOM)


# ----------------------------------------------------------------- accumulators


def init_moments(p: jax.Array, num_decays: int) -> jax.Array:
  """Zero accumulator of shape ``p.shape + (num_decays,)``, float32."""
  return jnp.zeros(jnp.shape(p) + (num_decays,), jnp.float32)


def update_moments(
  m: jax.Array, v: jax.Array, g: jax.Array, decays: Sequence[float]
) -> tuple[jax.Array, jax.Array]:
  """``m_d = d*m + (1-d)*g`` and ``v_d = d*v + (1-d)*g^2``, no bias correction.

  Args:
    m: first moments, ``g.shape + (D,)``.
    v: second moments, ``g.shape + (D,)``.
    g: the (clipped) gradient, float32.
    decays: the ``D`` decays.

  Returns:
    The new ``(m, v)``.
  """
  g = g[..., None]  # [*S, 1]
  d = jnp.asarray(decays, jnp.float32).reshape((1,) * (g.ndim - 1) + (-1,))
  return d * m + (1.0 - d) * g, d * v + (1.0 - d) * jnp.square(g)


def clip_gradient(
  g: jax.Array, grad_sq_ema: jax.Array, count: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Dynamic clipping: ``g`` to +-10x a running RMS of this tensor's gradients.

  The running RMS is the square root of a bias-corrected EMA (decay 0.99) of
  ``mean(g^2)``, updated with the current gradient first so that the very
  first step has a threshold too.

  Args:
    g: the raw gradient of one tensor, float32.
    grad_sq_ema: its EMA of ``mean(g^2)`` so far (a scalar).
    count: number of updates done before this one (int32 scalar).

  Returns:
    The clipped gradient and the new EMA.
  """
  ema = CLIP_DECAY * grad_sq_ema + (1.0 - CLIP_DECAY) * jnp.mean(jnp.square(g))
  mean_sq = ema / bias_correction(CLIP_DECAY, count + 1)
  # The max keeps the gradient of sqrt finite for all-zero gradients.
  limit = CLIP_MULTIPLE * jnp.sqrt(jnp.maximum(mean_sq, 1e-30))
  return jnp.clip(g, -limit, limit), ema


# ------------------------------------------------------------------- features


def per_param_features(
  g: jax.Array, p: jax.Array, m: jax.Array, v: jax.Array
) -> jax.Array:
  """Raw (unnormalized) per-parameter features of one tensor.

  Args:
    g: clipped gradient, float32, shape ``S``.
    p: parameter, float32, shape ``S``.
    m: first moments, ``S + (D,)``.
    v: second moments, ``S + (D,)``.

  Returns:
    ``[N, 3 + 4*D]`` features in the order of ``per_param_feature_names``.
  """
  n, d = g.size, m.shape[-1]
  m = m.reshape(n, d)
  rsqrt_v = jax.lax.rsqrt(v.reshape(n, d) + _V_EPS)
  g = g.reshape(n, 1)
  p = p.reshape(n, 1)
  log_p = jnp.log(jnp.abs(p) + _LOG_EPS)
  return jnp.concatenate(
    [g, p, log_p, m, v.reshape(n, d), m * rsqrt_v, rsqrt_v], axis=1
  )


def normalization_scales(x: jax.Array) -> jax.Array:
  """Per-column scales ``rsqrt(1e-5 + mean(x^2))`` of ``[N, F]`` features."""
  return jax.lax.rsqrt(_NORM_EPS + jnp.mean(jnp.square(x), axis=0))


def step_features(count: jax.Array) -> jax.Array:
  """``sin(t / (tau * pi))`` for the 11 timescales; ``t`` = updates so far."""
  tau = jnp.asarray(STEP_TIMESCALES, jnp.float32)
  return jnp.sin(count.astype(jnp.float32) / (tau * jnp.pi))


def tensor_features(p: jax.Array, num_tensors: int) -> jax.Array:
  """``[log(#tensors) - 1, clipped log ||p||, log(#entries)]`` (float32)."""
  return jnp.stack(
    [
      jnp.asarray(math.log(num_tensors) - 1.0, jnp.float32),
      clipped_log(jnp.linalg.norm(p.ravel())),
      jnp.asarray(math.log(p.size), jnp.float32),
    ]
  )


def lstm_tensor_stats(
  g: jax.Array, p: jax.Array, m: jax.Array, v: jax.Array
) -> jax.Array:
  """The 16 per-tensor statistics fed to the LSTM (loss features excluded).

  Means and variances of ``m`` and ``v`` are taken over all entries and all
  decays. A parameter counts as scalar when it has one entry. Shape features
  are ``log(dim) - 1`` per axis, padded with zeros to rank 4.

  Args:
    g: clipped gradient, float32.
    p: parameter, float32.
    m: first moments, ``p.shape + (D,)``.
    v: second moments, ``p.shape + (D,)``.

  Returns:
    ``[16]`` float32, in the order of ``LSTM_STAT_NAMES[:16]``.
  """
  stats = []
  for x in (m, v, p):
    mean = jnp.mean(x)
    stats += [clipped_log(mean), jnp.sign(mean)]
  stats += [clipped_log(jnp.var(x)) for x in (m, v, p)]
  stats += [
    clipped_log(jnp.linalg.norm(p.ravel())),
    clipped_log(jnp.linalg.norm(g.ravel())),
  ]
  shape = jnp.shape(p)
  dims = [math.log(s) - 1.0 for s in shape] + [0.0] * (MAX_RANK - len(shape))
  head = jnp.stack(stats)
  tail = jnp.asarray([float(p.size == 1), *dims], jnp.float32)
  return jnp.concatenate([head, tail])


# ---------------------------------------------------------------- loss features


class LossState(NamedTuple):
  """Bias-corrected EMAs of the losses (all scalars, float32).

  The EMAs are stored bias-corrected, updated as running weighted averages
  ``x_hat += w_n * (x - x_hat)`` with ``w_n = (1 - d) / (1 - d^n)``: this is
  the same quantity as ``ema / (1 - d^n)``, but ``w_1 = 1`` exactly, so the
  first z-score is exactly 0 instead of float32 rounding noise amplified by a
  near-zero variance, and the variance (an EMA of squared deviations from the
  current mean) suffers no ``E[x^2] - E[x]^2`` cancellation.
  """

  count: jax.Array  # [] int32, training losses seen
  mean: jax.Array  # [] bias-corrected EMA (decay 0.9) of the training loss
  var: jax.Array  # [] bias-corrected EMA (0.9) of its squared deviation
  valid_count: jax.Array  # [] int32, validation losses seen
  valid: jax.Array  # [] bias-corrected EMA (decay 0.95) of the valid. loss


def init_loss_state() -> LossState:
  """All-zero loss statistics."""
  zero = jnp.zeros([], jnp.float32)
  izero = jnp.zeros([], jnp.int32)
  return LossState(izero, zero, zero, izero, zero)


def _ema_weight(decay: float, count: jax.Array) -> jax.Array:
  """``(1 - d) / (1 - d^(count + 1))``, exactly 1 for the first value."""
  w = (1.0 - decay) / bias_correction(decay, count + 1)
  return jnp.where(count == 0, 1.0, w)


def update_loss_state(
  state: LossState, value: jax.Array, valid_value: jax.Array | None
) -> LossState:
  """Folds in this step's training loss and (unless NaN/None) validation loss.

  Args:
    state: the statistics so far.
    value: the training loss (scalar).
    valid_value: the validation loss, or None/NaN when there is none.

  Returns:
    The new statistics.
  """
  value = jnp.asarray(value, jnp.float32)
  w = _ema_weight(TRAIN_LOSS_DECAY, state.count)
  mean = state.mean + w * (value - state.mean)
  var = state.var + w * (jnp.square(value - mean) - state.var)
  valid_count, valid = state.valid_count, state.valid
  if valid_value is not None:
    vv = jnp.asarray(valid_value, jnp.float32)
    seen = ~jnp.isnan(vv)
    wv = _ema_weight(VALID_LOSS_DECAY, valid_count)
    # where() on the input too, so a NaN never reaches the EMA or its grads.
    new_valid = valid + wv * (jnp.where(seen, vv, valid) - valid)
    valid = jnp.where(seen, new_valid, valid)
    valid_count = valid_count + seen.astype(jnp.int32)
  return LossState(state.count + 1, mean, var, valid_count, valid)


def loss_features(state: LossState, value: jax.Array) -> jax.Array:
  """``[2]``: train and validation loss z-scored by the train EMA, in [-5, 5].

  Args:
    state: the loss state *after* ``update_loss_state`` folded in ``value``
      (so the first step's train feature is exactly 0).
    value: this step's training loss.

  Returns:
    ``[train_z, valid_z]``; the validation feature is 0 until a validation
    loss has been seen.
  """
  inv_std = jax.lax.rsqrt(state.var + 1e-8)
  value = jnp.asarray(value, jnp.float32)
  train_z = jnp.clip((value - state.mean) * inv_std, -5.0, 5.0)
  valid_z = jnp.clip((state.valid - state.mean) * inv_std, -5.0, 5.0)
  return jnp.stack([train_z, jnp.where(state.valid_count > 0, valid_z, 0.0)])
