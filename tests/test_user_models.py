"""The README's models from outside the suite (examples/user_models.py)."""

import importlib
import sys

import jax
import numpy as np
import pytest

import learned_opt
from meta_train.evaluation import resolve, rollout
import task_suite
from task_suite import registry

NAMES = (
  "user_layernorm_mlp",
  "user_wide_mlp",
  "user_attention_lm",
  "user_gru_lm",
)


@pytest.fixture(scope="module")
def user_models():
  module = importlib.import_module("examples.user_models")
  yield module
  for name in NAMES:  # the registrations must not leak into other tests
    registry.FAMILIES.pop(name, None)
  # ... and a later import must register them again, not find a stale module.
  sys.modules.pop("examples.user_models", None)


def _final_losses(task, factory, hparams, num_steps):
  keys = rollout.seed_keys(jax.random.key(0), 1)
  losses = rollout.train_curves(
    task, hparams, keys, factory=factory, num_steps=num_steps, grid=False
  )
  return float(np.mean(np.asarray(losses)[0, -10:]))


# The language models compile for tens of seconds on CPU: slow set.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
  "name", ["user_wide_mlp", pytest.param("user_attention_lm", marks=_SLOW)]
)
def test_the_default_beats_adam_1e3_on_a_model_from_outside_the_suite(
  user_models, name
):
  del user_models
  spec = f"{name}(;seed=3)"
  task = task_suite.get_task(spec)
  default = resolve.resolve(learned_opt.pretrained.DEFAULT_NAME)
  learned = _final_losses(task, default.factory, default.hparams, 150)
  adam = _final_losses(task, resolve.BaselineFactory("adam"), 1e-3, 150)
  batch = task.batch(jax.random.key(1), "train")
  initial = float(
    task.loss(task.init(jax.random.key(0)), jax.random.key(2), batch)
  )
  assert learned < 0.9 * initial
  assert learned < adam, (learned, adam)


@pytest.mark.parametrize(
  "name",
  [
    "user_layernorm_mlp",
    "user_wide_mlp",
    pytest.param("user_attention_lm", marks=_SLOW),
    pytest.param("user_gru_lm", marks=_SLOW),
  ],
)
def test_each_user_model_is_a_registered_family_with_finite_gradients(
  user_models, name
):
  del user_models
  assert name in registry.names()
  task = task_suite.get_task(f"{name}(;seed=0)")
  params = task.init(jax.random.key(0))
  # Jitted: one compilation instead of one per primitive (eager).
  loss, grads = jax.jit(task.value_and_grad)(
    params, jax.random.key(1), task.batch(jax.random.key(2), "train")
  )
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
