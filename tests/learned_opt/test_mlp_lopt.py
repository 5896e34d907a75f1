"""MLPLOpt: interface, invariances, step rule, agreement with the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
import test_utils

from learned_opt import mlp_lopt

# Chunks of 4 entries, so the example tensors cover every path: 12 entries
# (a loop over chunks), 6 (one chunk and a remainder), and small tensors
# packed together (3 + 1 entries, not adjacent in leaf order).
LOPT = mlp_lopt.MLPLOpt(chunk_size=4)
THETA = LOPT.init(jax.random.key(0))
PARAMS = jax.tree.map(jnp.asarray, reference.example_params())


@jax.jit
def _update(theta, grads, state, params, value):
  return LOPT.optimizer(theta).update(grads, state, params, value=value)


def _init(params):
  return LOPT.optimizer(THETA).init(params)


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  keys = jax.tree.unflatten(jax.tree.structure(params), list(keys))
  return jax.tree.map(
    lambda p, k: jax.random.normal(k, jnp.shape(p), p.dtype), params, keys
  )


def _quadratic_unroll(theta, num_steps=10):
  """Final loss of a tiny quadratic trained for num_steps (for grad tests)."""
  target = {
    "w": jnp.full((3, 4), 0.5),
    "b": jnp.full((2,), -1.0),  # b and c: a pack of small tensors
    "c": jnp.full((2,), 2.0),
  }
  params = jax.tree.map(jnp.zeros_like, target)
  loss_fn = lambda p: sum(
    jnp.sum(jnp.square(a - b)) for a, b in zip(jax.tree.leaves(p),
                                               jax.tree.leaves(target))
  )  # fmt: skip
  tx = LOPT.optimizer(theta)

  def step(carry, _):
    params, state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    return (optax.apply_updates(params, updates), state), loss

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None,
                                num_steps)  # fmt: skip
  return loss_fn(params)


def test_meta_param_count_is_exact():
  n_in = 23 + 11 + 3
  expected = (n_in * 32 + 32) + (32 * 32 + 32) + (32 * 2 + 2)
  assert LOPT.num_inputs == n_in
  assert LOPT.num_meta_params() == expected == 2338
  leaves = jax.tree.leaves(THETA)
  assert all(x.dtype == jnp.float32 for x in leaves)


def test_config_rebuilds_the_optimizer():
  config = LOPT.config()
  rebuilt = type(LOPT)(**config["kwargs"])
  assert rebuilt == LOPT and hash(rebuilt) == hash(LOPT)
  assert config["architecture"] == "mlp"


def test_bad_decays_raise():
  with pytest.raises(ValueError, match="decays"):
    mlp_lopt.MLPLOpt(decays=(0.5, 1.0))


def test_structure_shapes_dtypes_and_first_jitted_update():
  state = _init(PARAMS)
  grads = _grads(PARAMS, 1)
  # An all-zero gradient exercises the clipping and normalization guards.
  grads["nested"]["conv"] = jnp.zeros_like(grads["nested"]["conv"])
  updates, new_state = _update(THETA, grads, state, PARAMS, 1.0)
  test_utils.assert_tree_shapes_dtypes_equal(updates, PARAMS)
  test_utils.assert_tree_all_finite(updates)
  test_utils.assert_tree_all_finite(new_state)
  test_utils.assert_tree_shapes_dtypes_equal(new_state, state)
  assert int(new_state.count) == 1
  # 10 float32 accumulator values per parameter, nothing else per entry.
  n = sum(np.size(p) for p in jax.tree.leaves(PARAMS))
  acc_bytes = sum(x.nbytes for x in jax.tree.leaves((state.m, state.v)))
  assert acc_bytes == 10 * 4 * n
  # Per tensor, not per entry: one clipping EMA per leaf.
  assert state.grad_sq_ema.shape == (len(jax.tree.leaves(PARAMS)),)
  # Nonzero updates where the gradient is nonzero.
  assert float(jnp.max(jnp.abs(updates["mlp/~/linear_0"]["w"]))) > 0


def test_update_without_value_raises():
  tx = LOPT.optimizer(THETA)
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="value=loss"):
    tx.update(params, tx.init(params), params)


def test_bad_params_raise():
  tx = LOPT.optimizer(THETA)
  with pytest.raises(ValueError, match="empty"):
    tx.init({})
  with pytest.raises(ValueError, match="int32"):
    tx.init({"w": jnp.zeros(3), "n": jnp.zeros(2, jnp.int32)})


def test_accumulators_in_state_match_closed_form():
  # At most sqrt(N) <= 10 times the RMS: no clipping on any step.
  params = {"w": jnp.ones((2, 3))}
  state = _init(params)
  # float32 decays, as the optimizer uses (1 - 0.9999 loses ~1e-4 in f32).
  decays = np.asarray(LOPT.decays, np.float32).astype(np.float64)
  gs = [np.asarray(_grads(params, s)["w"]) for s in range(4)]
  for g in gs:
    _, state = _update(THETA, {"w": jnp.asarray(g)}, state, params, 0.0)
  k = len(gs)
  weights = [(1 - decays) * decays ** (k - 1 - i) for i in range(k)]
  m = sum(w * g[..., None] for w, g in zip(weights, gs))
  v = sum(w * g[..., None] ** 2 for w, g in zip(weights, gs))
  m_state, v_state = (
    np.moveaxis(x["w"].reshape(-1, 2, 3), 0, -1) for x in (state.m, state.v)
  )
  np.testing.assert_allclose(m_state, m, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(v_state, v, rtol=1e-5, atol=1e-7)


def test_step_rule_is_wired_as_specified():
  c0, c1 = 0.7, 300.0
  theta = jax.tree.map(lambda x: x, THETA)
  last = theta["mlp"][-1]
  last["w"] = jnp.zeros_like(last["w"])
  last["b"] = jnp.asarray([c0, c1], jnp.float32)
  state = _init(PARAMS)
  updates, _ = _update(theta, _grads(PARAMS, 2), state, PARAMS, 1.0)
  expected = -(c0 * np.exp(0.001 * c1) * 0.001)
  for u in jax.tree.leaves(updates):
    np.testing.assert_allclose(np.asarray(u, np.float32), expected, rtol=1e-2)
  np.testing.assert_allclose(updates["scalar"], expected, rtol=1e-6)


def test_matches_reference_over_several_steps():
  # A larger last layer makes the comparison sensitive to every input.
  theta = jax.tree.map(lambda x: x, THETA)
  theta["mlp"][-1] = jax.tree.map(lambda x: 100.0 * x, theta["mlp"][-1])
  theta["mlp"][-1]["b"] = jnp.asarray([0.3, -2.0])
  params = PARAMS  # the same compiled update as the other tests
  state = _init(params)
  ref_state = reference.init_state(LOPT, theta, jax.tree.leaves(params))
  for step in range(3):
    grads = _grads(params, 10 + step)
    updates, state = _update(theta, grads, state, params, 1.0 / (1 + step))
    ref_updates, ref_state = reference.update(
      LOPT, theta, ref_state, jax.tree.leaves(grads), jax.tree.leaves(params),
      1.0 / (1 + step),
    )  # fmt: skip
    for u, r in zip(jax.tree.leaves(updates), ref_updates):
      scale = np.max(np.abs(r))
      assert scale > 0
      tol = 1e-4 if u.dtype == jnp.float32 else 1e-2  # bfloat16 rounding
      u = np.asarray(u, np.float64)
      np.testing.assert_allclose(u, r, rtol=tol, atol=tol * scale)
    params = optax.apply_updates(params, updates)


def test_vmap_over_theta_population():
  thetas = jax.vmap(LOPT.init)(jax.random.split(jax.random.key(1), 3))
  params = {"w": PARAMS["mlp/~/linear_0"]["w"], "scalar": PARAMS["scalar"]}
  state = _init(params)
  grads = _grads(params, 3)
  updates, new_state = jax.vmap(_update, in_axes=(0, None, None, None, None))(
    thetas, grads, state, params, 1.0
  )
  test_utils.assert_tree_all_finite(updates)
  assert updates["w"].shape == (3, 4, 3)
  assert not np.allclose(updates["w"][0], updates["w"][1])
  assert new_state.m["scalar"].shape == (3, 5, 1)


def test_grad_wrt_theta_through_unroll():
  loss, grads = jax.jit(jax.value_and_grad(_quadratic_unroll))(THETA)
  assert np.isfinite(float(loss))
  test_utils.assert_tree_all_finite(grads)
  assert float(optax.tree.norm(grads)) > 0


def test_plan_units_packs_small_tensors():
  assert mlp_lopt.plan_units([3, 12, 12, 6, 1], 4) == [(1,), (2,), (3,), (0, 4)]
  assert mlp_lopt.plan_units([2, 2, 2, 9], 4) == [(0, 1), (3,), (2,)]
