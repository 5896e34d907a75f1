"""Both learned optimizers: interface, invariances, step rule, reference.

Every test runs on ``MLPLOpt`` and ``HierarchicalLOpt``; the few that check
the LSTM's own state (loss EMAs, LSTM memory, ranks) are at the end.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
import test_utils

from learned_opt import hierarchical, mlp_lopt, per_param

# Chunks of 4 entries, so the example tensors cover every path: 12 entries
# (a loop over chunks), 6 (one chunk and a remainder), and small tensors
# packed together (3 + 1 entries, not adjacent in leaf order).
_SCALE_AWARE = {"step_scale": "param_rms", "progress_features": True}
LOPTS = {
  "mlp": mlp_lopt.MLPLOpt(chunk_size=4),
  "hierarchical": hierarchical.HierarchicalLOpt(chunk_size=4),
  # The scale-aware step and the progress features (issue 19's options).
  "mlp_scaled": mlp_lopt.MLPLOpt(chunk_size=4, **_SCALE_AWARE),
  "hierarchical_scaled": hierarchical.HierarchicalLOpt(
    chunk_size=4, **_SCALE_AWARE
  ),
  "hierarchical_init": hierarchical.HierarchicalLOpt(
    chunk_size=4, step_scale="init_rms"
  ),
  # The paper's step times a per-tensor LSTM head (issue 20's campaign).
  "hierarchical_head": hierarchical.HierarchicalLOpt(
    chunk_size=4, step_scale="lstm_head", step_head_mult=3.0
  ),
}
THETAS = {name: lopt.init(jax.random.key(0)) for name, lopt in LOPTS.items()}
PARAMS = jax.tree.map(jnp.asarray, reference.example_params())
NAN = float("nan")
HIER = LOPTS["hierarchical"]


@pytest.fixture(params=["mlp", "hierarchical"])
def name(request):
  return request.param


@pytest.fixture(params=list(LOPTS))
def variant(request):
  return request.param


@functools.partial(jax.jit, static_argnums=0)
def _update(lopt, theta, grads, state, params, value, valid_value=NAN):
  tx = lopt.optimizer(theta, num_steps=10)
  return tx.update(grads, state, params, value=value, valid_value=valid_value)


@functools.partial(jax.jit, static_argnums=0)
def _init(lopt, theta, params):
  return lopt.optimizer(theta).init(params)


def _grads(params, seed):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  keys = jax.tree.unflatten(jax.tree.structure(params), list(keys))
  return jax.tree.map(
    lambda p, k: jax.random.normal(k, jnp.shape(p), p.dtype), params, keys
  )


def _with_last_layer(theta, scale, head):
  """theta with the MLP's last layer times ``scale``, bias[:2] = ``head``."""
  theta = jax.tree.map(lambda x: x, theta)
  last = jax.tree.map(lambda x: scale * x, theta["mlp"][-1])
  last["b"] = last["b"].at[:2].set(jnp.asarray(head, jnp.float32))
  theta["mlp"][-1] = last
  return theta


def _sensitive_theta(name):
  """A large last MLP layer, so every input path moves the updates."""
  theta = _with_last_layer(THETAS[name], 100.0, [0.3, -2.0])
  if "lr_head" in theta:
    k = jax.random.key(8)
    theta["lr_head"]["w"] = 0.3 * jax.random.normal(k, [64, 1])
    theta["lr_head"]["b"] = jnp.asarray([0.5])
  if name.startswith("hierarchical"):
    k1, k2 = jax.random.split(jax.random.key(7))
    theta["init"]["mlp_avg"] = jax.random.normal(k1, [HIER.mlp_to_lstm])
    theta["init"]["global"] = jax.random.normal(k2, [HIER.num_global_features])
  return theta


def test_meta_param_count_is_exact():
  mlp = LOPTS["mlp"]
  n_in = 23 + 11 + 3
  assert mlp.num_inputs == n_in
  expected = (n_in * 32 + 32) + (32 * 32 + 32) + (32 * 2 + 2)
  assert mlp.num_meta_params() == expected == 2338
  layers = (54 * 32 + 32) + (32 * 32 + 32) + (32 * 18 + 18)
  lstm = 52 * 256 + 64 * 256 + 256
  heads = (64 * 17 + 17) + (64 * 18 + 18)
  initial = 64 + 64 + 18 + 16
  assert HIER.num_mlp_inputs == 54 and HIER.num_lstm_inputs == 52
  assert HIER.num_meta_params() == layers + lstm + heads + initial == 35799
  for theta in THETAS.values():
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(theta))


