"""The synthetic families: quadratic, test_functions, regression."""

import collections
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

from task_suite import base, suite
from task_suite.families import analytic, quadratic, regression

# The default families (sampling, analytic checks) and tiny one-signature
# variants for real training: one compilation per family and test function.
FAMILIES = {
  "quadratic": quadratic.QuadraticFamily(),
  "test_functions": analytic.AnalyticFamily(),
  "regression": regression.RegressionFamily(),
}
TINY = {
  "quadratic": quadratic.QuadraticFamily(dims=(8,)),
  "test_functions": analytic.AnalyticFamily(),
  "regression": regression.RegressionFamily(
    menu=({"input_dim": 4, "hidden": (16,), "output_dim": 2, "batch_size": 16},)
  ),
}
NAMES = sorted(FAMILIES)
NUM_SPECS = 5
NUM_STEPS = 100
NUM_EVAL_BATCHES = 8
ADAM = optax.adam(1e-2)
TRACES = collections.Counter()  # signature -> times _train_one was traced


def _eval_loss(task, params, key):
  """Mean loss over fixed valid batches (same batches before and after)."""
  keys = jax.random.split(key, NUM_EVAL_BATCHES)
  losses = jax.vmap(lambda k: task.loss(params, k, task.batch(k, "valid")))(
    keys
  )
  return losses.mean()


def _train(task, key):
  """100 Adam steps: initial and final eval loss, the training losses."""
  k_init, k_train, k_eval = jax.random.split(key, 3)
  params = task.init(k_init)

  def step(carry, i):
    params, opt_state = carry
    k = jax.random.fold_in(k_train, i)
    loss, grads = task.value_and_grad(params, k, task.batch(k, "train"))
    updates, opt_state = ADAM.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (final, _), losses = jax.lax.scan(
    step, (params, ADAM.init(params)), jnp.arange(NUM_STEPS)
  )
  return {
    "initial": _eval_loss(task, params, k_eval),
    "final": _eval_loss(task, final, k_eval),
    "train_losses": losses,
    "normalized": jax.vmap(task.normalize)(losses),
    "init_params": params,
  }


@jax.jit
def _train_one(task, key):
  TRACES[task.signature] += 1
  return _train(task, key)


@jax.jit
def _train_many(stacked, keys):
  return jax.vmap(_train, in_axes=(base.vmap_axes(stacked), 0))(stacked, keys)


def _sample(family, num, seed=0):
  return [family.sample(jax.random.key(seed * 1000 + i)) for i in range(num)]


def _keys():
  return jax.random.split(jax.random.key(42), NUM_SPECS)


@functools.cache
def _trained(name):
  """Sampled tiny specs of ``name`` trained together under one vmap."""
  family = TINY[name]
  specs = _sample(family, NUM_SPECS)
  assert len(suite.group_by_signature(specs)) == 1
  stacked = base.stack_tasks([family.task(s) for s in specs])
  return specs, _train_many(stacked, _keys())


@pytest.mark.parametrize("name", NAMES)
def test_init_and_loss_are_finite(name):
  specs, out = _trained(name)
  test_utils.assert_tree_all_finite(out)
  # About 1 at init (single noisy losses of random inits vary around it).
  assert 0.3 < float(out["normalized"][:, 0].mean()) < 3.0, out["normalized"]
  assert np.all(out["normalized"] <= 10.0)


@pytest.mark.parametrize("name", NAMES)
def test_100_adam_steps_lower_the_loss(name):
  specs, out = _trained(name)
  lowered = out["final"] < out["initial"]
  assert int(lowered.sum()) >= 4, [
    (s.name, float(a), float(b))
    for s, a, b in zip(specs, out["initial"], out["final"])
  ]


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_dynamic_variants_equals_one_by_one(name):
  specs, batched = _trained(name)
  for i, spec in enumerate(specs[:4]):
    alone = _train_one(TINY[name].task(spec), _keys()[i])
    row = jax.tree.map(lambda x, i=i: x[i], batched)
    test_utils.assert_trees_all_close(row, alone, rtol=1e-4, atol=1e-5)
  # The variants really are different problems.
  assert len({float(x) for x in batched["initial"][:4]}) == 4


@pytest.mark.parametrize("name", NAMES)
def test_one_compilation_serves_all_specs_of_a_signature(name):
  specs, _ = _trained(name)
  for i, spec in enumerate(specs):
    out = _train_one(TINY[name].task(spec), _keys()[i])
    assert np.isfinite(float(out["final"]))
  assert TRACES[specs[0].signature] == 1


