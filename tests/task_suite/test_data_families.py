"""Behaviour specific to the data-driven families (mlp, conv, rnn_lm, vae,
mlp_ae): spec validation, their layers, normalization and image batches.

The contract all families keep is tested in test_families.py; the tiny
families (conftest.py) read the real datasets (``LOPT_DATA_DIR``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from task_suite import base, data
from task_suite.families import common, conv, mlp, rnn_lm

DATA_FAMILIES = ("mlp", "conv", "rnn_lm", "vae", "mlp_ae")


@pytest.mark.parametrize("name", DATA_FAMILIES)
def test_default_menus_meet_wide_tensors_and_stay_small(
  name, default_family, init_loss
):
  """Every default configuration traces; sizes are in the intended range."""
  family = default_family(name)
  sizes, widest = [], 0
  for entry in family.menu:
    spec = dataclasses.replace(family.sample(jax.random.key(0)), **entry)
    params, _, _ = jax.eval_shape(
      init_loss, family.task(spec), jax.random.key(0)
    )
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


def test_spec_validation_names_the_problem(tiny_family, sample_specs):
  with pytest.raises(ValueError, match="activation"):
    mlp.MLPSpec((8,), 8, 16, "softplus", 1.0, "mnist", 0)
  with pytest.raises(ValueError, match="dataset"):
    mlp.MLPSpec((8,), 8, 16, "relu", 1.0, "cifar", 0)
  with pytest.raises(ValueError, match="at most|1 to 8"):
    mlp.MLPFamily(menu=mlp.MENU + mlp.MENU[:1])
  with pytest.raises(ValueError, match="split"):
    tiny_family("mlp").task(sample_specs(tiny_family("mlp"), 1)[0]).batch(
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
def test_every_rnn_cell_gives_a_chance_level_loss_at_init(cell, init_loss):
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


@pytest.mark.parametrize("name", DATA_FAMILIES)
def test_normalized_loss_is_about_one_at_a_standard_init(
  name, tiny_family, sample_specs, init_loss
):
  family = tiny_family(name)
  spec = dataclasses.replace(
    sample_specs(tiny_family(name), 1)[0], activation="tanh", init_scale=1.0
  )
  _, _, normalized = init_loss(family.task(spec), jax.random.key(2))
  assert 0.5 < normalized < 2.0, normalized


def test_normalize_caps_divergence_and_keeps_nan(tiny_family, sample_specs):
  task = tiny_family("vae").task(sample_specs(tiny_family("vae"), 1)[0])
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


def test_image_batches_lie_in_unit_interval_under_jit(
  tiny_family, sample_specs
):
  """Regression: XLA's x * (1/255) gave 1 + 1 ulp and a NaN VAE entropy."""
  family = tiny_family("vae")
  spec = sample_specs(tiny_family("vae"), 1)[0]
  for dataset in common.IMAGE_DATASETS:
    task = family.task(dataclasses.replace(spec, dataset=dataset))
    image = jax.jit(lambda t: t.batch(jax.random.key(0), "valid")["image"])(
      task
    )
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
  above_one = jnp.nextafter(jnp.float32(1.0), jnp.float32(2.0))
  np.testing.assert_array_equal(common.bernoulli_entropy(above_one), 0.0)
