"""Tests of the data-driven task families (mlp, conv, rnn_lm, vae, mlp_ae).

Every family is checked on the real datasets (``LOPT_DATA_DIR``, see
conftest.py) with a one-entry "small" menu, so each test compiles once per
family; the default menus are only traced (``jax.eval_shape``).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

from task_suite import base, data
from task_suite.families import common, conv, mlp, mlp_ae, rnn_lm, vae

# A tiny static configuration per family: real training, seconds to compile.
SMALL_MENUS = {
  "mlp": (mlp.MLPFamily, {"hidden": (16,), "image_size": 8, "batch_size": 32}),
  "conv": (
    conv.ConvFamily,
    {
      "channels": (4, 8),
      "strides": (2, 1),
      "pool": (0, 1),
      "image_size": 8,
      "batch_size": 16,
    },
  ),
  "rnn_lm": (
    rnn_lm.RNNLMFamily,
    {"cell": "gru", "embed": 8, "hidden": 32, "seq_len": 16, "batch_size": 8},
  ),
  "vae": (
    vae.VAEFamily,
    {"hidden": (32,), "latent": 4, "image_size": 8, "batch_size": 32},
  ),
  "mlp_ae": (
    mlp_ae.MLPAEFamily,
    {"hidden": (32,), "image_size": 8, "batch_size": 32},
  ),
}
FAMILY_TYPES = {
  name: family_type for name, (family_type, _) in SMALL_MENUS.items()
}
NAMES = tuple(SMALL_MENUS)


@functools.cache
def small_family(name):
  family_type, entry = SMALL_MENUS[name]
  return family_type(menu=(entry,))


def _fake_images(name, image_size):
  """Tiny stand-in datasets: tracing the default menus needs only shapes."""
  del name
  x = jnp.zeros((4, image_size, image_size, 1), jnp.uint8)
  y = jnp.zeros((4,), jnp.int32)
  arrays = {
    f"{split}_{k}": v for split in base.SPLITS for k, v in (("x", x), ("y", y))
  }
  return data.ImageData(arrays=arrays, num_classes=10)


def _fake_text(name):
  del name
  tokens = jnp.zeros((1000,), jnp.int32)
  return data.TextData({s: tokens for s in base.SPLITS}, vocab="abcdefgh")


@functools.cache
def default_family(name):
  """The family with its default menu, on fake data of the right shapes."""
  if name == "rnn_lm":
    return rnn_lm.RNNLMFamily(load_text=_fake_text)
  return FAMILY_TYPES[name](load_images=_fake_images)


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
  opt = optax.adam(1e-2)
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
  # jit wrappers of one function share a cache: count what these specs add.
  before = init_loss._cache_size()
  for spec in specs:
    init_loss(family.task(spec), jax.random.key(0))
  assert init_loss._cache_size() - before <= 1


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
    # Fan-in (product of leading dims) or fan-out of each tensor.
    widest = max(
      [widest]
      + [
        max(x.size // x.shape[-1], x.shape[-1]) for x in jax.tree.leaves(params)
      ]
    )
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


@pytest.mark.parametrize("size,stride", [(8, 1), (7, 2)])
def test_im2col_conv_equals_lax_conv(size, stride):
  k_x, k_w = jax.random.split(jax.random.key(size * stride))
  x = jax.random.normal(k_x, (2, size, size, 3))
  kernel = jax.random.normal(k_w, (3, 3, 3, 5))
  expected = jax.lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    "SAME",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  got = jax.jit(conv.conv2d, static_argnums=2)(x, kernel, stride)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_max_pool2():
  x = jnp.arange(2 * 5 * 4 * 3, dtype=jnp.float32).reshape(2, 5, 4, 3)
  expected = jax.lax.reduce_window(
    x[:, :4], -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
  )
  np.testing.assert_array_equal(conv.max_pool2(x), expected)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])  # gru: the small menu
def test_every_rnn_cell_gives_a_chance_level_loss_at_init(cell):
  family = rnn_lm.RNNLMFamily(
    menu=(
      {"cell": cell, "embed": 4, "hidden": 8, "seq_len": 4, "batch_size": 2},
    )
  )
  spec = dataclasses.replace(
    family.sample(jax.random.key(0)), activation="tanh", init_scale=0.5
  )
  _, loss, normalized = init_loss(family.task(spec), jax.random.key(1))
  assert np.isfinite(loss)
  np.testing.assert_allclose(normalized, 1.0, atol=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_normalized_loss_is_about_one_at_a_standard_init(name):
  family = small_family(name)
  spec = dataclasses.replace(
    small_specs(name, 1)[0], activation="tanh", init_scale=1.0
  )
  _, _, normalized = init_loss(family.task(spec), jax.random.key(2))
  assert 0.5 < normalized < 2.0, normalized


def test_normalize_caps_divergence_and_keeps_nan():
  task = small_family("vae").task(small_specs("vae", 1)[0])
  out = task.normalize(jnp.array([1e9, jnp.nan, jnp.inf]))
  assert out[0] == common.NORMALIZED_CAP and np.isnan(out[1])
  assert out[2] == common.NORMALIZED_CAP


def test_reference_stats_are_the_losses_of_predicting_the_mean_image():
  arrays, _ = common.image_data(_random_images, 8)
  stats = jax.tree.map(np.asarray, common.image_reference_stats(arrays))
  for d, name in enumerate(common.IMAGE_DATASETS):
    x = np.asarray(arrays[f"{name}/train_x"]).reshape(64, -1) / 255.0
    m = x.mean(0)
    np.testing.assert_allclose(stats["mean_image"][d], m, rtol=1e-5)
    mse = np.mean((x - m[None]) ** 2)
    np.testing.assert_allclose(stats["pixel_variance"][d], mse, rtol=1e-4)
    # KL(Bernoulli(x) || Bernoulli(m)) summed over pixels, averaged.
    with np.errstate(divide="ignore", invalid="ignore"):
      kl = np.nan_to_num(x * np.log(x / m)) + np.nan_to_num(
        (1 - x) * np.log((1 - x) / (1 - m))
      )
    np.testing.assert_allclose(
      stats["bernoulli_ref"][d], kl.sum(1).mean(), rtol=1e-4
    )


def _random_images(name, image_size):
  rng = np.random.default_rng(common.IMAGE_DATASETS.index(name))
  x = rng.integers(0, 256, (64, image_size, image_size, 1), np.uint8)
  y = np.zeros((64,), np.int32)
  arrays = {f"{s}_x": x for s in base.SPLITS}
  arrays.update({f"{s}_y": y for s in base.SPLITS})
  return data.ImageData(arrays=arrays, num_classes=10)


def test_image_batches_lie_in_unit_interval_under_jit():
  """Regression: XLA's x * (1/255) gave 1 + 1 ulp and a NaN VAE entropy."""
  family = small_family("vae")
  spec = small_specs("vae", 1)[0]
  for dataset in common.IMAGE_DATASETS:
    task = family.task(dataclasses.replace(spec, dataset=dataset))
    image = jax.jit(lambda t: t.batch(jax.random.key(0), "valid")["image"])(
      task
    )
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
  above_one = jnp.nextafter(jnp.float32(1.0), jnp.float32(2.0))
  np.testing.assert_array_equal(common.bernoulli_entropy(above_one), 0.0)