@pytest.mark.parametrize("name", NAMES)
def test_default_menu_shapes(name):
  family = FAMILIES[name]
  groups = suite.group_by_signature(_sample(family, 200, seed=3))
  assert 1 <= len(groups) <= 8
  for signature, specs in groups.items():
    task = family.task(specs[0])
    key = jax.random.key(0)
    params = jax.eval_shape(task.init, key)
    batch = jax.eval_shape(lambda k, t=task: t.batch(k, "train"), key)
    loss = jax.eval_shape(task.loss, params, key, batch)
    assert loss.shape == () and loss.dtype == jnp.float32, signature
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert jax.eval_shape(task.normalize, loss).shape == ()


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_deterministic_and_tasks_memoized(name):
  family = FAMILIES[name]
  a, b = _sample(family, 3), _sample(family, 3)
  assert a == b and [s.name for s in a] == [s.name for s in b]
  assert len({s.name for s in _sample(family, 20, seed=1)}) == 20
  assert family.task(a[0]) is family.task(b[0])
  assert suite.parse_name(a[0].name) == a[0]


def test_family_rejects_foreign_spec():
  spec = _sample(FAMILIES["quadratic"], 1)[0]
  with pytest.raises(TypeError, match="QuadraticSpec"):
    FAMILIES["regression"].task(spec)
  with pytest.raises(TypeError, match="get_task"):
    FAMILIES["quadratic"].task(_sample(FAMILIES["regression"], 1)[0])


# ------------------------------------------------------------ quadratic


def test_quadratic_is_the_analytic_quadratic():
  spec = quadratic.QuadraticSpec(dim=8, seed=5, cond=100.0, loss_scale=2.0)
  task = FAMILIES["quadratic"].task(spec)

  @jax.jit
  def probe(task):
    batch = task.batch(jax.random.key(0), "train")
    other = task.batch(jax.random.key(1), "train")
    loss_of_x = lambda x, b=batch: task.loss({"x": x}, None, b)
    x = task.init(jax.random.key(2))["x"]
    return {
      "hessian": jax.hessian(loss_of_x)(jnp.zeros(8)),
      "at_optimum": loss_of_x(task.optimum()),
      "at_x": jnp.stack([loss_of_x(x), loss_of_x(x, other)]),
    }

  out = probe(task)
  hessian = np.asarray(out["hessian"], np.float64)
  np.testing.assert_allclose(hessian, hessian.T, atol=1e-5)
  np.testing.assert_allclose(
    np.sort(np.linalg.eigvalsh(hessian)),
    np.sort(2.0 * np.logspace(-2, 0, 8)),
    rtol=1e-4,
  )
  # Rotated: the Hessian is not diagonal.
  assert np.abs(hessian - np.diag(np.diag(hessian))).max() > 0.05
  assert float(out["at_optimum"]) == pytest.approx(0.0, abs=1e-6)
  # Noise-free: the loss does not depend on the batch.
  assert float(out["at_x"][0]) == float(out["at_x"][1])


def test_quadratic_noise_is_unbiased_with_the_requested_std():
  noisy, clean = (
    FAMILIES["quadratic"].task(
      quadratic.QuadraticSpec(dim=32, seed=1, cond=10.0, noise_std=std)
    )
    for std in (0.5, 0.0)
  )

  @jax.jit
  def grads(noisy, clean):
    params = noisy.init(jax.random.key(0))
    grad = lambda t, k: jax.grad(t.loss)(params, k, t.batch(k, "train"))["x"]
    keys = jax.random.split(jax.random.key(1), 2000)
    return jax.vmap(lambda k: grad(noisy, k))(keys), grad(clean, keys[0])

  noisy_grads, exact = grads(noisy, clean)
  # loss_scale = init_scale = 1: the gradient noise std is noise_std.
  np.testing.assert_allclose(noisy_grads.mean(0), exact, atol=0.05)
  np.testing.assert_allclose(noisy_grads.std(0), 0.5, rtol=0.1)


def test_specs_reject_bad_values():
  with pytest.raises(ValueError, match="power of two"):
    FAMILIES["quadratic"].task(quadratic.QuadraticSpec(dim=10, seed=0))
  with pytest.raises(ValueError, match="cond >= 1"):
    quadratic.QuadraticSpec(dim=8, seed=0, cond=0.5)
  with pytest.raises(ValueError, match="unknown test function 'sphere'"):
    analytic.AnalyticSpec(function="sphere", x0=0.0, y0=0.0)
  with pytest.raises(ValueError, match="unknown activation"):
    regression.RegressionSpec(
      input_dim=2,
      hidden=(),
      output_dim=1,
      batch_size=4,
      activation="x",
      teacher_seed=0,
    )


