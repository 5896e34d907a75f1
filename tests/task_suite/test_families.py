"""The contract every task family keeps, checked on each of them.

Each family runs on its tiny one-signature variant (conftest.py), so each
test compiles once per family; default menus are only traced.
Family-specific behaviour is tested in test_analytic_families.py and
test_data_families.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

from task_suite import base, registry, suite
from task_suite.families import common

NAMES = registry.BUILT_IN
NUM_SPECS = 5
NUM_STEPS = 100


@functools.cache
def _trained(family):
  """100 Adam steps on NUM_SPECS sampled specs, as one vmap over them."""
  keys = jax.random.split(jax.random.key(1), NUM_SPECS)
  specs = [family.sample(k) for k in keys]
  stacked = base.stack_tasks([family.task(s) for s in specs])
  train = lambda t, k: test_utils.train_losses(
    t, optax.adam(1e-2), k, NUM_STEPS
  )
  losses = jax.jit(jax.vmap(train, in_axes=(base.vmap_axes(stacked), 0)))(
    stacked, keys
  )
  return specs, np.asarray(losses)  # [NUM_SPECS, NUM_STEPS]


@pytest.mark.parametrize("name", NAMES)
def test_init_and_loss_are_finite_float32_and_normalized(
  name, tiny_family, init_loss
):
  specs, losses = _trained(tiny_family(name))
  assert np.all(np.isfinite(losses)), [s.name for s in specs]
  task = tiny_family(name).task(specs[0])
  params, loss, normalized = init_loss(task, jax.random.key(2))
  test_utils.assert_tree_all_finite(params)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert loss.shape == () and loss.dtype == jnp.float32
  # About 1 at init, averaged over the sampled variants.
  normalized = jax.vmap(task.normalize)(jnp.asarray(losses[:, 0]))
  assert 0.3 < float(normalized.mean()) < 3.0, normalized
  assert np.all(np.asarray(normalized) <= common.NORMALIZED_CAP)


@pytest.mark.parametrize("name", NAMES)
def test_adam_lowers_the_training_loss(name, tiny_family):
  specs, losses = _trained(tiny_family(name))
  first, last = losses[:, :10].mean(1), losses[:, -10:].mean(1)
  lowered = last < 0.95 * first
  assert int(lowered.sum()) >= NUM_SPECS - 1, [
    (s.name, float(a), float(b)) for s, a, b in zip(specs, first, last)
  ]


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_variants_equals_one_by_one(
  name, tiny_family, sample_specs, init_loss
):
  family = tiny_family(name)
  tasks = [family.task(s) for s in sample_specs(family, 4, seed=2)]
  keys = jax.random.split(jax.random.key(3), 4)
  stacked = base.stack_tasks(tasks)
  vmapped = jax.jit(jax.vmap(init_loss, in_axes=(base.vmap_axes(stacked), 0)))
  batched = vmapped(stacked, keys)
  for i, task in enumerate(tasks):
    row = jax.tree.map(lambda x, i=i: x[i], batched)
    alone = init_loss(task, keys[i])
    test_utils.assert_trees_all_close(row, alone, rtol=1e-5, atol=1e-6)
  # The variants really are different problems.
  assert len({float(x) for x in batched[1]}) == 4


@pytest.mark.parametrize("name", NAMES)
def test_one_compilation_serves_a_signature(
  name, tiny_family, sample_specs, init_loss
):
  family = tiny_family(name)
  specs = sample_specs(family, 6, seed=4)
  assert len({s.signature for s in specs}) == 1
  assert len({s.name for s in specs}) == 6
  assert family.task(specs[0]) is family.task(specs[0])
  # jit wrappers of one function share a cache: count what these specs add.
  before = init_loss._cache_size()
  for spec in specs:
    init_loss(family.task(spec), jax.random.key(0))
  assert init_loss._cache_size() - before <= 1


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_deterministic_and_names_round_trip(
  name, default_family, sample_specs
):
  family = default_family(name)
  specs = sample_specs(family, 200, seed=5)
  assert specs == sample_specs(family, 200, seed=5)
  assert len({s.name for s in specs}) >= 190  # distinct draws
  assert 1 <= len({s.signature for s in specs}) <= 8
  for spec in specs:
    assert isinstance(spec, family.spec_type)
    assert spec.name.startswith(f"{family.name}(")
    assert suite.parse_name(spec.name) == spec


@pytest.mark.parametrize("name", NAMES)
def test_every_default_signature_traces(
  name, default_family, sample_specs, init_loss
):
  family = default_family(name)
  groups = suite.group_by_signature(sample_specs(family, 200, seed=3))
  for signature, specs in groups.items():
    shapes = jax.eval_shape(init_loss, family.task(specs[0]), jax.random.key(0))
    params, loss, normalized = shapes
    assert loss.shape == () == normalized.shape, signature
    assert loss.dtype == jnp.float32, signature
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


def test_family_rejects_a_foreign_spec(tiny_family, sample_specs):
  quadratic_spec = sample_specs(tiny_family("quadratic"), 1)[0]
  with pytest.raises(TypeError, match="QuadraticSpec"):
    tiny_family("regression").task(quadratic_spec)
  with pytest.raises(TypeError, match="get_task"):
    tiny_family("quadratic").task(sample_specs(tiny_family("regression"), 1)[0])