def test_config_rebuilds_the_optimizer(variant):
  lopt = LOPTS[variant]
  config = lopt.config()
  assert config["architecture"] == variant.split("_")[0]
  rebuilt = type(lopt)(**config["kwargs"])
  assert rebuilt == lopt and hash(rebuilt) == hash(lopt)


def test_input_width_follows_the_decays():
  small = hierarchical.HierarchicalLOpt(decays=(0.9, 0.99), lstm_hidden_size=8)
  assert small.num_mlp_inputs == 3 + 4 * 2 + 11 + 3 + 17
  shapes = jax.eval_shape(small.init, jax.random.key(0))
  assert shapes["lstm"]["wx"].shape == (18 + 18 + 16, 4 * 8)
  assert mlp_lopt.MLPLOpt(decays=(0.9,)).num_inputs == 3 + 4 + 11 + 3


def test_bad_decays_raise(name):
  with pytest.raises(ValueError, match="decays"):
    type(LOPTS[name])(decays=(0.5, 1.0))


def test_the_lstm_head_step_needs_the_lstm():
  with pytest.raises(ValueError, match="needs the per-tensor LSTM"):
    mlp_lopt.MLPLOpt(step_scale="lstm_head")


def test_structure_shapes_dtypes_and_first_jitted_update(name):
  lopt, theta = LOPTS[name], THETAS[name]
  state = _init(lopt, theta, PARAMS)
  grads = _grads(PARAMS, 1)
  # An all-zero gradient exercises the clipping and normalization guards.
  grads["nested"]["conv"] = jnp.zeros_like(grads["nested"]["conv"])
  updates, new_state = _update(lopt, theta, grads, state, PARAMS, 2.0)
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
  assert float(jnp.max(jnp.abs(updates["mlp/~/linear_0"]["w"]))) > 0


def test_update_without_value_raises(name):
  tx = LOPTS[name].optimizer(THETAS[name])
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="value=loss"):
    tx.update(params, tx.init(params), params)


def test_bad_params_raise(name):
  tx = LOPTS[name].optimizer(THETAS[name])
  with pytest.raises(ValueError, match="empty"):
    tx.init({})
  with pytest.raises(ValueError, match="int32"):
    tx.init({"w": jnp.zeros(3), "n": jnp.zeros(2, jnp.int32)})
  with pytest.raises(ValueError, match="bool"):
    tx.init({"mask": jnp.zeros(2, bool)})


