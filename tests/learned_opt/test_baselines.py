"""Hand-designed baselines: interface, wiring, formulas, schedules, noise."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

from learned_opt import baselines

PARAMS = {
  "w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3),
  "b": jnp.array(0.5, jnp.bfloat16),
  "nested": [jnp.array([1.0, -2.0, 3.0, -4.0], jnp.float32)],
}

# What each optax-backed name must be, hyperparameters spelled out.
OPTAX_EQUIVALENT = {
  "sgd": lambda lr: optax.sgd(lr),
  "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
  "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
  "adagrad": lambda lr: optax.adagrad(lr),
  "adadelta": lambda lr: optax.adadelta(lr),
  "rmsprop": lambda lr: optax.rmsprop(lr),
  "adam": lambda lr: optax.adam(lr),
  "adamw": lambda lr: optax.adamw(lr),
  "amsgrad": lambda lr: optax.amsgrad(lr),
  "adamax": lambda lr: optax.adamax(lr),
  "nadam": lambda lr: optax.nadam(lr),
  "nadamw": lambda lr: optax.nadamw(lr),
}


def _loss(params):
  """A quadratic whose minimum is at 0 for every leaf."""
  return sum(
    jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(params)
  )


def _train(tx, params, num_steps):
  """num_steps of tx on _loss, passing the loss as `value`; all updates."""

  def step(carry, _):
    params, state = carry
    value, grads = jax.value_and_grad(_loss)(params)
    updates, state = tx.update(grads, state, params, value=value)
    return (optax.apply_updates(params, updates), state), (value, updates)

  (params, state), (losses, updates) = jax.lax.scan(
    step, (params, tx.init(params)), length=num_steps
  )
  return params, state, losses, updates


def test_names_are_complete():
  assert set(baselines.BASELINE_NAMES) == set(OPTAX_EQUIVALENT) | {
    "powersign",
    "addsign",
  }


@pytest.mark.parametrize("name", baselines.BASELINE_NAMES)
def test_interface_and_descent(name):
  lr = 1.0 if name == "adadelta" else 0.05
  tx = baselines.baseline(name, learning_rate=lr)

  @jax.jit
  def run(params):
    _, state0 = _train(tx, params, 0)[:2]
    params, state, losses, _ = _train(tx, params, 25)
    grads = jax.grad(_loss)(params)
    plain, _ = tx.update(grads, state, params)
    extra, _ = tx.update(grads, state, params, value=1.0, valid_value=2.0)
    return params, state0, state, losses, plain, extra

  params, state0, state, losses, plain, extra = run(PARAMS)
  test_utils.assert_tree_shapes_dtypes_equal(params, PARAMS)
  test_utils.assert_tree_shapes_dtypes_equal(plain, PARAMS)
  test_utils.assert_tree_shapes_dtypes_equal(state, state0)
  test_utils.assert_tree_all_finite(params)
  # Extra arguments are accepted and ignored.
  test_utils.assert_trees_equal(plain, extra)
  assert float(losses[-1]) < 0.95 * float(losses[0]), (name, losses)


@pytest.mark.parametrize("name", sorted(OPTAX_EQUIVALENT))
def test_same_updates_as_optax(name):
  tx = baselines.baseline(name, learning_rate=0.1)
  reference = OPTAX_EQUIVALENT[name](0.1)
  params = {"w": PARAMS["w"], "v": PARAMS["nested"][0]}
  ours = jax.jit(lambda p: _train(tx, p, 4)[3])(params)
  theirs = jax.jit(lambda p: _train(reference, p, 4)[3])(params)
  test_utils.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7)


def _reference_sign_decay(kind, t, total, periods):
  """The paper's decays (Bello et al. 2017, sec. 5.1), t clipped to T."""
  t = min(t, total)
  if kind == "constant":
    return 1.0
  if kind == "linear":
    return 1.0 - t / total
  if kind == "cyclic":
    return 0.5 * (1.0 + math.cos(2.0 * math.pi * periods * t / total))
  return 0.5 * (1.0 + math.cos(math.pi * ((periods * t) % total) / total))


