"""Families for the task_suite tests: tiny real ones, default ones on fakes.

``tiny_family(name)``: the family restricted to one small static
configuration (one signature), so a test compiles once per family; the data
families read the real datasets (``LOPT_DATA_DIR``, see tests/conftest.py).
``default_family(name)``: the family with its default menu, the data
families on fake datasets of the right shapes (their menus are only traced).
Both are fixtures returning a cached function of the family name.
``init_loss(task, key)``: jitted ``(params, loss, normalized loss)`` at
init, one function so that every test shares its compilations.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from task_suite import base, data, registry

# The built-in family classes (tests build variants of them).
FAMILY_TYPES = {
  name: type(registry.FAMILIES[name]) for name in registry.BUILT_IN
}
DATA_FAMILIES = ("mlp", "conv", "rnn_lm", "vae", "mlp_ae")
# One small static configuration per family (constructor arguments).
TINY = {
  "mlp": {"menu": ({"hidden": (16,), "image_size": 8, "batch_size": 32},)},
  "conv": {
    "menu": (
      {
        "channels": (4, 8),
        "strides": (2, 1),
        "pool": (0, 1),
        "image_size": 8,
        "batch_size": 16,
      },
    )
  },
  "rnn_lm": {
    "menu": (
      {"cell": "gru", "embed": 8, "hidden": 32, "seq_len": 16, "batch_size": 8},
    )
  },
  "vae": {
    "menu": ({"hidden": (32,), "latent": 4, "image_size": 8, "batch_size": 32},)
  },
  "mlp_ae": {"menu": ({"hidden": (32,), "image_size": 8, "batch_size": 32},)},
  "quadratic": {"dims": (8,)},
  "test_functions": {},  # one signature already
  "regression": {
    "menu": (
      {"input_dim": 4, "hidden": (16,), "output_dim": 2, "batch_size": 16},
    )
  },
}
assert set(TINY) == set(registry.BUILT_IN)


def fake_images(name, image_size):
  """Tiny stand-in datasets: tracing the default menus needs only shapes."""
  del name
  x = jnp.zeros((4, image_size, image_size, 1), jnp.uint8)
  y = jnp.zeros((4,), jnp.int32)
  arrays = {
    f"{split}_{k}": v for split in base.SPLITS for k, v in (("x", x), ("y", y))
  }
  return data.ImageData(arrays=arrays, num_classes=10)


def fake_text(name):
  del name
  tokens = jnp.zeros((1000,), jnp.int32)
  return data.TextData({s: tokens for s in base.SPLITS}, vocab="abcdefgh")


@functools.cache
def _tiny_family(name):
  return FAMILY_TYPES[name](**TINY[name])


@functools.cache
def _default_family(name):
  if name == "rnn_lm":
    return FAMILY_TYPES[name](load_text=fake_text)
  if name in DATA_FAMILIES:
    return FAMILY_TYPES[name](load_images=fake_images)
  return FAMILY_TYPES[name]()


def _sample_specs(family, num, seed=0):
  keys = jax.random.split(jax.random.key(seed), num)
  return [family.sample(keys[i]) for i in range(num)]


@jax.jit
def _init_loss(task, key):
  k_init, k_batch, k_loss = jax.random.split(key, 3)
  params = task.init(k_init)
  loss = task.loss(params, k_loss, task.batch(k_batch, "train"))
  return params, loss, task.normalize(loss)


@pytest.fixture
def init_loss():
  return _init_loss


@pytest.fixture
def tiny_family():
  return _tiny_family


@pytest.fixture
def default_family():
  return _default_family


@pytest.fixture
def sample_specs():
  """``sample_specs(family, num, seed=0)``: specs from split keys."""
  return _sample_specs