def test_accumulators_in_state_match_closed_form(name):
  lopt, theta = LOPTS[name], THETAS[name]
  # At most sqrt(N) <= 10 times the RMS: no clipping on any step.
  params = {"w": jnp.ones((2, 3))}
  state = _init(lopt, theta, params)
  # float32 decays, as the optimizer uses (1 - 0.9999 loses ~1e-4 in f32).
  decays = np.asarray(lopt.decays, np.float32).astype(np.float64)
  gs = [np.asarray(_grads(params, s)["w"]) for s in range(4)]
  for g in gs:
    _, state = _update(lopt, theta, {"w": jnp.asarray(g)}, state, params, 0.0)
  k = len(gs)
  weights = [(1 - decays) * decays ** (k - 1 - i) for i in range(k)]
  m = sum(w * g[..., None] for w, g in zip(weights, gs))
  v = sum(w * g[..., None] ** 2 for w, g in zip(weights, gs))
  m_state, v_state = (
    np.moveaxis(x["w"].reshape(-1, 2, 3), 0, -1) for x in (state.m, state.v)
  )
  np.testing.assert_allclose(m_state, m, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(v_state, v, rtol=1e-5, atol=1e-7)


def test_step_rule_is_wired_as_specified(name):
  lopt = LOPTS[name]
  c0, c1 = -0.4, 900.0
  theta = _with_last_layer(THETAS[name], 0.0, [c0, c1])
  state = _init(lopt, theta, PARAMS)
  updates, new_state = _update(
    lopt, theta, _grads(PARAMS, 2), state, PARAMS, 1.0
  )
  expected = -(c0 * np.exp(0.001 * c1) * 0.001)
  for u in jax.tree.leaves(updates):
    np.testing.assert_allclose(np.asarray(u, np.float32), expected, rtol=1e-2)
  np.testing.assert_allclose(updates["scalar"], expected, rtol=1e-6)
  if name == "hierarchical":
    # The averaged outputs o2..o17 are the (zero) last-layer bias.
    np.testing.assert_array_equal(new_state.mlp_avg, 0.0)


def test_matches_reference_over_several_steps(variant):
  name = variant
  lopt, theta = LOPTS[name], _sensitive_theta(name)
  state = _init(lopt, theta, PARAMS)
  ref_state = reference.init_state(lopt, theta, jax.tree.leaves(PARAMS))
  params = PARAMS
  valid = [NAN, 1.5, NAN, 0.7]
  for step in range(4):
    grads = _grads(params, 20 + step)
    value = 2.0 / (1 + step)
    updates, state = _update(
      lopt, theta, grads, state, params, value, valid[step]
    )
    ref_updates, ref_state = reference.update(
      lopt, theta, ref_state, jax.tree.leaves(grads), jax.tree.leaves(params),
      value, valid[step], num_steps=10,
    )  # fmt: skip
    for u, r in zip(jax.tree.leaves(updates), ref_updates):
      scale = np.max(np.abs(r))
      assert scale > 0
      tol = 1e-4 if u.dtype == jnp.float32 else 1e-2  # bfloat16 rounding
      u = np.asarray(u, np.float64)
      np.testing.assert_allclose(u, r, rtol=tol, atol=tol * scale)
    if name.startswith("hierarchical"):
      np.testing.assert_allclose(state.lstm_h, ref_state["h"], atol=1e-5)
      np.testing.assert_allclose(state.mlp_avg, ref_state["mlp_avg"], atol=1e-4)
      np.testing.assert_allclose(
        state.global_features, ref_state["global"], atol=1e-5
      )
    params = optax.apply_updates(params, updates)


_SMALL = {"w": jnp.ones((3, 2)), "s": jnp.ones([])}


def test_vmap_over_theta_population(name):
  lopt = LOPTS[name]
  thetas = jax.vmap(lopt.init)(jax.random.split(jax.random.key(1), 3))
  states = jax.vmap(_init, in_axes=(None, 0, None))(lopt, thetas, _SMALL)
  updates, new_state = jax.vmap(
    _update, in_axes=(None, 0, None, 0, None, None, None)
  )(lopt, thetas, _grads(_SMALL, 3), states, _SMALL, 1.0, 2.0)
  test_utils.assert_tree_all_finite(updates)
  assert updates["w"].shape == (3, 3, 2)
  assert not np.allclose(updates["w"][0], updates["w"][1])
  assert new_state.m["s"].shape == (3, 5, 1)


def _quadratic_unroll(lopt, theta, num_steps=10):
  """Final loss of a tiny quadratic trained for num_steps (for grad tests)."""
  target = {
    "w": jnp.full((3, 4), 0.5),
    "b": jnp.full((2,), -1.0),  # b and c: a pack of small tensors
    "c": jnp.full((2,), 2.0),
  }
  loss_fn = lambda p: sum(jnp.sum(jnp.square(p[k] - target[k])) for k in target)
  tx = lopt.optimizer(theta)

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


def test_grad_wrt_theta_through_unroll_matches_finite_differences(name):
  # Steps of ~1e-3 barely move the quadratic; a larger last layer makes
  # the final loss depend on theta at the first order.
  lopt, theta = LOPTS[name], _sensitive_theta(name)
  unroll = jax.jit(functools.partial(_quadratic_unroll, lopt))
  loss, grads = jax.jit(jax.value_and_grad(unroll))(theta)
  assert np.isfinite(float(loss))
  test_utils.assert_tree_all_finite(grads)
  # The directional derivative along the gradient, by central differences.
  norm = float(optax.tree.norm(grads))
  eps = 1e-2 / norm
  plus = unroll(jax.tree.map(lambda t, g: t + eps * g, theta, grads))
  minus = unroll(jax.tree.map(lambda t, g: t - eps * g, theta, grads))
  fd = (float(plus) - float(minus)) / (2 * eps)
  np.testing.assert_allclose(fd, norm**2, rtol=0.05)
  if name == "hierarchical":
    assert float(optax.tree.norm(grads["lstm"])) > 0


def test_param_rms_step_is_each_tensors_rms_times_the_rule(variant):
  lopt = LOPTS[variant]
  if lopt.step_scale in ("absolute", "lstm_head"):
    pytest.skip("no RMS in the step: checked against the reference")
  c0, c1 = -0.4, 900.0
  theta = _with_last_layer(THETAS[variant], 0.0, [c0, c1])
  params = dict(PARAMS, scalar=jnp.zeros([]))  # a zero tensor: the floor
  updates, _ = _update(
    lopt, theta, _grads(params, 2), _init(lopt, theta, params), params, 1.0
  )
  leaves = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
  overall = np.sqrt(
    sum(np.sum(p**2) for p in leaves) / sum(p.size for p in leaves)
  )
  rule = c0 * np.exp(0.001 * c1) * 0.001
  for u, p in zip(jax.tree.leaves(updates), leaves):
    scale = max(np.sqrt(np.mean(p**2)), 0.1 * overall)
    np.testing.assert_allclose(
      np.asarray(u, np.float32), -rule * scale, rtol=1e-2
    )
  assert float(updates["scalar"]) == pytest.approx(-rule * 0.1 * overall, 1e-5)


def test_progress_features_need_the_number_of_steps():
  lopt = LOPTS["mlp_scaled"]
  tx = lopt.optimizer(THETAS["mlp_scaled"])
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="num_steps=N"):
    tx.update(params, tx.init(params), params, value=1.0)
  # Given at update time instead, it works.
  updates, _ = tx.update(params, tx.init(params), params, value=1.0,
                         num_steps=100)  # fmt: skip
  test_utils.assert_tree_all_finite(updates)