@pytest.mark.parametrize(
  "rule, kind",
  [
    ("powersign", "constant"),
    ("powersign", "linear"),
    ("powersign", "cyclic"),
    ("powersign", "restart"),
    ("addsign", "constant"),
    ("addsign", "restart"),
  ],
)
def test_sign_optimizers_follow_the_formulas(rule, kind):
  lr, beta, total, periods = 0.1, 0.9, 4, 1.5
  alpha = 2.5 if rule == "powersign" else 0.7  # not the defaults: tests wiring
  decay_args = {}
  if kind != "constant":
    decay_args = dict(sign_decay=kind, sign_decay_steps=total)
    if kind != "linear":
      decay_args["sign_decay_periods"] = periods
  tx = baselines.baseline(
    rule, learning_rate=lr, alpha=alpha, beta=beta, **decay_args
  )
  rng = np.random.default_rng(0)
  grads = rng.normal(size=(7, 5)).astype(np.float32)  # [steps, entries]
  # Steps 5 and 6 reuse earlier gradients with flipped signs, so sign(m)
  # and sign(g) disagree on some entries.
  grads[5] = -grads[4]
  grads[6] = -grads[5] * 0.1

  @jax.jit
  def run(grads):
    def step(state, g):
      updates, state = tx.update(g, state, jnp.zeros(5))
      return state, updates

    return jax.lax.scan(step, tx.init(jnp.zeros(5)), grads)[1]

  ours = np.asarray(run(jnp.asarray(grads)))
  m = np.zeros(5)
  signs_seen = set()
  for t, g in enumerate(grads.astype(np.float64)):
    m = beta * m + (1 - beta) * g
    f = _reference_sign_decay(kind, t, total, periods)
    agree = f * np.sign(g) * np.sign(m)
    signs_seen |= set(np.sign(g) * np.sign(m))
    d = alpha**agree * g if rule == "powersign" else (alpha + agree) * g
    np.testing.assert_allclose(ours[t], -lr * d, rtol=2e-6, err_msg=f"t={t}")
  assert signs_seen == {-1.0, 1.0}  # both branches of the rule were used


def _sgdr_reference(t, peak, first, mult, warmup, final_scale):
  """SGDR (Loshchilov & Hutter 2017, eq. 5) with cycle i of first*mult**i."""
  if t < warmup:
    return peak * t / warmup
  start, length = 0, first
  while t >= start + length:
    start, length = start + length, length * mult
  # The first cycle's cosine runs over its length minus the warmup.
  offset = warmup if start == 0 else 0
  frac = (t - start - offset) / (length - offset)
  lo = peak * final_scale
  return lo + 0.5 * (peak - lo) * (1.0 + math.cos(math.pi * frac))


SCHEDULE_CASES = {
  # name: (baseline options, reference lr(t) with peak 0.2)
  "constant": ({}, lambda t: 0.2),
  "constant_warmup": (
    dict(warmup_steps=4),
    lambda t: 0.2 * min(t, 4) / 4,
  ),
  "cosine": (
    dict(schedule="cosine", decay_steps=10, final_lr_scale=0.1),
    lambda t: (
      _sgdr_reference(min(t, 10), 0.2, 10, 1, 0, 0.1) if t < 10 else 0.02
    ),
  ),
  "warmup_cosine": (
    dict(schedule="warmup_cosine", warmup_steps=3, decay_steps=10),
    lambda t: _sgdr_reference(t, 0.2, 10, 1, 3, 0.0) if t < 10 else 0.0,
  ),
  "sgdr": (
    dict(schedule="sgdr", decay_steps=3, period_mult=2, num_cycles=3),
    lambda t: _sgdr_reference(t, 0.2, 3, 2, 0, 0.0) if t < 21 else 0.0,
  ),
  "sgdr_warmup": (
    dict(
      schedule="sgdr",
      decay_steps=4,
      warmup_steps=2,
      period_mult=1,
      num_cycles=5,
      final_lr_scale=0.25,
    ),
    lambda t: _sgdr_reference(t, 0.2, 4, 1, 2, 0.25) if t < 20 else 0.05,
  ),
}


