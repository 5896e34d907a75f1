"""Tests of the data-driven task families (mlp, conv, rnn_lm, vae, mlp_ae).

Every family is checked on the real datasets (``LOPT_DATA_DIR``, see
conftest.py) with a one-entry "small" menu, so each test compiles once per
family; the default menus are only traced (``jax.eval_shape``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

from task_suite import base
from task_suite.families import common, mlp

# A tiny static configuration per family: real training, seconds to compile.
SMALL_MENUS = {
  "mlp": (mlp.MLPFamily, {"hidden": (16,), "image_size": 8, "batch_size": 32}),
}
FAMILY_TYPES = {
  name: family_type for name, (family_type, _) in SMALL_MENUS.items()
}
NAMES = tuple(SMALL_MENUS)


@functools.cache
def small_family(name):
  family_type, entry = SMALL_MENUS[name]
  return family_type(menu=(entry,))


@functools.cache
def default_family(name):
  return FAMILY_TYPES[name]()


def small_specs(name, n, seed=0):
  family = small_family(name)
  keys = jax.random.split(jax.random.key(seed), n)
  return [family.sample(keys[i]) for i in range(n)]


def _init_loss(task, key):
  k_init, k_batch, k_loss = jax.random.split(key, 3)
  params = task.init(k_init)
  batch = task.batch(k_batch, "train")
  loss = task.loss(params, k_loss, batch)
  return params, loss, task.normalize(loss)


# Shared jitted functions: one compilation per static signature.
init_loss = jax.jit(_init_loss)


@jax.jit
def train_losses(task, key):
  """Training losses of 100 Adam steps, as the meta-training engine runs it."""
  opt = optax.adam(3e-3)
  k_init, k_steps = jax.random.split(key)
  params = task.init(k_init)

  def step(carry, k):
    params, opt_state = carry
    k_batch, k_loss = jax.random.split(k)
    loss, grads = task.value_and_grad(
      params, k_loss, task.batch(k_batch, "train")
    )
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  carry = (params, opt.init(params))
  _, losses = jax.lax.scan(step, carry, jax.random.split(k_steps, 100))
  return losses


@pytest.mark.parametrize("name", NAMES)
def test_init_and_loss_are_finite(name):
  for spec in small_specs(name, 2):
    task = small_family(name).task(spec)
    params, loss, normalized = init_loss(task, jax.random.key(1))
    test_utils.assert_tree_all_finite(params)
    assert loss.shape == () and loss.dtype == jnp.float32
    assert np.isfinite(loss)
    assert 0.0 < normalized <= common.NORMALIZED_CAP
    for leaf in jax.tree.leaves(params):
      assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_adam_lowers_training_loss(name):
  lowered = []
  for i, spec in enumerate(small_specs(name, 5, seed=1)):
    losses = np.asarray(
      train_losses(small_family(name).task(spec), jax.random.key(i))
    )
    assert np.all(np.isfinite(losses)), spec.name
    first, last = losses[:10].mean(), losses[-10:].mean()
    lowered.append(last < 0.95 * first)
  assert sum(lowered) >= 4, lowered


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_dynamic_variants_equals_one_by_one(name):
  family = small_family(name)
  tasks = [family.task(s) for s in small_specs(name, 4, seed=2)]
  keys = jax.random.split(jax.random.key(3), 4)
  stacked = base.stack_tasks(tasks)
  vmapped = jax.jit(jax.vmap(_init_loss, in_axes=(base.vmap_axes(stacked), 0)))
  params, loss, normalized = vmapped(stacked, keys)
  for i, task in enumerate(tasks):
    p_i, loss_i, normalized_i = init_loss(task, keys[i])
    test_utils.assert_trees_all_close(
      jax.tree.map(lambda x, i=i: x[i], params), p_i, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(loss[i], loss_i, rtol=1e-5)
    np.testing.assert_allclose(normalized[i], normalized_i, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_one_compilation_serves_a_signature(name):
  family = small_family(name)
  specs = small_specs(name, 6, seed=4)
  assert len({s.signature for s in specs}) == 1
  assert len({s.name for s in specs}) == 6
  assert family.task(specs[0]) is family.task(specs[0])
  f = jax.jit(_init_loss)
  for spec in specs:
    f(family.task(spec), jax.random.key(0))
  assert f._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_deterministic_and_names_round_trip(name):
  family = default_family(name)
  keys = jax.random.split(jax.random.key(5), 300)
  specs = [family.sample(keys[i]) for i in range(300)]
  assert specs == [family.sample(keys[i]) for i in range(300)]
  assert len({s.signature for s in specs}) <= 8
  for spec in specs:
    assert isinstance(spec, family.spec_type)
    assert spec.name.startswith(f"{family.name}(")
    body = spec.name[len(family.name) + 1 : -1]
    assert base.parse_spec_fields(family.spec_type, body) == spec


@pytest.mark.parametrize("name", NAMES)
def test_default_menu_shapes(name):
  """Every default configuration traces; sizes are in the intended range."""
  family = default_family(name)
  sizes, widest = [], 0
  for entry in family.menu:
    spec = family.sample(jax.random.key(0))
    spec = type(spec)(**{**spec.__dict__, **entry})
    task = family.task(spec)
    params, loss, normalized = jax.eval_shape(
      _init_loss, task, jax.random.key(0)
    )
    assert loss.shape == () == normalized.shape
    sizes.append(sum(x.size for x in jax.tree.leaves(params)))
    widest = max([widest] + [max(x.shape) for x in jax.tree.leaves(params)])
  assert widest > 64, "optimizers must meet tensors wider than 64"
  assert min(sizes) < 30_000 and sorted(sizes)[len(sizes) // 2] < 30_000, sizes


def test_spec_validation_names_the_problem():
  with pytest.raises(ValueError, match="activation"):
    mlp.MLPSpec((8,), 8, 16, "softplus", 1.0, "mnist", 0)
  with pytest.raises(ValueError, match="dataset"):
    mlp.MLPSpec((8,), 8, 16, "relu", 1.0, "cifar", 0)
  with pytest.raises(ValueError, match="at most|1 to 8"):
    mlp.MLPFamily(menu=mlp.MENU + mlp.MENU[:1])
  with pytest.raises(ValueError, match="split"):
    small_family("mlp").task(small_specs("mlp", 1)[0]).batch(
      jax.random.key(0), "training"
    )


def test_activations_are_selected_by_traced_index():
  x = jnp.linspace(-2.0, 2.0, 7)
  select = jax.jit(common.activation)
  for i, fn in enumerate(common.ACTIVATIONS.values()):
    np.testing.assert_allclose(select(jnp.int32(i), x), fn(x), rtol=1e-6)
  assert select._cache_size() == 1
