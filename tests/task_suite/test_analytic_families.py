"""Behaviour specific to the analytic families: quadratic, test_functions
(families/analytic.py) and teacher-student regression.

The contract all families keep is tested in test_families.py.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from task_suite import registry
from task_suite.families import analytic, quadratic, regression

FAMILIES = registry.FAMILIES  # the default families


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


@pytest.mark.parametrize(
  "spec",
  [
    quadratic.QuadraticSpec(dim=8, seed=2, cond=30.0, noise_std=0.8),
    # Centered on the minimizer (1, 3).
    analytic.AnalyticSpec(
      function="booth", x0=1.0, y0=3.0, init_scale=0.5, noise_std=0.8
    ),
  ],
  ids=["quadratic", "test_functions"],
)
def test_noisy_tasks_report_their_expected_loss(spec):
  # Near the minimum the noise term dominates a few batches' mean loss (it
  # is even negative), so evaluations report the expected loss instead.
  task = FAMILIES[spec.family].task(spec)

  @jax.jit
  def probe(task):
    init = task.init(jax.random.key(0))
    # The minimizer: the quadratic's optimum, the booth spec's center.
    best = task.optimum() if spec.family == "quadratic" else jnp.array([1, 3.0])
    near = jax.tree.map(lambda x: best + 1e-3 * (x - best), init)
    keys = jax.random.split(jax.random.key(1), 20000)
    batch = lambda k: task.batch(k, "train")
    out = {}
    for name, p in (("init", init), ("near", near)):
      out[name] = jax.vmap(lambda k, p=p: task.loss(p, None, batch(k)))(keys)
      out[name + "_eval"] = jax.vmap(
        lambda k, p=p: task.eval_loss(p, None, batch(k))
      )(keys[:2])
    return out

  out = probe(task)
  for name in ("init", "near"):
    samples, expected = out[name], out[name + "_eval"]
    # Batch-independent, and the Monte-Carlo mean of the noisy loss.
    assert float(expected[0]) == float(expected[1])
    sem = float(samples.std()) / math.sqrt(samples.size)
    assert abs(float(samples.mean()) - float(expected[0])) < 5 * sem
    assert float(expected[0]) >= 0.0
  # Near the minimum a single batch's loss is mostly noise: it is negative
  # on about half the draws, the expected loss never is.
  assert 0.3 < float(np.mean(out["near"] < 0)) < 0.7


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
  family = FAMILIES["test_functions"]
  keys = jax.random.split(jax.random.key(0), 20)
  centers = [family.sample(k) for k in keys]
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
  spec = regression.RegressionSpec(8, (32,), 4, 64, "relu", teacher_seed=3)
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
