"""Accumulators, clipping, features: closed forms, names, widths, finiteness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import single_tensor

from learned_opt import features, loss_stats

DECAYS = features.DEFAULT_DECAYS


@jax.jit
def _all_features(g, p, m, v, grad_sq_ema, count):
  """Everything one tensor contributes, as the optimizers compute it."""
  g, ema = single_tensor.clip_gradient(g, grad_sq_ema, count)
  m, v = features.update_moments(m, v, g, DECAYS)
  raw = features.per_param_features(g, p, m, v)
  return {
    "g": g,
    "ema": ema,
    "m": m,
    "v": v,
    "raw": raw,
    "normalized": raw * single_tensor.normalization_scales(raw)[:, None],
    "fused_scales": single_tensor.per_param_feature_scales(g, p, m, v),
    "scales": single_tensor.normalization_scales(raw),
    "stats": single_tensor.lstm_tensor_stats(g, p, m, v),
    "tensor": single_tensor.tensor_features(p, 3),
    "step": features.step_features(count),
  }


def _inputs(shape, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  g = jnp.asarray(scale * rng.normal(size=shape), jnp.float32)
  p = jnp.asarray(rng.normal(size=shape), jnp.float32)
  zeros = features.init_moments(p, len(DECAYS))
  return g, p, zeros, zeros, jnp.zeros([]), jnp.zeros([], jnp.int32)


def test_names_and_widths_are_consistent():
  assert len(features.FEATURE_NAMES) == 23
  assert len(set(features.FEATURE_NAMES)) == 23
  assert len(features.STEP_FEATURE_NAMES) == 11
  assert len(features.TENSOR_FEATURE_NAMES) == 3
  assert len(features.LSTM_STAT_NAMES) == 18
  for decays in [DECAYS, (0.9,), (0.5, 0.99, 0.999)]:
    names = features.per_param_feature_names(decays)
    p = jax.ShapeDtypeStruct((4, 3), jnp.float32)
    acc = jax.ShapeDtypeStruct((len(decays), 4, 3), jnp.float32)
    out = jax.eval_shape(features.per_param_features, p, p, acc, acc)
    assert out.shape == (len(names), 12) == (3 + 4 * len(decays), 12)
    scales = jax.eval_shape(
      single_tensor.per_param_feature_scales, p, p, acc, acc
    )
    assert scales.shape == (len(names),)
  p = jax.ShapeDtypeStruct((2, 5), jnp.float32)
  acc = jax.ShapeDtypeStruct((5, 2, 5), jnp.float32)
  stats = jax.eval_shape(single_tensor.lstm_tensor_stats, p, p, acc, acc)
  loss = loss_stats.loss_features(loss_stats.init_loss_state(), 0.0)
  assert stats.shape[0] + loss.shape[0] == len(features.LSTM_STAT_NAMES)


def test_moments_match_closed_form():
  shape = (3, 2)
  rng = np.random.default_rng(0)
  gs = [jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(5)]
  update = jax.jit(lambda m, v, g: features.update_moments(m, v, g, DECAYS))
  m = v = features.init_moments(gs[0], len(DECAYS))
  for g in gs:
    m, v = update(m, v, g)
  d = np.asarray(DECAYS, np.float32).astype(np.float64)
  k = len(gs)
  w = [(1 - d) * d ** (k - 1 - i) for i in range(k)]
  m_ref = sum(wi * np.asarray(g)[..., None] for wi, g in zip(w, gs))
  v_ref = sum(wi * np.asarray(g)[..., None] ** 2 for wi, g in zip(w, gs))
  assert m.shape == v.shape == (len(DECAYS),) + shape  # decay-major
  np.testing.assert_allclose(np.moveaxis(m, 0, -1), m_ref, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.moveaxis(v, 0, -1), v_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 1, 4)])
def test_first_jitted_features_are_finite_with_documented_columns(shape):
  out = _all_features(*_inputs(shape, 1))
  for name, x in out.items():
    assert bool(jnp.all(jnp.isfinite(x))), name
  n = int(np.prod(shape))
  assert out["raw"].shape == (len(features.FEATURE_NAMES), n)
  cols = dict(zip(features.FEATURE_NAMES, np.asarray(out["raw"])))
  g = np.asarray(out["g"]).ravel()
  np.testing.assert_allclose(cols["g"], g, rtol=1e-6)
  np.testing.assert_allclose(cols["m_0.9"], 0.1 * g, rtol=1e-5)
  np.testing.assert_allclose(cols["v_0.99"], 0.01 * g**2, rtol=1e-4)
  np.testing.assert_allclose(
    cols["rsqrt_v_0.5"], 1 / np.sqrt(0.5 * g**2 + 1e-6), rtol=1e-4
  )
  # Per-tensor normalization x * rsqrt(1e-5 + mean(x^2)): a column's mean
  # square becomes r / (1e-5 + r), r its raw mean square (~1 unless tiny).
  r = np.mean(np.asarray(out["raw"], np.float64) ** 2, axis=1)
  ms = np.mean(np.asarray(out["normalized"], np.float64) ** 2, axis=1)
  np.testing.assert_allclose(ms, r / (1e-5 + r), rtol=1e-4, atol=1e-7)
  # The fused scales (no [F, N] array) equal those of the materialized ones.
  np.testing.assert_allclose(out["fused_scales"], out["scales"], rtol=1e-5)


def test_degenerate_inputs_stay_finite():
  for g_scale, p in [(0.0, 0.0), (1e15, 1e15), (1e-30, 1e-30)]:
    g, _, m, v, ema, count = _inputs((3, 2), 2, g_scale)
    p = jnp.full((3, 2), p, jnp.float32)
    out = _all_features(g, p, m, v, ema, count)
    for name, x in out.items():
      assert bool(jnp.all(jnp.isfinite(x))), (g_scale, name)


def test_clipping_uses_running_rms():
  g, p, m, v, _, _ = _inputs((100,), 3)
  # A history of unit-RMS gradients, then one huge outlier entry.
  ema, count = jnp.ones([]), jnp.asarray(50, jnp.int32)
  spiky = g.at[0].set(1e6)
  out = _all_features(spiky, p, m, v, ema * (1 - 0.99**50), count)
  corrected = (0.99 * (1 - 0.99**50) + 0.01 * np.mean(np.square(spiky))) / (
    1 - 0.99**51
  )
  np.testing.assert_allclose(out["g"][0], 10 * np.sqrt(corrected), rtol=1e-4)
  np.testing.assert_array_equal(out["g"][1:], g[1:])


def test_step_and_tensor_features():
  t = jnp.asarray(1234, jnp.int32)
  tau = np.asarray([1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5])
  np.testing.assert_allclose(
    features.step_features(t), np.sin(1234 / (tau * np.pi)), atol=2e-4
  )
  p = jnp.full((2, 8), 0.5)
  np.testing.assert_allclose(
    single_tensor.tensor_features(p, 4), [np.log(4) - 1, np.log(2.0), np.log(16)],
    rtol=1e-6,
  )  # fmt: skip
  stats = single_tensor.lstm_tensor_stats(
    p, p, jnp.zeros((5, 2, 8)), jnp.zeros((5, 2, 8))
  )
  names = features.LSTM_STAT_NAMES
  np.testing.assert_allclose(stats[names.index("log_dim1_minus_1")],
                             np.log(8) - 1, rtol=1e-6)  # fmt: skip
  assert stats[names.index("log_dim3_minus_1")] == 0.0
  assert stats[names.index("is_scalar")] == 0.0


def test_loss_features():
  update = jax.jit(loss_stats.update_loss_state)
  feats = jax.jit(loss_stats.loss_features)
  state = loss_stats.init_loss_state()
  state = update(state, 3.0, jnp.nan)
  np.testing.assert_array_equal(feats(state, 3.0), [0.0, 0.0])
  losses = [2.5, 2.0, 1.8, 1.7]
  for x in losses:
    state = update(state, x, jnp.nan)
  z_train, z_valid = np.asarray(feats(state, 1.7))
  assert -5 <= z_train < 0 and z_valid == 0.0
  state = update(state, 1.6, 100.0)
  z_train, z_valid = np.asarray(feats(state, 1.6))
  assert z_valid == 5.0  # a validation loss far above the train EMA, clipped
  assert int(state.valid_count) == 1 and int(state.count) == 6


def test_non_finite_losses_are_not_folded_in():
  update = jax.jit(loss_stats.update_loss_state)
  feats = jax.jit(loss_stats.loss_features)
  state = loss_stats.init_loss_state()
  for x in (3.0, 2.5, 2.0):
    state = update(state, x, 2.2)
  for bad, z_train in ((jnp.nan, 5.0), (jnp.inf, 5.0), (-jnp.inf, -5.0)):
    after = update(state, bad, bad)
    jax.tree.map(np.testing.assert_array_equal, after, state)
    z = np.asarray(feats(after, bad))
    assert z[0] == z_train and z[1] == np.asarray(feats(state, 2.0))[1]
    # No NaN reaches the gradients either (they flow into theta's).
    grad = jax.grad(lambda v: feats(update(state, v, None), v)[0])(bad)
    assert float(grad) == 0.0