def test_plan_units_packs_small_tensors():
  assert per_param.plan_units([3, 12, 12, 6, 1], 4) == [
    (1,),
    (2,),
    (3,),
    (0, 4),
  ]
  assert per_param.plan_units([2, 2, 2, 9], 4) == [(0, 1), (3,), (2,)]


def test_a_non_finite_loss_does_not_poison_the_state(name):
  # Loss EMAs that took in one NaN or inf would make every later update NaN,
  # even where the step itself is skipped (optax.apply_if_finite only looks
  # at the gradients).
  lopt, theta = LOPTS[name], THETAS[name]
  state = _init(lopt, theta, PARAMS)
  grads = _grads(PARAMS, 1)
  _, s1 = _update(lopt, theta, grads, state, PARAMS, 2.0, 3.0)
  for bad in (NAN, float("inf")):
    updates, s2 = _update(lopt, theta, grads, s1, PARAMS, bad, bad)
    test_utils.assert_tree_all_finite(updates)
    test_utils.assert_tree_all_finite(s2)
    updates, s3 = _update(lopt, theta, grads, s2, PARAMS, 2.0)
    test_utils.assert_tree_all_finite(updates)
    if name == "hierarchical":
      jax.tree.map(np.testing.assert_array_equal, s2.loss, s1.loss)
      assert int(s3.loss.count) == 2


def test_apply_if_finite_skips_a_step_with_non_finite_gradients(name):
  # The README's remedy for NaN gradients: the step is skipped and the
  # learned optimizer's state is left as it was.
  inner = LOPTS[name].optimizer(THETAS[name])
  tx = optax.apply_if_finite(inner, max_consecutive_errors=2)
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


def test_donated_state_is_updated_in_place_and_theta_survives(name):
  # A jitted step with the state donated must not hold a second copy of the
  # accumulators: with [D, *shape] accumulator leaves XLA:CPU wrote the new
  # ones to a temporary as large as the state and then copied them over.
  # Nor may donating the state delete any of theta's buffers.
  lopt = type(LOPTS[name])(chunk_size=256)
  theta = THETAS[name]
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


# ------------------------------------------------ HierarchicalLOpt's own state


def test_hierarchical_state_shapes_and_validation_loss_ema():
  theta = THETAS["hierarchical"]
  state = _init(HIER, theta, PARAMS)
  grads = _grads(PARAMS, 1)
  _, s0 = _update(HIER, theta, grads, state, PARAMS, 2.0, NAN)
  num_tensors = len(jax.tree.leaves(PARAMS))
  assert s0.lstm_h.shape == (num_tensors, 64)
  assert s0.mlp_avg.shape == (num_tensors, 16)
  # No validation loss given (NaN): the validation EMA stays untouched.
  assert int(s0.loss.valid_count) == 0 and float(s0.loss.valid) == 0.0
  _, s1 = _update(HIER, theta, grads, state, PARAMS, 2.0, 3.0)
  _, s2 = _update(HIER, theta, grads, s1, PARAMS, 2.0, NAN)
  assert int(s1.loss.valid_count) == 1 == int(s2.loss.valid_count)
  # Bias-corrected: after one validation loss the EMA is that loss.
  assert float(s1.loss.valid) == 3.0
  assert float(s2.loss.valid) == float(s1.loss.valid)
  assert int(s2.loss.count) == 2


