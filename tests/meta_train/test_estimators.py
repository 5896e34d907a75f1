"""Tests of the meta-gradient estimators (ES, PES, TBPTT) and their registry.

Correctness runs on the real quadratic family (dim 2, noisy) with a small
MLPLOpt (162 meta-parameters, step_mult 0.1 so 8 inner steps move the loss).
Every statistical test starts from the same population: N pairs at step 0 of
runs of exactly T * k = 8 steps (one full episode). The compiled functions
(ES and TBPTT over 8 steps, PES over 4, the explicit unroll) are shared.

NaN handling runs on a tiny task whose loss is ``log(nan_at - x0)`` plus
terms that push ``x0`` up, trained by SGD with a learned log learning rate.
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from learned_opt import base as lopt_base
from learned_opt import mlp_lopt
from meta_train import estimators, unroll
from meta_train.estimators import es, pes, reductions, tbptt
from task_suite import base as task_base
from task_suite.families import quadratic

N = 1024  # pairs (ES/PES) or instances (TBPTT) in the statistical tests
T, k = 2, 4  # truncations x steps: one episode of 8 inner steps
LOPT = mlp_lopt.MLPLOpt(hidden_size=4, num_hidden_layers=1, step_mult=0.1)
CFG_EPISODE = unroll.UnrollConfig(
  unroll_length=T * k, min_horizon=T * k, max_horizon=T * k, valid_every=5
)
CFG_TRUNC = dataclasses.replace(CFG_EPISODE, unroll_length=k)
STD = 0.01


def flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def cosine(a, b) -> float:
  return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


pair_up = es.both_members  # [n, ...] -> [n, 2, ...]


@pytest.fixture(scope="module")
def quad_tasks():
  family = quadratic.QuadraticFamily()
  specs = [
    quadratic.QuadraticSpec(dim=2, seed=s, cond=c, noise_std=0.1)
    for s, c in enumerate([1.0, 10.0, 100.0, 3.0])
  ]
  return task_base.stack_tasks([family.task(s) for s in specs])


@pytest.fixture(scope="module")
def theta():
  @jax.jit
  def init(key):
    # Nonzero everywhere, so that theta + 1e-30 z == theta in float32.
    k_init, k_noise = jax.random.split(key)
    theta = LOPT.init(k_init)
    noise = optax.tree.random_like(k_noise, theta)
    return jax.tree.map(lambda t, z: t + 0.01 * z, theta, noise)

  return init(jax.random.key(0))


@pytest.fixture(scope="module")
def episode_states(quad_tasks, theta):
  """N runs at step 0, each exactly one 8-step episode long."""
  init = jax.jit(
    lambda th, tasks: unroll.init_states(
      LOPT.optimizer, th, tasks, jax.random.key(2), N, CFG_EPISODE, False
    )
  )
  states = init(theta, quad_tasks)
  np.testing.assert_array_equal(states.horizon, T * k)
  return states


ES_EPISODE = jax.jit(
  lambda std, th, tasks, state, key: es.estimate(
    LOPT.optimizer, CFG_EPISODE, std, th, tasks, state, key
  )
)
PES_TRUNC = jax.jit(
  lambda th, tasks, state, key: pes.estimate(
    LOPT.optimizer, CFG_TRUNC, STD, th, tasks, state, key
  )
)
TBPTT_GRADS = jax.jit(
  lambda th, tasks, inner: tbptt.per_instance_grads(
    LOPT.optimizer, CFG_EPISODE, th, tasks, inner
  )
)


@pytest.fixture(scope="module")
def exact(theta, quad_tasks, episode_states):
  """TBPTT per-instance gradients [N, ...] of the full episode."""
  grads, _, out = TBPTT_GRADS(theta, quad_tasks, episode_states)
  assert bool(jnp.all(out.finite))
  assert not bool(jnp.any(out.reset))
  return grads


def explicit_episode_loss(theta, task, params, opt_state, step, raw_key):
  """The meta-loss of one instance, unrolled by hand (no vmap, no resets).

  A ``lax.fori_loop`` rather than a Python loop only to compile faster.
  """
  tx = LOPT.optimizer(theta)

  def inner_step(j, carry):
    params, opt_state, total = carry
    k_batch, k_loss, k_valid = unroll.step_keys(raw_key, step + j)
    loss, grads = jax.value_and_grad(task.loss)(
      params, k_loss, task.batch(k_batch, "train")
    )
    valid = unroll.valid_loss(task, params, k_valid)
    fed = (step + j) % CFG_EPISODE.valid_every == 0
    updates, opt_state = tx.update(
      grads,
      opt_state,
      params,
      value=loss,
      valid_value=jnp.where(fed, valid, jnp.nan),
    )
    params = optax.apply_updates(params, updates)
    return params, opt_state, total + task.normalize(loss)

  carry = (params, opt_state, jnp.zeros([], jnp.float32))
  _, _, total = jax.lax.fori_loop(0, T * k, inner_step, carry)
  return total / (T * k)


@jax.jit
def explicit_grad(theta, tasks, state):
  task = task_base.index_task(tasks, state.spec_index)
  return jax.grad(explicit_episode_loss)(
    theta, task, state.params, state.opt_state, state.step, state.key
  )


def test_tbptt_equals_grad_of_explicit_unroll(
  theta, quad_tasks, episode_states, exact
):
  for i in (0, 1, 2, 3):
    one = jax.tree.map(lambda x: x[i], episode_states)  # noqa: B023
    want = flat(explicit_grad(theta, quad_tasks, one))
    got = flat(jax.tree.map(lambda g: g[i], exact))  # noqa: B023
    assert np.linalg.norm(want) > 1e-4
    np.testing.assert_allclose(
      got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max()
    )


def test_es_cosine_with_exact_gradient(
  theta, quad_tasks, episode_states, exact
):
  """1024 antithetic pairs, std 0.01, one seed: cosine > 0.6 and norm ratio
  in (0.8, 2) (measured over 12 seeds: 0.70-0.79 and 1.2-1.51)."""
  true_grad = flat(jax.tree.map(lambda g: jnp.mean(g, 0), exact))
  grad, _, metrics = ES_EPISODE(
    STD, theta, quad_tasks, es.ESState(episode_states), jax.random.key(10)
  )
  assert int(metrics["num_nonfinite"]) == 0
  assert int(metrics["inner_steps"]) == 2 * N * T * k
  assert cosine(flat(grad), true_grad) > 0.6
  ratio = np.linalg.norm(flat(grad)) / np.linalg.norm(true_grad)
  assert 0.8 < ratio < 2.0


def test_antithetic_members_identical_at_zero_std(
  theta, quad_tasks, episode_states
):
  """std -> 0: members share init, data and noise, so every pair's loss
  difference is exactly 0, whatever the noise key: zero variance."""
  for seed in (20, 21):
    grad, state, metrics = ES_EPISODE(
      1e-30, theta, quad_tasks, es.ESState(episode_states), jax.random.key(seed)
    )
    np.testing.assert_array_equal(flat(grad), 0.0)
  # And the carried state is the unperturbed run: the same as TBPTT's.
  _, tb_states, tb_out = TBPTT_GRADS(theta, quad_tasks, episode_states)
  np.testing.assert_allclose(
    state.inner.params["x"], tb_states.params["x"], rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    metrics["meta_loss"], jnp.mean(reductions.mean_loss(tb_out)), rtol=1e-5
  )


def test_pes_over_full_episode_matches_es(
  theta, quad_tasks, episode_states, exact
):
  """PES over 2 truncations of 4 steps (one whole run, no reset) vs ES over
  the 8-step episode, each averaged over 4 seeds x 1024 pairs.

  Thresholds (measured over 6 groups of 4 seeds): PES vs ES cosine > 0.7
  (0.78-0.85) and norm ratio in [0.75, 1.33] (0.93-1.08); each vs the exact
  episode gradient, cosine > 0.85 (ES 0.90-0.92, PES 0.90-0.92).
  """
  es_mean, pes_mean = 0.0, 0.0
  for seed in range(4):
    grad, _, _ = ES_EPISODE(
      STD,
      theta,
      quad_tasks,
      es.ESState(episode_states),
      jax.random.key(100 + seed),
    )
    es_mean = es_mean + flat(grad) / 4
    state = pes.PESState(
      pair_up(episode_states),
      jax.tree.map(lambda t: jnp.zeros((N,) + t.shape), theta),
    )
    for t in range(T):
      key = jax.random.fold_in(jax.random.key(200 + seed), t)
      grad, state, metrics = PES_TRUNC(theta, quad_tasks, state, key)
      assert int(metrics["num_resets"]) == 0
      # Each truncation estimates the gradient of its share of the episode.
      pes_mean = pes_mean + flat(grad) / (4 * T)
    np.testing.assert_array_equal(state.inner.step, T * k)
  true_grad = flat(jax.tree.map(lambda g: jnp.mean(g, 0), exact))
  assert cosine(pes_mean, es_mean) > 0.7
  assert 0.75 < np.linalg.norm(pes_mean) / np.linalg.norm(es_mean) < 1.33
  assert cosine(es_mean, true_grad) > 0.85
  assert cosine(pes_mean, true_grad) > 0.85


def test_pes_accumulates_and_resets_perturbations(
  theta, quad_tasks, episode_states
):
  state = pes.PESState(
    pair_up(episode_states),
    jax.tree.map(lambda t: jnp.zeros((N,) + t.shape), theta),
  )
  keys = [jax.random.key(300 + t) for t in range(T + 1)]
  for t in range(T):
    _, state, _ = PES_TRUNC(theta, quad_tasks, state, keys[t])
  noise = jax.jit(es.sample_noise, static_argnums=2)
  z = [noise(key, theta, N) for key in keys]
  want = jax.tree.map(lambda *zs: sum(zs), *z[:T])
  np.testing.assert_allclose(flat(state.accum), flat(want), rtol=1e-5)
  # The runs end at step 8: the next truncation starts new runs, and the
  # accumulator restarts from that truncation's noise.
  _, state, metrics = PES_TRUNC(theta, quad_tasks, state, keys[T])
  assert int(metrics["num_resets"]) == N
  np.testing.assert_allclose(flat(state.accum), flat(z[T]), rtol=1e-6)


# ------------------------------------------------------------ NaN handling


class BlowupTask(task_base.Task):
  """``-x0 + x1^2/2 + log(nan_at - x0) + 0.1 g.x``: NaN once x0 >= nan_at."""

  def init(self, key):
    return {"x": 0.1 * jax.random.normal(key, (2,))}

  def batch(self, key, split):
    key = jax.random.fold_in(key, task_base.SPLITS.index(split))
    return {"g": jax.random.normal(key, (2,))}

  def loss(self, params, key, batch):
    del key
    x = params["x"]
    log_term = jnp.log(self.dynamic["nan_at"] - x[0])
    return -x[0] + 0.5 * x[1] ** 2 + log_term + 0.1 * jnp.dot(batch["g"], x)

  def normalize(self, loss):
    return loss / 10.0


@dataclasses.dataclass(frozen=True)
class LearnedLRSGD(lopt_base.LearnedOptimizer):
  """SGD whose log learning rate is the only meta-parameter."""

  architecture: ClassVar[str] = "test_learned_lr_sgd"

  def init(self, key):
    del key
    return {"log_lr": jnp.zeros([], jnp.float32)}

  def optimizer(self, theta):
    lr = jnp.exp(theta["log_lr"])
    return optax.with_extra_args_support(optax.sgd(lr))


NAN_K = 6
NAN_PAIRS = 8


def blowup_tasks():
  """Spec 0 never blows up; spec 1 blows up after ~3 SGD steps at lr 1."""
  tasks = [
    BlowupTask(("blowup",), {"nan_at": jnp.float32(v)}, {}) for v in (1e6, 2.0)
  ]
  return task_base.stack_tasks(tasks)


def _pin_specs(inner: unroll.InnerState) -> unroll.InnerState:
  """Instances 0, 2, 4.. on the safe spec, 1, 3, .. on the blowing-up one."""
  shape = inner.step.shape
  index = jnp.arange(shape[0]) % 2
  index = jnp.broadcast_to(
    index.reshape((-1,) + (1,) * (len(shape) - 1)), shape
  )
  return inner._replace(
    spec_index=index.astype(jnp.int32),
    step=jnp.zeros(shape, jnp.int32),
    horizon=jnp.full(shape, 50, jnp.int32),
  )


NAN_CFG = unroll.UnrollConfig(
  unroll_length=NAN_K, min_horizon=50, max_horizon=50, valid_every=2
)


@functools.cache
def _estimate(name: str):
  cfg = estimators.EstimatorConfig(
    name=name,
    num_pairs=NAN_PAIRS,
    unroll_length=NAN_K,
    min_horizon=50,
    max_horizon=50,
    valid_every=2,
  )
  return estimators.make_estimator(LearnedLRSGD(), cfg)


@functools.cache
def _blowup_inner() -> unroll.InnerState:
  """NAN_PAIRS runs with pinned specs (one compile shared by all tests)."""
  opt_fn = LearnedLRSGD().optimizer
  init = jax.jit(
    lambda theta, tasks: unroll.init_states(
      opt_fn, theta, tasks, jax.random.key(1), NAN_PAIRS, NAN_CFG
    )
  )
  return _pin_specs(init(LearnedLRSGD().init(None), blowup_tasks()))


def _initial_state(name, theta, tasks):
  """What ``est.init`` builds, from the shared inner states."""
  est = _estimate(name)
  shapes = jax.eval_shape(est.init, theta, tasks, jax.random.key(1))
  for leaf in jax.tree.leaves(shapes):  # the contract: leading [num_pairs]
    assert leaf.shape[0] == NAN_PAIRS
  inner = _blowup_inner()
  if name == "pes":
    zeros = jax.tree.map(lambda t: jnp.zeros((NAN_PAIRS,) + t.shape), theta)
    state = pes.PESState(pair_up(inner), zeros)
  else:
    state = type(shapes)(inner)
  assert jax.tree.structure(state) == jax.tree.structure(shapes)
  return state


@pytest.mark.parametrize("name", estimators.NAMES)
def test_nan_instances_are_dropped_counted_and_reset(name):
  tasks = blowup_tasks()
  theta = LearnedLRSGD().init(jax.random.key(0))
  estimate = jax.jit(_estimate(name).estimate)
  state = _initial_state(name, theta, tasks)
  grad, new_state, metrics = estimate(theta, tasks, state, jax.random.key(2))
  assert np.isfinite(float(grad["log_lr"]))
  assert float(grad["log_lr"]) != 0.0
  assert int(metrics["num_nonfinite"]) == NAN_PAIRS // 2
  assert np.isfinite(float(metrics["meta_loss"]))
  inner = new_state.inner
  blown = np.arange(NAN_PAIRS) % 2 == 1
  step = np.asarray(inner.step).reshape(NAN_PAIRS, -1)
  np.testing.assert_array_equal(step[blown], 50)  # forced to end the run
  np.testing.assert_array_equal(step[~blown], NAN_K)
  if name == "pes":
    np.testing.assert_array_equal(new_state.accum["log_lr"][blown], 0.0)
  # Next truncation: the dropped instances start new runs, the others go on.
  grad, newer_state, metrics = estimate(
    theta, tasks, new_state, jax.random.key(3)
  )
  assert np.isfinite(float(grad["log_lr"]))
  assert int(metrics["num_resets"]) == NAN_PAIRS // 2
  keys = np.asarray(newer_state.inner.key).reshape(NAN_PAIRS, -1, 2)[:, 0]
  old_keys = np.asarray(inner.key).reshape(NAN_PAIRS, -1, 2)[:, 0]
  assert np.all(np.any(keys != old_keys, axis=-1) == blown)
  # theta moved by these gradients stays finite.
  assert np.isfinite(float(theta["log_lr"] - 0.1 * grad["log_lr"]))


def test_valid_split_measures_the_validation_loss():
  tasks = blowup_tasks()
  cfg = unroll.UnrollConfig(
    unroll_length=2, min_horizon=50, max_horizon=50, meta_loss_split="valid"
  )
  opt_fn = LearnedLRSGD().optimizer
  theta = {"log_lr": jnp.float32(-3.0)}
  states = _blowup_inner()._replace(spec_index=jnp.zeros(NAN_PAIRS, jnp.int32))
  _, out = jax.jit(
    lambda states: unroll.unroll(opt_fn, theta, tasks, states, cfg, None)
  )(states)
  task = task_base.index_task(tasks, 0)
  for i in range(2):
    params = {"x": states.params["x"][i]}
    k_batch, k_loss, k_valid = unroll.step_keys(states.key[i], 0)
    valid = task.normalize(unroll.valid_loss(task, params, k_valid))
    train = task.normalize(
      task.loss(params, k_loss, task.batch(k_batch, "train"))
    )
    np.testing.assert_allclose(out.loss[0, i], valid, rtol=1e-6)
    assert abs(float(valid - train)) > 1e-6  # a different batch


# ------------------------------------------------------- config and registry


@pytest.mark.parametrize(
  "field,value",
  [
    ("num_pairs", 0),
    ("unroll_length", 0),
    ("std", 0.0),
    ("std", float("nan")),
    ("min_horizon", 0),
    ("max_horizon", 5),
    ("valid_every", -1),
    ("meta_loss_split", "test"),
    ("meta_loss_weighting", "late"),
    ("unroll_length", 20.0),
    ("num_pairs", True),
    ("std", "0.01"),
  ],
)
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=f"EstimatorConfig.{field}"):
    estimators.EstimatorConfig(**{field: value})


def test_unknown_estimator_lists_the_valid_names():
  with pytest.raises(ValueError, match="'es', 'pes', 'tbptt'"):
    estimators.EstimatorConfig(name="reinforce")


def test_make_estimator_needs_an_optimizer_factory():
  with pytest.raises(TypeError, match="optimizer"):
    estimators.make_estimator(object(), estimators.EstimatorConfig())


@dataclasses.dataclass(frozen=True)
class ChunkedLRSGD(LearnedLRSGD):
  """``LearnedLRSGD`` that records the chunk size it builds transforms with."""

  architecture: ClassVar[str] = "test_chunked_lr_sgd"
  chunk_size: int = 1024
  built: list = dataclasses.field(default_factory=list, compare=False)

  def optimizer(self, theta):
    self.built.append(self.chunk_size)
    return super().optimizer(theta)


@pytest.mark.parametrize(
  "name, num_pairs, num_devices, want",
  [("es", 4, 1, 256), ("es", 4, 8, 1024), ("pes", 8, 2, 256),
   ("tbptt", 8, 1, 256), ("tbptt", 64, 1, 128)],
)  # fmt: skip
def test_estimators_tune_the_chunk_size_to_the_instances_per_device(
  name, num_pairs, num_devices, want
):
  built = []
  lopt = ChunkedLRSGD(built=built)
  cfg = estimators.EstimatorConfig(name=name, num_pairs=num_pairs)
  assert estimators.population_size(cfg) == num_pairs * (
    1 if name == "tbptt" else 2
  )
  est = estimators.make_estimator(lopt, cfg, num_devices)
  jax.eval_shape(est.init, lopt.init(None), blowup_tasks(), jax.random.key(0))
  assert built and set(built) == {want}


def test_make_estimator_can_keep_the_chunk_size():
  built = []
  lopt = ChunkedLRSGD(built=built)
  cfg = estimators.EstimatorConfig(name="es", num_pairs=64)
  est = estimators.make_estimator(lopt, cfg, tune_chunk_size=False)
  jax.eval_shape(est.init, lopt.init(None), blowup_tasks(), jax.random.key(0))
  assert built and set(built) == {1024}


def test_tbptt_matches_finite_differences(
  theta, quad_tasks, episode_states, exact
):
  """The backprop meta-gradient agrees with central differences of the
  episode's meta-loss, along the gradient and along a direction half
  random (float32: the directions keep the derivative well above the
  rounding error of the differences)."""
  i = 1
  one = jax.tree.map(lambda x: x[i], episode_states)
  task = task_base.index_task(quad_tasks, one.spec_index)
  loss = jax.jit(
    lambda th: explicit_episode_loss(
      th, task, one.params, one.opt_state, one.step, one.key
    )
  )
  g = jax.tree.map(lambda x: x[i], exact)
  z = optax.tree.random_like(jax.random.key(5), g)
  z = optax.tree.scale(optax.tree.norm(g) / optax.tree.norm(z), z)
  for d in (g, optax.tree.add(g, z)):
    d = optax.tree.scale(1.0 / optax.tree.norm(d), d)
    eps = 3e-3
    plus = loss(optax.tree.add(theta, optax.tree.scale(eps, d)))
    minus = loss(optax.tree.add(theta, optax.tree.scale(-eps, d)))
    fd = float(plus - minus) / (2 * eps)
    np.testing.assert_allclose(float(optax.tree.vdot(g, d)), fd, rtol=2e-2)


@functools.cache
def _restricted_es(paths: tuple[str, ...]):
  cfg = estimators.EstimatorConfig(
    name="es", num_pairs=N, std=STD, **dataclasses.asdict(CFG_EPISODE)
  )
  est = estimators.make_estimator(
    LOPT, cfg, tune_chunk_size=False, trainable=paths
  )
  return jax.jit(est.estimate)


def test_restricted_es_estimates_only_the_trainable_part_with_less_noise(
  theta, quad_tasks, episode_states, exact
):
  """Perturbing only the first layer (152 of 162 meta-parameters): exactly
  zero elsewhere, and closer to the exact gradient of that layer than the
  same layer's part of a full ES estimate (same noise key, same pairs),
  whose perturbations of the last layer (which sets the step directly) add
  their effect on the loss as noise."""
  grad, _, metrics = _restricted_es(("mlp/0",))(
    theta, quad_tasks, es.ESState(episode_states), jax.random.key(10)
  )
  assert int(metrics["num_nonfinite"]) == 0
  np.testing.assert_array_equal(flat(grad["mlp"][1]), 0.0)
  full, _, _ = ES_EPISODE(
    STD, theta, quad_tasks, es.ESState(episode_states), jax.random.key(10)
  )
  true_first = flat(jax.tree.map(lambda g: jnp.mean(g, 0), exact["mlp"][0]))
  restricted_cos = cosine(flat(grad["mlp"][0]), true_first)
  full_cos = cosine(flat(full["mlp"][0]), true_first)
  # Measured with keys 10 and 11: 0.86 and 0.84, against 0.22 and 0.15.
  assert restricted_cos > 0.7
  assert restricted_cos > full_cos + 0.3


def test_restricted_es_names_a_path_that_is_not_in_theta():
  with pytest.raises(ValueError, match="'lr_head'.*top-level entries.*mlp"):
    _restricted_es(("lr_head",))


def test_the_outer_optimizer_leaves_the_frozen_parts_alone():
  """Even weight decay, which moves a weight whose gradient is zero."""
  from meta_train import components

  tx = components.freeze_untrainable(
    optax.adamw(0.1, weight_decay=0.5), LOPT, ("mlp/0",)
  )
  theta = LOPT.init(jax.random.key(0))
  grads = jax.tree.map(jnp.ones_like, theta)
  updates, _ = tx.update(grads, tx.init(theta), theta)
  np.testing.assert_array_equal(flat(updates["mlp"][1]), 0.0)
  assert np.all(flat(updates["mlp"][0]) != 0.0)
