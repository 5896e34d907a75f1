"""Bring your own task: a haiku model as a task (task_suite.custom)."""

import pathlib
import re
import sys

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_utils

import learned_opt
import task_suite
from task_suite import registry

NAME = "byo_haiku_mlp"
NUM_STEPS = 60


def _net(x):
  return hk.nets.MLP([16, 1], activation=jnp.tanh)(x)


NET = hk.without_apply_rng(hk.transform(_net))


def _init(key):
  return NET.init(key, jnp.zeros([1, 4]))


def _loss(params, key, batch):
  del key  # no dropout
  return jnp.mean((NET.apply(params, batch["x"]) - batch["y"]) ** 2)


def _batch(key, split, data):
  del split  # one pool of examples for every split in this toy task
  index = jax.random.randint(key, (32,), 0, data["x"].shape[0])
  return jax.tree.map(lambda a: a[index], data)


def _data():
  k_x, k_w = jax.random.split(jax.random.key(1))
  x = jax.random.normal(k_x, (256, 4))
  return {"x": x, "y": jnp.sin(x @ jax.random.normal(k_w, (4, 1)))}


@pytest.fixture(scope="module")
def family():
  family = task_suite.register_task(NAME, _init, _loss, _batch, data=_data())
  yield family
  registry.FAMILIES.pop(NAME)


@pytest.mark.parametrize("optimizer", ["adam", "learned"])
def test_a_haiku_model_task_trains(optimizer):
  task = task_suite.make_task(_init, _loss, _batch, name="mlp", data=_data())
  if optimizer == "adam":
    tx = learned_opt.baseline("adam", learning_rate=1e-2)
  else:
    tx = learned_opt.load_pretrained()
  train = jax.jit(lambda t, k: test_utils.train_losses(t, tx, k, NUM_STEPS))
  losses = np.asarray(train(task, jax.random.key(0)))
  assert np.all(np.isfinite(losses))
  assert losses[-10:].mean() < 0.7 * losses[:10].mean(), losses
  # The default normalization is ~1 at init (loss / mean loss at init).
  assert 0.3 < float(task.normalize(losses[0])) < 3.0


def test_a_registered_task_samples_parses_and_vmaps(family):
  specs = task_suite.sample_suite(6, seed=0, weights={NAME: 1.0})
  assert len({s.name for s in specs}) == 6
  assert all(s.family == NAME for s in specs)
  assert len(task_suite.group_by_signature(specs)) == 1
  assert task_suite.parse_name(specs[0].name) == specs[0]
  assert task_suite.get_task(specs[0].name) is family.task(specs[0])
  assert task_suite.num_params(specs[0]) == 4 * 16 + 16 + 16 + 1
  tasks = [task_suite.get_task(s) for s in specs[:3]]
  stacked = task_suite.stack_tasks(tasks)

  @jax.jit
  def init_loss(task, key):
    params = task.init(key)
    return task.loss(params, key, task.batch(key, "train"))

  @jax.jit
  def vmapped(stacked, keys, key):
    axes = task_suite.vmap_axes(stacked)
    return (
      jax.vmap(init_loss, in_axes=(axes, 0))(stacked, keys),
      jax.vmap(init_loss, in_axes=(axes, None))(stacked, key),
    )

  keys = jax.random.split(jax.random.key(0), 3)
  per_key, same_key = vmapped(stacked, keys, keys[0])
  one_by_one = jnp.stack([init_loss(t, k) for t, k in zip(tasks, keys)])
  test_utils.assert_trees_all_close(per_key, one_by_one, rtol=1e-5)
  # The seed makes distinct instances (inits and data streams).
  assert len(set(np.asarray(same_key).tolist())) == 3


def test_a_registered_task_augments_and_has_test_specs(family):
  spec = task_suite.sample_suite(1, seed=0, split="test", weights={NAME: 1})[0]
  aug = task_suite.Augmentation(kind="per_tensor", loss_scale=True, seed=1)
  augmented = task_suite.AugmentedSpec(spec, aug)
  task = task_suite.get_task(task_suite.parse_name(augmented.name))
  key = jax.random.key(0)
  params = task.init(key)
  loss = task.loss(params, key, task.batch(key, "train"))
  inner = family.task(spec)
  inner_loss = inner.loss(inner.init(key), key, inner.batch(key, "train"))
  np.testing.assert_allclose(
    task.normalize(loss), inner.normalize(inner_loss), rtol=1e-4
  )


def test_registration_errors_name_the_problem(family):
  with pytest.raises(ValueError, match="already registered"):
    task_suite.register_task(NAME, _init, _loss, _batch, data=_data())
  with pytest.raises(ValueError, match="built-in"):
    task_suite.register_task("mlp", _init, _loss, _batch)
  with pytest.raises(TypeError, match="loss_fn"):
    task_suite.make_task(_init, None, _batch)
  with pytest.raises(ValueError, match="normalize_fn"):
    task_suite.make_task(
      _init, lambda p, k, b: -_loss(p, k, b), _batch, data=_data()
    )


def test_the_readme_example_runs():
  text = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
  section = text.split("### Your own task", 1)[1].split("\n## ", 1)[0]
  (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  namespace = {}
  try:
    exec(block, namespace)  # noqa: S102 (our own README)
  finally:
    registry.FAMILIES.pop("my_mlp", None)
  task = namespace["task"]
  key = jax.random.key(0)
  loss = task.loss(task.init(key), key, task.batch(key, "train"))
  assert np.isfinite(loss) and 0.3 < float(task.normalize(loss)) < 3.0


_USER_MODULE = """
import jax, jax.numpy as jnp, task_suite

task_suite.register_task(
  "imported_linear",
  init_fn=lambda key: {"w": jax.random.normal(key, (3,))},
  loss_fn=lambda p, key, b: jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2),
  batch_fn=lambda key, split: {
    "x": jax.random.normal(key, (16, 3)),
    "y": jnp.ones((16,)),
  },
)
"""


def test_lopt_evaluate_imports_the_module_that_registers_a_task(
  tmp_path, monkeypatch
):
  from meta_train import cli

  (tmp_path / "user_tasks_for_evaluate.py").write_text(_USER_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  out = tmp_path / "eval"
  try:
    status = cli.main(
      ["evaluate", "--import", "user_tasks_for_evaluate", "--optimizer",
       "adam", "--tasks", "imported_linear(;seed=0)", "--steps", "20",
       "--seeds", "1", "--adam-lrs", "1e-3,1e-2", "--sgdm-lrs", "0.1",
       "--out", str(out)]
    )  # fmt: skip
  finally:
    # Other tests in this process see the built-in registry only.
    registry.FAMILIES.pop("imported_linear", None)
    sys.modules.pop("user_tasks_for_evaluate", None)
  assert status == 0
  assert "imported_linear(;seed=0)" in (out / "report.md").read_text()