# ------------------------------------------------------- test functions

MINIMIZERS = {
  "rosenbrock": (1.0, 1.0),
  "beale": (3.0, 0.5),
  "branin": (math.pi, 2.275),
  "ackley": (0.0, 0.0),
  "styblinski_tang": (-2.903534, -2.903534),
  "rastrigin": (0.0, 0.0),
  "booth": (1.0, 3.0),
  "himmelblau": (3.0, 2.0),
  "matyas": (0.0, 0.0),
}


def test_test_functions_vanish_at_their_known_minimizers():
  names = analytic.FUNCTION_NAMES
  assert set(MINIMIZERS) == set(names)
  centers = _sample(FAMILIES["test_functions"], 20)
  indices = jnp.array(
    [names.index(n) for n in names] + [names.index(s.function) for s in centers]
  )
  points = jnp.array(
    [MINIMIZERS[n] for n in names] + [(s.x0, s.y0) for s in centers],
    jnp.float32,
  )
  gaps, grads = jax.jit(jax.vmap(jax.value_and_grad(analytic.gap, 1)))(
    indices, points
  )
  n = len(names)
  np.testing.assert_allclose(gaps[:n], 0.0, atol=2e-4)
  np.testing.assert_allclose(grads[:n], 0.0, atol=2e-2)
  # ... and the sampled initial centers are well above the minimum.
  assert np.all(gaps[n:] > 0.4), gaps[n:]


def test_test_function_normalize_contract():
  spec = analytic.AnalyticSpec(
    function="rosenbrock", x0=-1.5, y0=2.0, init_scale=0.0, loss_scale=3.0
  )
  task = FAMILIES["test_functions"].task(spec)

  @jax.jit
  def normalized(task):
    batch = task.batch(jax.random.key(0), "train")
    at_init = task.loss(task.init(jax.random.key(0)), None, batch)
    at_min = task.loss({"xy": jnp.array([1.0, 1.0])}, None, batch)
    losses = jnp.array([at_init, at_min, 1e30, jnp.nan])
    return jax.vmap(task.normalize)(losses)

  out = normalized(task)
  assert float(out[0]) == pytest.approx(1.0, rel=1e-4)  # at init
  assert float(out[1]) == pytest.approx(0.0, abs=1e-4)  # at the minimum
  assert float(out[2]) <= 10.0  # diverged: capped
  assert math.isnan(float(out[3]))


# ----------------------------------------------------------- regression


def test_regression_targets_have_unit_scale_and_fresh_inputs():
  spec = regression.RegressionSpec(
    input_dim=8,
    hidden=(32,),
    output_dim=4,
    batch_size=64,
    activation="relu",
    teacher_seed=3,
  )
  family = FAMILIES["regression"]
  task = family.task(spec)
  # Same teacher_seed, other student fields / another teacher_seed.
  twin = family.task(dataclasses.replace(spec, init_scale=0.5))
  other = family.task(dataclasses.replace(spec, teacher_seed=4))

  @jax.jit
  def probe(task, twin, other):
    keys = jax.random.split(jax.random.key(0), 64)
    batches = jax.vmap(lambda k: task.batch(k, "train"))(keys)
    valid = task.batch(keys[0], "valid")
    zero = jax.tree.map(jnp.zeros_like, task.init(keys[0]))
    zero_loss = task.loss(zero, None, jax.tree.map(lambda x: x[0], batches))
    return {
      "train": batches,
      "valid": valid,
      "zero": task.normalize(zero_loss),
      "twin": twin.batch(keys[0], "train")["y"],
      "other": other.batch(keys[0], "train")["y"],
    }

  out = probe(task, twin, other)
  y = out["train"]["y"].reshape(-1, 4)
  np.testing.assert_allclose(y.std(0), 1.0, rtol=0.2)
  np.testing.assert_allclose(y.mean(0), 0.0, atol=0.2)
  assert not np.allclose(out["train"]["x"][0], out["valid"]["x"])
  # The predictor 0 scores ~1 (unit-variance targets, no noise).
  assert float(out["zero"]) == pytest.approx(1.0, rel=0.35)
  # The teacher depends on teacher_seed only, not on the student's fields.
  np.testing.assert_allclose(out["twin"], out["train"]["y"][0], atol=1e-5)
  assert not np.allclose(out["other"], out["train"]["y"][0])
