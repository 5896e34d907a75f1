"""HierarchicalLOpt: interface, invariances, step rule, LSTM path, reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
import test_utils

from learned_opt import hierarchical

# Chunks of 4 entries, so the example tensors cover every path: 12 entries
# (a loop over chunks), 6 (one chunk and a remainder), and small tensors
# packed together (3 + 1 entries, not adjacent in leaf order).
LOPT = hierarchical.HierarchicalLOpt(chunk_size=4)
THETA = LOPT.init(jax.random.key(0))
PARAMS = jax.tree.map(jnp.asarray, reference.example_params())
NAN = float("nan")


@jax.jit
def _update(theta, grads, state, params, value, valid_value):
  tx = LOPT.optimizer(theta)
  return tx.update(grads, state, params, value=value, valid_value=valid_value)


@jax.jit
def _init(theta, params):
  return LOPT.optimizer(theta).init(params)


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  keys = jax.tree.unflatten(jax.tree.structure(params), list(keys))
  return jax.tree.map(
    lambda p, k: jax.random.normal(k, jnp.shape(p), p.dtype), params, keys
  )


def _sensitive_theta():
  """THETA with a large last MLP layer, so every path moves the updates."""
  theta = jax.tree.map(lambda x: x, THETA)
  theta["mlp"][-1] = jax.tree.map(lambda x: 100.0 * x, theta["mlp"][-1])
  theta["mlp"][-1]["b"] = (
    theta["mlp"][-1]["b"].at[:2].set(jnp.asarray([0.3, -2.0]))
  )
  k1, k2 = jax.random.split(jax.random.key(7))
  theta["init"]["mlp_avg"] = jax.random.normal(k1, [LOPT.mlp_to_lstm])
  theta["init"]["global"] = jax.random.normal(k2, [LOPT.num_global_features])
  return theta


def test_meta_param_count_is_exact():
  mlp = (54 * 32 + 32) + (32 * 32 + 32) + (32 * 18 + 18)
  lstm = 52 * 256 + 64 * 256 + 256
  heads = (64 * 17 + 17) + (64 * 18 + 18)
  initial = 64 + 64 + 18 + 16
  assert LOPT.num_mlp_inputs == 54 and LOPT.num_lstm_inputs == 52
  assert LOPT.num_meta_params() == mlp + lstm + heads + initial == 35799
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(THETA))


def test_config_rebuilds_the_optimizer():
  config = LOPT.config()
  assert config["architecture"] == "hierarchical"
  rebuilt = type(LOPT)(**config["kwargs"])
  assert rebuilt == LOPT and hash(rebuilt) == hash(LOPT)
  small = hierarchical.HierarchicalLOpt(decays=(0.9, 0.99), lstm_hidden_size=8)
  assert small.num_mlp_inputs == 3 + 4 * 2 + 11 + 3 + 17
  shapes = jax.eval_shape(small.init, jax.random.key(0))
  assert shapes["lstm"]["wx"].shape == (18 + 18 + 16, 4 * 8)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))


def test_structure_shapes_dtypes_and_first_jitted_update():
  state = _init(THETA, PARAMS)
  grads = _grads(PARAMS, 1)
  grads["nested"]["conv"] = jnp.zeros_like(grads["nested"]["conv"])
  updates, new_state = _update(THETA, grads, state, PARAMS, 2.0, NAN)
  test_utils.assert_tree_shapes_dtypes_equal(updates, PARAMS)
  test_utils.assert_tree_all_finite(updates)
  test_utils.assert_tree_all_finite(new_state)
  test_utils.assert_tree_shapes_dtypes_equal(new_state, state)
  n = sum(np.size(p) for p in jax.tree.leaves(PARAMS))
  acc_bytes = sum(x.nbytes for x in jax.tree.leaves((state.m, state.v)))
  assert acc_bytes == 10 * 4 * n
  num_tensors = len(jax.tree.leaves(PARAMS))
  assert new_state.lstm_h.shape == (num_tensors, 64)
  assert new_state.mlp_avg.shape == (num_tensors, 16)
  # No validation loss given (NaN): the validation EMA stays untouched.
  assert int(new_state.loss.valid_count) == 0
  assert float(new_state.loss.valid) == 0.0


def test_validation_loss_updates_only_its_ema():
  state = _init(THETA, PARAMS)
  grads = _grads(PARAMS, 1)
  _, s1 = _update(THETA, grads, state, PARAMS, 2.0, 3.0)
  _, s2 = _update(THETA, grads, s1, PARAMS, 2.0, NAN)
  assert int(s1.loss.valid_count) == 1 == int(s2.loss.valid_count)
  # Bias-corrected: after one validation loss the EMA is that loss.
  assert float(s1.loss.valid) == 3.0
  assert float(s2.loss.valid) == float(s1.loss.valid)
  assert int(s2.loss.count) == 2


def test_a_non_finite_loss_does_not_poison_the_state():
  # Loss EMAs that took in one NaN or inf would make every later update NaN,
  # even where the step itself is skipped (optax.apply_if_finite only looks
  # at the gradients).
  state = _init(THETA, PARAMS)
  grads = _grads(PARAMS, 1)
  _, s1 = _update(THETA, grads, state, PARAMS, 2.0, 3.0)
  for bad in (NAN, float("inf")):
    updates, s2 = _update(THETA, grads, s1, PARAMS, bad, bad)
    test_utils.assert_tree_all_finite(updates)
    test_utils.assert_tree_all_finite(s2)
    jax.tree.map(np.testing.assert_array_equal, s2.loss, s1.loss)
    updates, s3 = _update(THETA, grads, s2, PARAMS, 2.0, NAN)
    test_utils.assert_tree_all_finite(updates)
    assert int(s3.loss.count) == 2


def test_apply_if_finite_skips_a_step_with_non_finite_gradients():
  # The README's remedy for NaN gradients: the step is skipped and the
  # learned optimizer's state is left as it was.
  tx = optax.apply_if_finite(LOPT.optimizer(THETA), max_consecutive_errors=2)
  update = jax.jit(lambda g, s, v: tx.update(g, s, PARAMS, value=v))
  state = tx.init(PARAMS)
  grads = _grads(PARAMS, 1)
  _, s1 = update(grads, state, 2.0)
  bad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(NAN), grads)
  updates, s2 = update(bad, s1, 2.0)
  assert int(s2.notfinite_count) == 1
  jax.tree.map(np.testing.assert_array_equal, s2.inner_state, s1.inner_state)
  assert all(not np.any(u) for u in jax.tree.leaves(updates))
  updates, s3 = update(grads, s2, 2.0)
  test_utils.assert_tree_all_finite(updates)
  assert int(s3.notfinite_count) == 0


def test_update_without_value_raises():
  tx = LOPT.optimizer(THETA)
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="value=loss"):
    tx.update(params, tx.init(params), params)


def test_bad_params_raise():
  tx = LOPT.optimizer(THETA)
  with pytest.raises(ValueError, match=r"\['w5'\].*rank 5"):
    tx.init({"ok": jnp.zeros(2), "w5": jnp.zeros((1, 1, 1, 1, 2))})
  with pytest.raises(ValueError, match="empty"):
    tx.init({})
  with pytest.raises(ValueError, match="bool"):
    tx.init({"mask": jnp.zeros(2, bool)})


def test_step_rule_is_wired_as_specified():
  c0, c1 = -0.4, 900.0
  theta = jax.tree.map(lambda x: x, THETA)
  last = theta["mlp"][-1]
  last["w"] = jnp.zeros_like(last["w"])
  last["b"] = jnp.zeros_like(last["b"]).at[:2].set(jnp.asarray([c0, c1]))
  state = _init(theta, PARAMS)
  updates, new_state = _update(
    theta, _grads(PARAMS, 2), state, PARAMS, 1.0, NAN
  )
  expected = -(c0 * np.exp(0.001 * c1) * 0.001)
  for u in jax.tree.leaves(updates):
    np.testing.assert_allclose(np.asarray(u, np.float32), expected, rtol=1e-2)
  np.testing.assert_allclose(updates["scalar"], expected, rtol=1e-6)
  # The averaged outputs o2..o17 are the (zero) last-layer bias.
  np.testing.assert_array_equal(new_state.mlp_avg, 0.0)


def test_matches_reference_over_several_steps():
  theta = _sensitive_theta()
  state = _init(theta, PARAMS)
  ref_state = reference.init_state(LOPT, theta, jax.tree.leaves(PARAMS))
  params = PARAMS
  valid = [NAN, 1.5, NAN, 0.7]
  for step in range(4):
    grads = _grads(params, 20 + step)
    value = 2.0 / (1 + step)
    updates, state = _update(theta, grads, state, params, value, valid[step])
    ref_updates, ref_state = reference.update(
      LOPT, theta, ref_state, jax.tree.leaves(grads), jax.tree.leaves(params),
      value, valid[step],
    )  # fmt: skip
    for u, r in zip(jax.tree.leaves(updates), ref_updates):
      scale = np.max(np.abs(r))
      assert scale > 0
      tol = 1e-4 if u.dtype == jnp.float32 else 1e-2  # bfloat16 rounding
      u = np.asarray(u, np.float64)
      np.testing.assert_allclose(u, r, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(state.lstm_h, ref_state["h"], atol=1e-5)
    np.testing.assert_allclose(state.mlp_avg, ref_state["mlp_avg"], atol=1e-4)
    np.testing.assert_allclose(
      state.global_features, ref_state["global"], atol=1e-5
    )
    params = optax.apply_updates(params, updates)


def test_lstm_path_changes_the_updates():
  # Same step, different LSTM memory: the update must differ.
  theta = _sensitive_theta()
  state = _init(theta, PARAMS)
  grads = _grads(PARAMS, 4)
  u1, _ = _update(theta, grads, state, PARAMS, 1.0, NAN)
  state2 = state._replace(lstm_c=state.lstm_c + 1.0)
  u2, _ = _update(theta, grads, state2, PARAMS, 1.0, NAN)
  w1, w2 = u1["mlp/~/linear_0"]["w"], u2["mlp/~/linear_0"]["w"]
  assert not np.allclose(w1, w2)


_SMALL = {"w": jnp.ones((3, 2)), "s": jnp.ones([])}


def test_vmap_over_theta_population():
  thetas = jax.vmap(LOPT.init)(jax.random.split(jax.random.key(1), 3))
  states = jax.vmap(_init, in_axes=(0, None))(thetas, _SMALL)
  updates, new_state = jax.vmap(
    _update, in_axes=(0, None, 0, None, None, None)
  )(thetas, _grads(_SMALL, 3), states, _SMALL, 1.0, 2.0)
  test_utils.assert_tree_all_finite(updates)
  assert updates["w"].shape == (3, 3, 2)
  assert not np.allclose(updates["w"][0], updates["w"][1])
  assert new_state.lstm_h.shape == (3, 2, 64)


def _quadratic_unroll(theta, num_steps=10):
  """Final loss of a tiny quadratic trained for num_steps (for grad tests)."""
  target = {
    "w": jnp.full((3, 4), 0.5),
    "b": jnp.full((2,), -1.0),  # b and c: a pack of small tensors
    "c": jnp.full((2,), 2.0),
  }
  loss_fn = lambda p: sum(jnp.sum(jnp.square(p[k] - target[k])) for k in target)
  tx = LOPT.optimizer(theta)

  def step(carry, i):
    params, state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    valid = jnp.where(i % 3 == 0, 1.1 * loss, jnp.nan)
    updates, state = tx.update(
      grads, state, params, value=loss, valid_value=valid
    )
    return (optax.apply_updates(params, updates), state), loss

  params = jax.tree.map(jnp.zeros_like, target)
  init = (params, tx.init(params))
  (params, _), _ = jax.lax.scan(step, init, jnp.arange(num_steps))
  return loss_fn(params)


def test_grad_wrt_theta_through_unroll():
  loss, grads = jax.jit(jax.value_and_grad(_quadratic_unroll))(THETA)
  assert np.isfinite(float(loss))
  test_utils.assert_tree_all_finite(grads)
  assert float(optax.tree.norm(grads["lstm"])) > 0
  assert float(optax.tree.norm(grads["init"])) > 0


def test_donated_state_is_updated_in_place_and_theta_survives():
  # A jitted step with the state donated must not hold a second copy of the
  # accumulators: with [D, *shape] accumulator leaves XLA:CPU wrote the new
  # ones to a temporary as large as the state and then copied them over.
  # Nor may donating the state delete any of theta's buffers.
  lopt = hierarchical.HierarchicalLOpt(chunk_size=256)
  theta = lopt.init(jax.random.key(0))
  tx = lopt.optimizer(theta)
  params = {"w": jnp.ones((16, 64, 32)), "b": jnp.ones((16,))}
  state = tx.init(params)

  def step(params, state):
    updates, state = tx.update(params, state, params, value=1.0)
    return optax.apply_updates(params, updates), state

  jitted = jax.jit(step, donate_argnums=(0, 1))
  memory = jitted.lower(params, state).compile().memory_analysis()
  if memory is None:
    pytest.skip("this backend reports no memory analysis")
  accumulator_bytes = sum(x.nbytes for x in jax.tree.leaves((state.m, state.v)))
  assert memory.alias_size_in_bytes >= accumulator_bytes
  assert memory.temp_size_in_bytes < accumulator_bytes / 2
  jitted(params, state)
  assert not any(x.is_deleted() for x in jax.tree.leaves(theta))