def test_hierarchical_lstm_path_changes_the_updates():
  # Same step, different LSTM memory: the update must differ.
  theta = _sensitive_theta("hierarchical")
  state = _init(HIER, theta, PARAMS)
  grads = _grads(PARAMS, 4)
  u1, _ = _update(HIER, theta, grads, state, PARAMS, 1.0)
  state2 = state._replace(lstm_c=state.lstm_c + 1.0)
  u2, _ = _update(HIER, theta, grads, state2, PARAMS, 1.0)
  w1, w2 = u1["mlp/~/linear_0"]["w"], u2["mlp/~/linear_0"]["w"]
  assert not np.allclose(w1, w2)


def test_hierarchical_rejects_rank_5_tensors():
  tx = HIER.optimizer(THETAS["hierarchical"])
  with pytest.raises(ValueError, match=r"\['w5'\].*rank 5"):
    tx.init({"ok": jnp.zeros(2), "w5": jnp.zeros((1, 1, 1, 1, 2))})


# ------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
  "bad, message",
  [
    (
      (4, 3),
      r"\['w'\] has shape \(4, 3\), but the parameter has shape \(3, 4\)",
    ),
    ((2, 3, 4), r"\['w'\] has shape \(2, 3, 4\), but the parameter has shape"),
    ((12,), r"\['w'\] has shape \(12,\), but the parameter has shape \(3, 4\)"),
  ],
  ids=["transposed", "batched", "flat"],
)
def test_gradients_of_another_shape_raise_at_trace_time(name, bad, message):
  # Same number of entries or not, a gradient of another shape would be
  # read entry by entry into the wrong places (or its rows dropped).
  lopt, theta = LOPTS[name], THETAS[name]
  params = {"w": jnp.ones((3, 4)), "b": jnp.ones(3)}
  state = _init(lopt, theta, params)
  grads = {"w": jnp.ones(bad), "b": jnp.ones(3)}
  with pytest.raises(ValueError, match=message):
    # Tracing only: the check costs nothing per step.
    jax.eval_shape(
      lambda g: lopt.optimizer(theta).update(g, state, params, value=1.0),
      grads,
    )


def test_gradients_of_another_tree_raise(name):
  lopt, theta = LOPTS[name], THETAS[name]
  params = {"w": jnp.ones((3, 4)), "b": jnp.ones(3)}
  tx = lopt.optimizer(theta)
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"no gradient for \['w'\]"):
    tx.update({"b": jnp.ones(3), "c": jnp.ones(3)}, state, params, value=1.0)
  with pytest.raises(ValueError, match="tree structure"):
    tx.update([jnp.ones(3), jnp.ones((3, 4))], state, params, value=1.0)


def test_a_non_scalar_loss_raises(name):
  tx = LOPTS[name].optimizer(THETAS[name])
  params = {"w": jnp.ones(2)}
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"scalar training loss .*shape \(8,\)"):
    tx.update(params, state, params, value=jnp.ones(8))
  with pytest.raises(ValueError, match="pass the mean loss"):
    tx.update(params, state, params, value=jnp.ones((1, 1)))
  with pytest.raises(ValueError, match="scalar validation loss"):
    tx.update(params, state, params, value=1.0, valid_value=jnp.ones(2))


# A one-entry tensor and a chunked one (shared by tests, compiled once).
_SMALL_TREE = {"one": jnp.ones((1, 1)), "w": jnp.ones((3, 4))}