@pytest.mark.parametrize("case", sorted(SCHEDULE_CASES))
def test_schedules_scale_sgd_steps(case):
  options, reference = SCHEDULE_CASES[case]
  tx = baselines.baseline("sgd", learning_rate=0.2, **options)
  num_steps = 24

  @jax.jit
  def run():
    def step(state, _):
      updates, state = tx.update(jnp.ones(2), state, jnp.zeros(2))
      return state, updates[0]

    return jax.lax.scan(step, tx.init(jnp.zeros(2)), length=num_steps)[1]

  expected = [reference(t) for t in range(num_steps)]
  np.testing.assert_allclose(-np.asarray(run()), expected, atol=1e-6)
  if case.startswith("sgdr"):
    assert max(expected[1:]) == pytest.approx(0.2)  # it did restart


def test_gradient_noise_is_annealed_and_keyed():
  eta, gamma, n = 0.5, 0.55, 20000

  def noise_updates(key):
    tx = baselines.baseline(
      "sgd", learning_rate=1.0, noise_eta=eta, noise_key=key
    )
    zeros = jnp.zeros(n)  # zero gradients: the updates are minus the noise

    def step(state, _):
      updates, state = tx.update(zeros, state, zeros)
      return state, updates

    return jax.lax.scan(step, tx.init(zeros), length=10)[1]  # [10, n]

  run = jax.jit(noise_updates)
  noise = np.asarray(run(jax.random.key(3)))
  for t in (0, 9):
    expected = eta / (1.0 + t) ** gamma  # Neelakantan et al. 2015, eq. 1
    assert np.var(noise[t]) == pytest.approx(expected, rel=0.05), t
    assert abs(np.mean(noise[t])) < 4 * math.sqrt(expected / n)
  np.testing.assert_array_equal(noise, np.asarray(run(jax.random.key(3))))
  assert not np.allclose(noise, np.asarray(run(jax.random.key(4))))


@pytest.mark.parametrize("name", ["adam", "momentum", "nadamw"])
def test_learning_rate_grid_under_vmap(name):
  lrs = jnp.array([1e-3, 3e-2, 0.3])

  def final_params(lr):
    tx = baselines.baseline(
      name, learning_rate=lr, schedule="cosine", decay_steps=8
    )
    return _train(tx, PARAMS["w"], 6)[0]

  grid = jax.jit(jax.vmap(final_params))(lrs)
  for i, lr in enumerate([1e-3, 3e-2, 0.3]):
    single = jax.jit(functools.partial(final_params, lr))()  # lr a constant
    np.testing.assert_allclose(grid[i], single, rtol=1e-5, atol=1e-7)
  # Different learning rates really give different runs.
  assert not np.allclose(grid[0], grid[2])


@pytest.mark.parametrize(
  "params, match",
  [
    ({}, "empty"),
    (
      {"w": jnp.ones(3), "step": jnp.zeros([], jnp.int32)},
      r"\['step'\].*int32",
    ),
    ({"mask": jnp.ones(2, bool)}, r"\['mask'\].*bool"),
  ],
)
def test_init_rejects_bad_params(params, match):
  with pytest.raises(ValueError, match=match):
    baselines.baseline("adam").init(params)


def test_unknown_name_lists_valid_names():
  with pytest.raises(
    ValueError, match="unknown baseline optimizer 'adamm'"
  ) as e:
    baselines.baseline("adamm")
  for name in baselines.BASELINE_NAMES:
    assert name in str(e.value)


