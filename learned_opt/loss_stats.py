"""The loss statistics of ``HierarchicalLOpt``: EMAs and z-scored features.

The LSTM sees this step's training loss and the latest validation loss,
z-scored by bias-corrected EMAs of the training loss
(``features.LOSS_FEATURE_NAMES``). Pure functions of a ``LossState``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from learned_opt import features

TRAIN_LOSS_DECAY = 0.9
VALID_LOSS_DECAY = 0.95


class LossState(NamedTuple):
  """Bias-corrected EMAs of the losses (all scalars, float32).

  The EMAs are stored bias-corrected, updated as running weighted averages
  ``x_hat += w_n * (x - x_hat)`` with ``w_n = (1 - d) / (1 - d^n)``: this is
  the same quantity as ``ema / (1 - d^n)``, but ``w_1 = 1`` exactly, so the
  first z-score is exactly 0 instead of float32 rounding noise amplified by a
  near-zero variance, and the variance (an EMA of squared deviations from the
  current mean) suffers no ``E[x^2] - E[x]^2`` cancellation.
  """

  count: jax.Array  # [] int32, finite training losses seen
  mean: jax.Array  # [] bias-corrected EMA (decay 0.9) of the training loss
  var: jax.Array  # [] bias-corrected EMA (0.9) of its squared deviation
  valid_count: jax.Array  # [] int32, validation losses seen
  valid: jax.Array  # [] bias-corrected EMA (decay 0.95) of the valid. loss


def init_loss_state() -> LossState:
  """All-zero loss statistics."""
  # Distinct buffers (not one shared zero), so callers may donate the state.
  zero = lambda: jnp.zeros([], jnp.float32)
  izero = lambda: jnp.zeros([], jnp.int32)
  return LossState(izero(), zero(), zero(), izero(), zero())


def _ema_weight(decay: float, count: jax.Array) -> jax.Array:
  """``(1 - d) / (1 - d^(count + 1))``, exactly 1 for the first value."""
  w = (1.0 - decay) / features.bias_correction(decay, count + 1)
  return jnp.where(count == 0, 1.0, w)


def update_loss_state(
  state: LossState, value: jax.Array, valid_value: jax.Array | None
) -> LossState:
  """Folds in this step's training and (if given) validation loss.

  A non-finite loss is not folded in: one NaN or inf would otherwise stay in
  the EMAs and make every later update NaN, even with the step itself
  skipped (e.g. by ``optax.apply_if_finite``, which only checks gradients).

  Args:
    state: the statistics so far.
    value: the training loss (scalar).
    valid_value: the validation loss, or None/NaN when there is none.

  Returns:
    The new statistics.
  """
  value = jnp.asarray(value, jnp.float32)
  ok = jnp.isfinite(value)
  # where() on the input too, so a non-finite loss never reaches the EMAs
  # or their gradients.
  x = jnp.where(ok, value, state.mean)
  w = _ema_weight(TRAIN_LOSS_DECAY, state.count)
  mean = state.mean + w * (x - state.mean)
  var = jnp.where(ok, state.var + w * (jnp.square(x - mean) - state.var),
                  state.var)  # fmt: skip
  valid_count, valid = state.valid_count, state.valid
  if valid_value is not None:
    vv = jnp.asarray(valid_value, jnp.float32)
    seen = jnp.isfinite(vv)
    wv = _ema_weight(VALID_LOSS_DECAY, valid_count)
    # where() on the input too, so it never reaches the EMA or its grads.
    new_valid = valid + wv * (jnp.where(seen, vv, valid) - valid)
    valid = jnp.where(seen, new_valid, valid)
    valid_count = valid_count + seen.astype(jnp.int32)
  count = state.count + ok.astype(jnp.int32)
  return LossState(count, mean, var, valid_count, valid)


def loss_features(state: LossState, value: jax.Array) -> jax.Array:
  """``[2]``: train and validation loss z-scored by the train EMA, in [-5, 5].

  Args:
    state: the loss state *after* ``update_loss_state`` folded in ``value``
      (so the first step's train feature is exactly 0).
    value: this step's training loss.

  Returns:
    ``[train_z, valid_z]``; the validation feature is 0 until a validation
    loss has been seen. A NaN or +inf training loss gives +5 (a diverging
    run), -inf gives -5.
  """
  inv_std = jax.lax.rsqrt(state.var + 1e-8)
  value = jnp.asarray(value, jnp.float32)
  ok = jnp.isfinite(value)
  train_z = jnp.where(
    ok,
    jnp.clip((jnp.where(ok, value, state.mean) - state.mean) * inv_std, -5, 5),
    jnp.where(value == -jnp.inf, -5.0, 5.0),
  )
  valid_z = jnp.clip((state.valid - state.mean) * inv_std, -5.0, 5.0)
  return jnp.stack([train_z, jnp.where(state.valid_count > 0, valid_z, 0.0)])