def test_zero_size_parameters_get_empty_updates(name):
  # As with optax's optimizers: nothing to update, and no 0/0 statistics
  # that would leak into the other tensors (the LSTM's global mean).
  lopt, theta = LOPTS[name], _sensitive_theta(name)
  others = _SMALL_TREE
  params = {"empty": jnp.zeros((0, 3)), **others}
  grads = _grads(params, 5)
  state = _init(lopt, theta, params)
  updates, new_state = _update(lopt, theta, grads, state, params, 1.0)
  assert updates["empty"].shape == (0, 3)
  assert updates["empty"].dtype == jnp.float32
  assert new_state.m["empty"].shape == (len(lopt.decays), 0)
  test_utils.assert_tree_all_finite(new_state)
  # The other tensors are updated as if the empty one were not there.
  ref_updates, ref_state = _update(
    lopt, theta, {k: grads[k] for k in others}, _init(lopt, theta, others),
    others, 1.0,
  )  # fmt: skip
  for k in others:
    np.testing.assert_array_equal(updates[k], ref_updates[k])
  np.testing.assert_array_equal(new_state.grad_sq_ema, ref_state.grad_sq_ema)


def test_only_zero_size_parameters_raise(name):
  tx = LOPTS[name].optimizer(THETAS[name])
  with pytest.raises(ValueError, match="at least one parameter with entries"):
    tx.init({"empty": jnp.zeros((0, 3))})


# ---------------------------------------------- huge and non-finite gradients


def _uniform_like(params, seed, magnitude):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  keys = jax.tree.unflatten(jax.tree.structure(params), list(keys))
  return jax.tree.map(
    lambda p, k: magnitude * jax.random.uniform(k, jnp.shape(p), minval=-1.0),
    params,
    keys,
  )


@pytest.mark.parametrize("magnitude", [1e19, 1e20, 1e30, 3e38])
def test_huge_finite_gradients_keep_state_and_updates_finite(name, magnitude):
  # mean(g^2) overflowed float32 before the clip could act: the state went
  # non-finite from 1e19 and the updates from 1e20. A one-entry tensor too:
  # XLA simplified a one-pass overflow guard there into inf * 0.
  lopt, theta = LOPTS[name], THETAS[name]
  params = _SMALL_TREE
  state = _init(lopt, theta, params)
  for step in range(3):
    grads = _uniform_like(params, step, magnitude)
    updates, state = _update(lopt, theta, grads, state, params, 1.0)
    test_utils.assert_tree_all_finite(updates)
    test_utils.assert_tree_all_finite(state)
  # And ordinary gradients afterwards still give finite updates.
  updates, state = _update(lopt, theta, _grads(params, 9), state, params, 1.0)
  test_utils.assert_tree_all_finite(updates)
  test_utils.assert_tree_all_finite(state)


def test_a_huge_tensor_is_scaled_down_as_a_whole(name):
  # The documented bound: a tensor whose max|g| exceeds 2^24 is read as if
  # scaled down to it, so its relative structure survives.
  lopt, theta = LOPTS[name], _sensitive_theta(name)
  state = _init(lopt, theta, PARAMS)
  grads = _grads(PARAMS, 3)
  huge = jax.tree.map(lambda g: 1e30 * g.astype(jnp.float32), grads)
  bounded = jax.tree.map(lambda g: (2.0**24 / jnp.max(jnp.abs(g))) * g, huge)
  huge = jax.tree.map(lambda h, g: h.astype(g.dtype), huge, grads)
  bounded = jax.tree.map(lambda h, g: h.astype(g.dtype), bounded, grads)
  u_huge, _ = _update(lopt, theta, huge, state, PARAMS, 1.0)
  u_bounded, _ = _update(lopt, theta, bounded, state, PARAMS, 1.0)
  test_utils.assert_tree_all_finite(u_huge)
  test_utils.assert_trees_all_close(u_huge, u_bounded, rtol=1e-3, atol=1e-6)


def test_non_finite_gradient_entries_read_as_zero(name):
  # The documented behaviour: a NaN or +-inf entry is no information, so the
  # state stays finite and the step is that of a zero entry there.
  lopt, theta = LOPTS[name], _sensitive_theta(name)
  state = _init(lopt, theta, PARAMS)
  _, state = _update(lopt, theta, _grads(PARAMS, 1), state, PARAMS, 2.0)
  grads = _grads(PARAMS, 2)
  bad_values = [NAN, float("inf"), -float("inf")]

  def poke(value):
    return jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(value), grads)

  for bad in bad_values:
    updates, new_state = _update(lopt, theta, poke(bad), state, PARAMS, 2.0)
    expected, expected_state = _update(
      lopt, theta, poke(0.0), state, PARAMS, 2.0
    )
    test_utils.assert_tree_all_finite(updates)
    test_utils.assert_trees_equal(updates, expected)
    test_utils.assert_trees_equal(new_state, expected_state)
