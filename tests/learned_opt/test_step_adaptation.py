"""The per-tensor hypergradient step-size adaptation (learned_opt.step_adaptation)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import learned_opt
from learned_opt import checkpoint, step_adaptation

# An ill-scaled pair of tensors: one needs steps 100x larger than the other.
CURVATURE = {"big": jnp.full([4], 100.0), "small": jnp.full([3], 1.0)}
START = {"big": jnp.ones([4]), "small": jnp.ones([3])}


def _loss(params, curvature=CURVATURE):
  return sum(
    0.5 * jnp.sum(c * p**2)
    for c, p in zip(jax.tree.leaves(curvature), jax.tree.leaves(params))
  )


def _descend(tx, start, num_steps, curvature=CURVATURE):
  """(params, state) after ``num_steps`` of ``tx`` on the quadratic with
  ``curvature``, exact gradients."""

  def step(carry, _):
    params, state = carry
    grads = jax.tree.map(lambda c, p: c * p, curvature, params)
    updates, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, state), _ = jax.lax.scan(
    step, (start, tx.init(start)), None, length=num_steps
  )
  return params, state


def _descend_noisy(tx, start, gradient, num_steps):
  """(params, state) after ``num_steps`` of ``tx`` with gradients
  ``gradient(params, key)`` (fixed keys: deterministic)."""

  def step(carry, key):
    params, state = carry
    updates, state = tx.update(gradient(params, key), state, params)
    return (optax.apply_updates(params, updates), state), None

  keys = jax.random.split(jax.random.key(0), num_steps)
  (params, state), _ = jax.lax.scan(step, (start, tx.init(start)), keys)
  return params, state


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(lr, rate):
  """100 steps of SGD(lr), wrapped unless rate is None; (losses, scales)."""
  tx = optax.sgd(lr)
  if rate is not None:
    tx = step_adaptation.adapt_steps(tx, rate)
  params, state = _descend(tx, START, 100)
  per_tensor = jax.tree.map(
    lambda c, p: 0.5 * jnp.sum(c * p**2), CURVATURE, params
  )
  return per_tensor, getattr(state, "log_scale", None)


def test_steps_grow_where_too_small_and_shrink_where_too_large():
  # lr 2e-4: far too small for "small" (curvature 1) and fine but slow for
  # "big"; lr 0.019: near the edge of stability for "big" (2/100 = 0.02).
  small_lr, small_scales = _run(2e-4, 0.5)
  assert float(small_scales["small"]) > 2.0  # grew by > e^2
  plain_small, _ = _run(2e-4, None)
  assert float(small_lr["small"]) < 0.5 * float(plain_small["small"])
  edge, edge_scales = _run(0.0199, 0.5)
  plain_edge, _ = _run(0.0199, None)
  # Oscillation along "big" shrinks its steps, which then converge faster.
  assert float(edge_scales["big"]) < 0.0
  assert float(edge["big"]) < 1e-3 * float(plain_edge["big"])
  # Each tensor has its own scale.
  assert float(edge_scales["small"]) > float(edge_scales["big"])


def test_scales_stay_bounded_and_finite_on_bad_gradients():
  tx = step_adaptation.adapt_steps(
    optax.sgd(1e-3), 1.0, floor=-1.0, ceiling=2.0
  )
  params = {"w": jnp.ones([3]), "empty": jnp.zeros([0])}
  state = tx.init(params)
  for g in ([1.0, 1.0, 1.0], [1e30, -jnp.inf, jnp.nan], [1.0, 1.0, 1.0]):
    grads = {"w": jnp.asarray(g), "empty": jnp.zeros([0])}
    _, state = tx.update(grads, state, params)
  assert np.isfinite(float(state.log_scale["w"]))
  assert -1.0 <= float(state.log_scale["w"]) <= 2.0
  assert float(state.log_scale["empty"]) == 0.0
  for _ in range(20):  # a constant gradient: every step agrees, scale grows
    _, state = tx.update({"w": jnp.ones([3]), "empty": jnp.zeros([0])}, state)
  assert float(state.log_scale["w"]) == pytest.approx(2.0)
  for i in range(20):  # alternating gradients: every step overshoots
    g = jnp.full([3], (-1.0) ** i)
    _, state = tx.update({"w": g, "empty": jnp.zeros([0])}, state)
  assert float(state.log_scale["w"]) == pytest.approx(-1.0)


def test_bad_bounds_are_refused():
  with pytest.raises(ValueError, match="floor <= 0 <= ceiling"):
    step_adaptation.adapt_steps(optax.sgd(1e-3), 0.5, floor=0.5)


def test_a_learned_optimizer_with_the_option():
  lopt, theta = learned_opt.pretrained.load_pretrained_with_info()[:2]
  adapted = dataclasses.replace(lopt, step_adaptation=0.5)
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros([3])}
  grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
  plain_tx, adapted_tx = lopt.optimizer(theta), adapted.optimizer(theta)
  plain, _ = plain_tx.update(grads, plain_tx.init(params), params, value=1.0)
  first, state = adapted_tx.update(
    grads, adapted_tx.init(params), params, value=1.0
  )
  # No previous step yet: the first update is the optimizer's own.
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert isinstance(state, step_adaptation.AdaptedState)
  with pytest.raises(ValueError, match="step_adaptation must be >= 0"):
    dataclasses.replace(lopt, step_adaptation=-1.0)


def test_the_option_survives_a_checkpoint(tmp_path):
  lopt = learned_opt.MLPLOpt(
    hidden_size=4,
    step_adaptation=0.25,
    step_adaptation_significance=2.0,
    step_adaptation_ceiling=3.0,
  )
  theta = lopt.init(jax.random.key(0))
  checkpoint.save(tmp_path / "ckpt", lopt, theta)
  loaded, _, _ = checkpoint.load(tmp_path / "ckpt")
  assert loaded == lopt
  # Its optimizer keeps the cosine's EMA square; the others' states do not.
  params = {"w": jnp.ones([3])}
  state = loaded.optimizer(theta).init(params)
  assert jax.tree.structure(state.mean_square_cosine) == jax.tree.structure(
    params
  )
  plain = dataclasses.replace(lopt, step_adaptation_significance=None)
  assert plain.optimizer(theta).init(params).mean_square_cosine is None


def test_the_ceiling_bounds_a_learned_optimizers_step_growth():
  lopt, theta = learned_opt.pretrained.load_pretrained_with_info()[:2]
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  grads = {"w": jnp.full([2, 3], 0.1)}  # constant: every step agrees

  def final_log_scale(ceiling):
    tx = dataclasses.replace(
      lopt, step_adaptation=1.0, step_adaptation_ceiling=ceiling
    ).optimizer(theta)
    update = jax.jit(functools.partial(tx.update, value=1.0))
    p, state = params, tx.init(params)
    for _ in range(12):
      u, state = update(grads, state, p)
      p = optax.apply_updates(p, u)
    return float(state.log_scale["w"])

  assert final_log_scale(1.0) == pytest.approx(1.0)
  assert final_log_scale(5.0) > 2.0
  for bad in (-1.0, 51.0):
    with pytest.raises(ValueError, match="step_adaptation_ceiling"):
      learned_opt.MLPLOpt(step_adaptation_ceiling=bad)


def test_the_annealed_floor_falls_over_the_end_of_the_run():
  tx = step_adaptation.adapt_steps(
    optax.sgd(1e-3),
    1.0,
    floor=-1.0,
    final_floor=-3.0,
    anneal_start=0.5,
    num_steps=40,
  )
  params = {"w": jnp.ones([3])}
  state = tx.init(params)
  scales = []
  for i in range(50):  # alternating gradients: every step asks to shrink
    g = {"w": jnp.full([3], (-1.0) ** i)}
    _, state = tx.update(g, state, params)
    scales.append(float(state.log_scale["w"]))
  # The floor holds until half the run, then falls linearly to -3 at
  # step 40 (update i sees the floor after i updates), and stays there.
  assert scales[19] == pytest.approx(-1.0)
  assert scales[30] == pytest.approx(-1.0 - 2.0 * (30 - 20) / 20)
  assert scales[40] == pytest.approx(-3.0)
  assert scales[49] == pytest.approx(-3.0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _noisy_quadratic_loss(final_floor, deep_floor=None):
  """Loss after 400 steps of wrapped SGD on a quadratic, noisy gradients."""
  tx = step_adaptation.adapt_steps(
    optax.sgd(1.0), 0.5, floor=-1.0, final_floor=final_floor,
    deep_floor=deep_floor, num_steps=400,
  )  # fmt: skip
  params, _ = _descend_noisy(
    tx, jnp.ones([64]), lambda p, key: p + jax.random.normal(key, p.shape), 400
  )
  return 0.5 * jnp.sum(params**2)


def test_an_annealed_floor_converges_closer_under_gradient_noise():
  # Under noise the loss stalls at a level set by the step size. The
  # cosine turns positive there and pins the scale at the floor (steps of
  # e^-1 ~ 0.37); only an annealed floor lets the steps follow it down
  # over the last quarter (7.3 -> 1.1).
  constant = float(_noisy_quadratic_loss(None))
  annealed = float(_noisy_quadratic_loss(-5.0))
  assert annealed < 0.5 * constant


def test_an_annealed_floor_without_the_runs_length_stays_constant():
  tx = step_adaptation.adapt_steps(
    optax.sgd(1.0), 1.0, floor=-1.0, final_floor=-5.0
  )
  params = {"w": jnp.ones([3])}

  def final_log_scale(**extra):
    state = tx.init(params)
    for i in range(20):  # alternating gradients: every step asks to shrink
      g = {"w": jnp.full([3], (-1.0) ** i)}
      _, state = tx.update(g, state, params, **extra)
    return float(state.log_scale["w"])

  assert final_log_scale() == pytest.approx(-1.0)
  # Given at update time, the run's length lets it anneal.
  assert final_log_scale(num_steps=20) < -4.0
  with pytest.raises(ValueError, match="anneal_start must be in"):
    step_adaptation.adapt_steps(optax.sgd(1e-3), 0.5, anneal_start=1.0)
  with pytest.raises(ValueError, match="step_adaptation_final_floor"):
    learned_opt.MLPLOpt(step_adaptation_final_floor=1.0)


@functools.partial(jax.jit, static_argnums=0)
def _sign_descent(deep_floor):
  """Final loss and log-scales of 300 wrapped sign-descent steps on
  CURVATURE with exact gradients (a normalized direction, like the learned
  optimizers': its steps do not shrink with the gradient)."""
  sign_descent = optax.stateless(
    lambda g, _: jax.tree.map(lambda x: -0.1 * jnp.sign(x), g)
  )
  tx = step_adaptation.adapt_steps(
    sign_descent, 0.5, floor=-1.0, deep_floor=deep_floor
  )
  # Entries at different distances from the minimum, so that they do not
  # oscillate in phase (a 2-cycle whose cosines average 0).
  start = {"big": jnp.linspace(0.3, 1.0, 4), "small": jnp.linspace(-1, 0.5, 3)}
  params, state = _descend(tx, start, 300)
  return _loss(params), state.log_scale


def test_the_deep_floor_opens_for_exact_gradients_only():
  # Exact gradients: sign descent keeps overshooting the minimum, the mean
  # cosine stays high, and the steps shrink past the floor (e^-1) until
  # the iterates converge (0.14 -> ~1e-18).
  floored, floored_scales = _sign_descent(None)
  deep, deep_scales = _sign_descent(-20.0)
  for scale in jax.tree.leaves(floored_scales):
    assert float(scale) == pytest.approx(-1.0)
  assert all(float(s) < -10.0 for s in jax.tree.leaves(deep_scales))
  assert float(deep) < 1e-6 * float(floored)
  # Gradient noise: the cosine's mean stays below the threshold, so the
  # floor binds exactly as without the option (only an annealed floor
  # lets these steps shrink).
  assert float(_noisy_quadratic_loss(None, -20.0)) == float(
    _noisy_quadratic_loss(None)
  )


def test_bad_deep_floors_are_refused():
  with pytest.raises(ValueError, match="deep_floor must be None or <= floor"):
    step_adaptation.adapt_steps(
      optax.sgd(1e-3), 0.5, floor=-2.0, deep_floor=-1.0
    )
  with pytest.raises(ValueError, match="overshoot must be in"):
    step_adaptation.adapt_steps(optax.sgd(1e-3), 0.5, overshoot=1.0)
  with pytest.raises(ValueError, match="step_adaptation_deep_floor"):
    learned_opt.MLPLOpt(
      step_adaptation_floor=-2.0, step_adaptation_deep_floor=-1.0
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _noisy_slope_scale(memory, significance=None, slope=1.0):
  """log s of 16 tensors after 60 wrapped SGD steps down a linear slope
  whose gradient noise (std 5 per entry) dwarfs the slope (1): steps far
  too small. With ``slope=0`` the gradients are noise alone."""
  tx = step_adaptation.adapt_steps(
    optax.sgd(1e-3), 0.5, memory=memory, significance=significance
  )

  def gradient(params, key):
    keys = jax.random.split(key, len(params))
    return [
      slope + 5.0 * jax.random.normal(k, p.shape) for k, p in zip(keys, params)
    ]

  _, state = _descend_noisy(tx, [jnp.zeros([64])] * 16, gradient, 60)
  return jnp.stack(state.log_scale)


def test_a_memory_grows_noisy_steps_faster():
  # One step's cosine with the gradient is ~ -1/26 here, so the greedy
  # rule barely grows the steps; against a trace of the last ~10 updates
  # the noise averages out and the consistent descent shows.
  last_update_only = float(jnp.mean(_noisy_slope_scale(0.0)))
  traced = float(jnp.mean(_noisy_slope_scale(0.9)))
  assert traced > last_update_only + 1.0


def test_a_significant_descent_grows_the_steps_at_its_signal_to_noise():
  # Each step's cosine is small (~ -1/26) but always negative: its mean is
  # many standard errors below 0, so the scale grows at about the mean
  # over the RMS instead of the mean (measured: log s 4.0 against 1.2).
  plain = float(jnp.mean(_noisy_slope_scale(0.0)))
  gated = float(jnp.mean(_noisy_slope_scale(0.0, 2.0)))
  assert gated > plain + 2.0


def test_the_significance_gate_mostly_leaves_noise_alone():
  # Cosines of zero mean pass the gate now and then (its t-statistic
  # counts the EMA's samples as independent): over 60 steps the scales
  # drift up by ~0.4 on average (measured), far less than the growth on a
  # slope as noisy, and never down.
  plain = _noisy_slope_scale(0.9, None, 0.0)
  gated = _noisy_slope_scale(0.9, 2.0, 0.0)
  assert float(jnp.mean(gated - plain)) < 0.8
  assert float(jnp.min(gated - plain)) >= 0.0


def test_bad_significances_are_refused():
  with pytest.raises(ValueError, match="significance must be None or > 0"):
    step_adaptation.adapt_steps(optax.sgd(1e-3), 0.5, significance=0.0)
  with pytest.raises(ValueError, match="step_adaptation_significance"):
    learned_opt.MLPLOpt(step_adaptation_significance=-1.0)


def test_bad_memories_are_refused():
  with pytest.raises(ValueError, match="memory must be in"):
    step_adaptation.adapt_steps(optax.sgd(1e-3), 0.5, memory=1.0)
  with pytest.raises(ValueError, match="step_adaptation_memory"):
    learned_opt.HierarchicalLOpt(step_adaptation_memory=-0.1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _reparameterized_loss(scale, reference_rms):
  """The quadratic's loss after 50 steps on weights trained as w = s w'.

  The wrapped optimizer takes sign steps of 1e-2 (a normalized direction,
  blind to the gradient's scale, as a learned optimizer's is)."""
  tx = step_adaptation.adapt_steps(
    optax.chain(optax.scale_by_sign(), optax.scale(-1e-2)),
    0.5,
    reference_rms=reference_rms,
  )
  curvature = {k: c * scale**2 for k, c in CURVATURE.items()}  # d2/dw'2
  start = jax.tree.map(lambda p: 0.03 * p / scale, START)
  params, _ = _descend(tx, start, 50, curvature)
  return _loss(params, curvature)


def test_a_reference_rms_makes_steps_follow_the_weights_scale():
  # Weights of RMS 0.03 at s = 1, 3e-4 at s = 100: both below the
  # reference 0.1, so the steps shrink with s and the run in w is the same.
  near = float(_reparameterized_loss(1.0, 0.1))
  small = float(_reparameterized_loss(100.0, 0.1))
  assert small == pytest.approx(near, rel=1e-3)
  # Without it, sign steps of 1e-2 on weights of 3e-4 bounce far from the
  # minimum (the adaptation's floor, e^-5, cannot shrink them enough).
  assert float(_reparameterized_loss(100.0, None)) > 100 * near


def test_the_model_scale_offset():
  def offset(params):
    return float(step_adaptation.model_scale_offset(params, 0.1))

  # RMS over all entries together: sqrt((4 * 0.02^2 + 4 * 0) / 8).
  rms = 0.02 / np.sqrt(2.0)
  params = {"w": jnp.full([2, 2], 0.02), "b": jnp.zeros([4])}
  assert offset(params) == pytest.approx(np.log(rms / 0.1), rel=1e-5)
  assert offset({"w": jnp.ones([3])}) == 0.0  # above the reference
  assert offset({"w": jnp.zeros([3]), "e": jnp.zeros([0])}) == 0.0
  # Non-finite entries count as 0; huge ones do not overflow.
  bad = {"w": jnp.asarray([0.02, jnp.nan, -jnp.inf, 0.02])}
  assert offset(bad) == pytest.approx(np.log(0.02 / np.sqrt(2) / 0.1), rel=1e-5)
  assert offset({"w": jnp.asarray([1e30, 1e30])}) == 0.0


def test_bad_reference_rms_is_refused_and_the_option_survives_a_checkpoint(
  tmp_path,
):
  with pytest.raises(ValueError, match="reference_rms must be None or > 0"):
    step_adaptation.adapt_steps(optax.sgd(1e-3), 0.5, reference_rms=0.0)
  with pytest.raises(ValueError, match="step_adaptation_reference_rms"):
    learned_opt.HierarchicalLOpt(step_adaptation_reference_rms=-1.0)
  lopt = learned_opt.MLPLOpt(
    hidden_size=4, step_adaptation=0.1, step_adaptation_reference_rms=0.1
  )
  checkpoint.save(tmp_path / "ckpt", lopt, lopt.init(jax.random.key(0)))
  assert checkpoint.load(tmp_path / "ckpt")[0] == lopt