@pytest.mark.parametrize(
  "name, hparams, match",
  [
    ("adam", dict(momentum=0.9), r"unknown hyperparameter\(s\) momentum.*b1"),
    ("nadam", dict(nesterov=False), "fixed by the name 'nadam'"),
    ("sgd", dict(momentum=0.9), "fixed by the name 'sgd'"),
    ("adam", dict(schedule="cosine"), "needs decay_steps"),
    ("adam", dict(schedule="linear"), "unknown schedule 'linear'.*sgdr"),
    ("adam", dict(decay_steps=10), "no effect with schedule='constant'"),
    ("adam", dict(schedule="warmup_cosine", decay_steps=5), "warmup_steps"),
    ("adam", dict(schedule="cosine", decay_steps=5, warmup_steps=5), "smaller"),
    ("adam", dict(noise_eta=0.01), "noise_key"),
    ("adam", dict(noise_gamma=0.5), "without noise_eta"),
    ("powersign", dict(sign_decay="linear"), "sign_decay_steps"),
    ("addsign", dict(sign_decay="cosine"), "unknown sign_decay 'cosine'"),
  ],
)
def test_bad_hyperparameters(name, hparams, match):
  with pytest.raises(ValueError, match=match):
    baselines.baseline(name, **hparams)


def test_hparam_names_match_what_baseline_accepts():
  for name in baselines.BASELINE_NAMES:
    names = baselines.hparam_names(name)
    assert "learning_rate" in names and "schedule" in names
  assert "momentum" in baselines.hparam_names("momentum")
  assert "nesterov" not in baselines.hparam_names("nesterov")
  assert "alpha" in baselines.hparam_names("powersign")


@pytest.mark.parametrize("name", ["adam", "powersign"])
def test_gradients_of_another_shape_raise(name):
  tx = baselines.baseline(name)
  params = {"w": jnp.ones((3, 4))}
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"\['w'\] has shape \(4, 3\), but"):
    tx.update({"w": jnp.ones((4, 3))}, state, params)


@pytest.mark.parametrize(
  "name, kwargs, message",
  [
    ("adam", {"learning_rate": -1e-3}, "learning_rate must be finite and > 0"),
    ("sgd", {"learning_rate": 0.0}, "learning_rate must be finite and > 0"),
    ("momentum", {"learning_rate": float("nan")}, "learning_rate .* nan"),
    ("adam", {"b1": 1.0}, r"b1 must be finite and in \[0, 1\), got 1.0"),
    ("adamw", {"b2": -0.1}, r"b2 must be .* in \[0, 1\)"),
    ("adam", {"eps": 0.0}, "eps must be finite and > 0"),
    ("rmsprop", {"decay": 1.5}, r"decay must be .* in \[0, 1\)"),
    ("nesterov", {"momentum": 1.2}, r"momentum must be .* in \[0, 1\)"),
    ("adamw", {"weight_decay": -1.0}, "weight_decay must be finite and >= 0"),
    ("powersign", {"alpha": 0.0}, "alpha must be finite and > 0"),
    ("addsign", {"beta": 1.0}, r"beta must be .* in \[0, 1\)"),
    ("adam", {"noise_eta": -0.1}, "noise_eta must be finite and > 0"),
  ],
)
def test_out_of_range_hyperparameters_raise(name, kwargs, message):
  with pytest.raises(ValueError, match=rf"baseline\('{name}'\): {message}"):
    baselines.baseline(name, **kwargs)


def test_traced_and_scheduled_learning_rates_are_not_range_checked():
  lrs = jnp.asarray([1e-3, 1e-2])
  grads = {"w": jnp.ones(2)}

  def step(lr):
    tx = baselines.baseline("adam", learning_rate=lr)
    return tx.update(grads, tx.init(grads), grads)[0]["w"]

  assert jax.vmap(step)(lrs).shape == (2, 2)
  baselines.baseline("sgd", learning_rate=optax.constant_schedule(0.1))
  baselines.baseline("adam", learning_rate=np.float32(1e-3))
