"""Tests of meta_train/unroll.py: persistent, resetting, vectorized unrolls.

The inner optimizer is a plain optax SGD (through with_extra_args_support)
chained with a pass-through transform that counts the validation losses it
is fed, on noisy quadratics of the real family. Two jitted unrolls (K=4 and
K=8) serve every test.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from meta_train import unroll
from task_suite import base as task_base
from task_suite.families import quadratic

NUM = 16  # population
K = 4
CFG = unroll.UnrollConfig(
  unroll_length=K, min_horizon=K, max_horizon=12, valid_every=3
)
CFG_2K = unroll.UnrollConfig(
  unroll_length=2 * K, min_horizon=K, max_horizon=12, valid_every=3
)


def _valid_counter() -> optax.GradientTransformationExtraArgs:
  """Passes updates through; counts finite ``valid_value``s it receives."""

  def init_fn(params):
    del params
    return {"fed": jnp.zeros([], jnp.int32), "calls": jnp.zeros([], jnp.int32)}

  def update_fn(updates, state, params=None, *, valid_value=None, **extra):
    del params, extra
    fed = jnp.isfinite(valid_value).astype(jnp.int32)
    return updates, {"fed": state["fed"] + fed, "calls": state["calls"] + 1}

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def optimizer_fn(theta):
  del theta  # a plain optax transform: nothing is meta-learned
  return optax.chain(
    optax.with_extra_args_support(optax.sgd(0.1)), _valid_counter()
  )


@pytest.fixture(scope="module")
def tasks():
  family = quadratic.QuadraticFamily()
  specs = [
    quadratic.QuadraticSpec(dim=2, seed=s, cond=c, noise_std=0.5)
    for s, c in [(1, 1.0), (2, 10.0), (3, 100.0)]
  ]
  return task_base.stack_tasks([family.task(s) for s in specs])


def _unroll(tasks, states, cfg):
  return unroll.unroll(optimizer_fn, {}, tasks, states, cfg, theta_axis=None)


UNROLL = jax.jit(functools.partial(_unroll, cfg=CFG))
UNROLL_2K = jax.jit(functools.partial(_unroll, cfg=CFG_2K))
INIT = jax.jit(
  lambda tasks, key: unroll.init_states(optimizer_fn, {}, tasks, key, NUM, CFG)
)


@pytest.fixture(scope="module")
def states0(tasks):
  return INIT(tasks, jax.random.key(0))


def _np(tree):
  return jax.tree.map(np.asarray, tree)


def _current_loss(tasks, states, i):
  """Normalized train loss instance ``i`` sees at its current step."""
  task = task_base.index_task(tasks, states.spec_index[i])
  k_batch, k_loss, _ = unroll.step_keys(states.key[i], states.step[i])
  params = jax.tree.map(lambda x: x[i], states.params)
  return task.normalize(task.loss(params, k_loss, task.batch(k_batch, "train")))


def test_init_states(tasks, states0):
  s = _np(states0)
  assert s.step.dtype == np.int32 and s.horizon.dtype == np.int32
  assert s.spec_index.dtype == np.int32
  assert s.params["x"].shape == (NUM, 2)
  np.testing.assert_array_equal(s.step, 0)
  assert np.all((s.spec_index >= 0) & (s.spec_index < 3))
  assert len(set(s.spec_index.tolist())) > 1
  assert len({tuple(k) for k in s.key}) == NUM
  # Staggered: first runs are cut to a fraction of a sampled horizon.
  assert np.all((s.horizon >= 1) & (s.horizon <= CFG.max_horizon))
  assert np.any(s.horizon < CFG.min_horizon)
  assert len(set(s.horizon.tolist())) >= 4
  # Same key, same population; each instance is new_run of its own key.
  unroll_again = INIT(tasks, jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, s, _np(unroll_again))
  one = unroll.new_run(optimizer_fn, {}, tasks, states0.key[3], CFG)
  np.testing.assert_array_equal(one.params["x"], s.params["x"][3])
  assert int(one.spec_index) == s.spec_index[3]
  assert CFG.min_horizon <= int(one.horizon) <= CFG.max_horizon
  assert int(one.horizon) >= s.horizon[3]


def test_unstacked_task_is_rejected(tasks):
  single = task_base.index_task(tasks, 0)
  with pytest.raises(ValueError, match="stack_tasks"):
    unroll.init_states(optimizer_fn, {}, single, jax.random.key(0), 2, CFG)


def test_losses_are_normalized_train_losses(tasks, states0):
  _, out = UNROLL(tasks, states0)
  assert out.loss.shape == (K, NUM) and out.weight.shape == (K, NUM)
  np.testing.assert_array_equal(out.weight, 1.0)
  assert bool(jnp.all(out.finite))
  for i in range(3):  # step 0 of a fresh run: the loss at the init params
    expected = _current_loss(tasks, states0, i)
    np.testing.assert_allclose(out.loss[0, i], expected, rtol=1e-5)


def test_log_meta_loss_is_the_log_of_the_normalized_loss(tasks, states0):
  log_cfg = dataclasses.replace(CFG, meta_loss_transform="log")
  _, linear = UNROLL(tasks, states0)
  _, logged = jax.jit(functools.partial(_unroll, cfg=log_cfg))(tasks, states0)
  np.testing.assert_allclose(
    logged.loss,
    np.log(np.maximum(linear.loss, 0.0) + unroll.LOG_FLOOR),
    rtol=1e-5,
  )
  with pytest.raises(ValueError, match="meta_loss_transform"):
    unroll.UnrollConfig(meta_loss_transform="sqrt")


def test_truncation_boundaries_do_not_change_runs(tasks, states0):
  """Two truncations of K steps == one of 2K: state persists, no re-init.

  Also cross-checks the two ways of skipping work: K=4 predicts which steps
  need a reset or a validation loss (min_horizon >= K), 2K=8 cannot and
  computes them at every step.
  """
  mid, out_a = UNROLL(tasks, states0)
  end, out_b = UNROLL(tasks, mid)
  end_2k, out_2k = UNROLL_2K(tasks, states0)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
    _np(end),
    _np(end_2k),
  )
  np.testing.assert_allclose(
    np.concatenate([out_a.loss, out_b.loss]), out_2k.loss, rtol=1e-6
  )
  np.testing.assert_array_equal(
    np.concatenate([out_a.reset, out_b.reset]), out_2k.reset
  )
  # Instances that did not reset carried their params: the first loss of
  # the second truncation is the loss at the first one's final params.
  kept = ~np.asarray(out_b.reset[0])
  assert kept.sum() >= NUM // 2
  for i in np.flatnonzero(kept)[:3]:
    expected = _current_loss(tasks, mid, i)
    np.testing.assert_allclose(out_b.loss[0, i], expected, rtol=1e-5)


def test_resets_happen_at_the_horizon(tasks, states0):
  """Host-side replay of when every instance must reset, over 8 truncations."""
  states = states0
  first_reset_time = np.full(NUM, -1)
  spec_changed = 0
  num_resets = 0
  for t in range(8):
    before = _np(states)
    states, out = UNROLL(tasks, states)
    after, reset = _np(states), np.asarray(out.reset)  # reset: [K, NUM]
    for i in range(NUM):
      s, h = before.step[i], before.horizon[i]
      expected = np.zeros(K, bool)
      if h - s < K:  # min_horizon >= K: at most one reset per truncation
        expected[h - s] = True
      np.testing.assert_array_equal(reset[:, i], expected, err_msg=f"{t},{i}")
      if expected.any():
        num_resets += 1
        j = int(np.argmax(expected))
        if first_reset_time[i] < 0:
          first_reset_time[i] = t * K + j
        assert after.step[i] == K - j
        assert CFG.min_horizon <= after.horizon[i] <= CFG.max_horizon
        next_key = jax.random.key_data(unroll._run_keys(before.key[i]).next_run)
        np.testing.assert_array_equal(after.key[i], next_key)
        spec_changed += int(after.spec_index[i] != before.spec_index[i])
      else:  # the run goes on: same run, same spec, K more steps
        assert after.step[i] == s + K
        assert after.horizon[i] == h
        assert after.spec_index[i] == before.spec_index[i]
        np.testing.assert_array_equal(after.key[i], before.key[i])
  assert num_resets >= NUM
  assert spec_changed >= 2  # resets draw a new spec of the signature
  # Staggered starts: the first resets do not all happen together.
  assert len(set(first_reset_time.tolist())) >= 4


def test_validation_loss_fed_every_n_steps(tasks, states0):
  states, _ = UNROLL(tasks, states0)
  states, _ = UNROLL(tasks, states)
  s0 = _np(states0)
  counter = _np(states.opt_state[1])
  s = _np(states)
  for i in range(NUM):
    if s.step[i] != s0.step[i] + 2 * K:
      continue  # reset in between: the counter restarted
    expected = sum(1 for step in range(2 * K) if step % CFG.valid_every == 0)
    assert counter["calls"][i] == 2 * K
    assert counter["fed"][i] == expected


def test_validation_loss_in_phase_with_truncations(tasks, states0):
  """valid_every divides K: everyone is fed on the same steps (j % N == 0)."""
  cfg = dataclasses.replace(CFG, valid_every=2)
  run = jax.jit(functools.partial(_unroll, cfg=cfg))
  states, out_a = run(tasks, states0)
  states, out_b = run(tasks, states)
  reset = np.concatenate([out_a.reset, out_b.reset])  # [2K, NUM]
  counter = _np(states.opt_state[1])
  assert reset.any()
  for i in range(NUM):
    start = int(np.flatnonzero(reset[:, i])[-1]) if reset[:, i].any() else 0
    assert counter["calls"][i] == 2 * K - start
    assert counter["fed"][i] == sum(
      1 for t in range(start, 2 * K) if t % 2 == 0
    )


def test_force_reset_restarts_at_next_step(tasks, states0):
  mask = jnp.arange(NUM) % 2 == 0
  forced = unroll.force_reset(states0, mask)
  _, out = UNROLL(tasks, forced)
  np.testing.assert_array_equal(out.reset[0], mask)


def test_step_weight():
  step = jnp.arange(10)
  horizon = jnp.full([10], 10)
  np.testing.assert_array_equal(
    unroll.step_weight(step, horizon, "uniform"), 1.0
  )
  end = unroll.step_weight(step, horizon, "end")
  np.testing.assert_allclose(jnp.mean(end), 1.0, rtol=1e-6)
  assert bool(jnp.all(jnp.diff(end) > 0))
  with pytest.raises(ValueError, match="weighting"):
    unroll.step_weight(step, horizon, "late")


def test_bad_unroll_config_names_the_field():
  with pytest.raises(ValueError, match="max_horizon"):
    unroll.UnrollConfig(min_horizon=10, max_horizon=5)
  with pytest.raises(ValueError, match="meta_loss_split"):
    unroll.UnrollConfig(meta_loss_split="test")
