"""Tests of learned_opt/pretrained.py: shipped checkpoints, verified offline.

The checkpoints are written to tmp_path with ``save_pretrained``: one with a
randomly initialised MLPLOpt (loading, hashing, corruption), and one whose
theta makes the MLP output the normalized gradient, i.e. a normalized
gradient descent, to check that a loaded optimizer trains a task.
"""

import hashlib
import json
import shutil
import socket

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

import learned_opt
from learned_opt import checkpoint, features, pretrained
import task_suite


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  root = tmp_path_factory.mktemp("checkpoints")
  lopt = learned_opt.MLPLOpt()
  pretrained.save_pretrained(
    root / "random",
    lopt,
    lopt.init(jax.random.key(0)),
    config={"estimator": "es"},
    outer_steps=0,
    suite_seed=0,
    evaluation={"win_rate_vs_adam": 0.5},
  )
  lopt = learned_opt.MLPLOpt(step_mult=0.01)
  pretrained.save_pretrained(
    root / "descent", lopt, _descent_theta(lopt), outer_steps=0
  )
  return root


def _descent_theta(lopt):
  """MLP weights computing ``o0 = relu(g) - relu(-g) = g``, ``o1 = 0``."""
  theta = jax.tree.map(jnp.zeros_like, lopt.init(jax.random.key(0)))
  first, second, last = theta["mlp"]
  g = features.per_param_feature_names(lopt.decays).index("g")
  first["w"] = first["w"].at[g, 0].set(1.0).at[g, 1].set(-1.0)
  second["w"] = second["w"].at[0, 0].set(1.0).at[1, 1].set(1.0)
  last["w"] = last["w"].at[0, 0].set(1.0).at[1, 0].set(-1.0)
  return theta


def _hash_by_hand(weights_dir):
  digest = hashlib.sha256()
  for path in sorted(p for p in weights_dir.rglob("*") if p.is_file()):
    digest.update(path.relative_to(weights_dir).as_posix().encode() + b"\0")
    digest.update(path.read_bytes())
  return digest.hexdigest()


def test_manifest_records_training_and_matching_sha256(root):
  manifest = json.loads((root / "random" / "manifest.json").read_text())
  assert manifest["architecture"] == learned_opt.MLPLOpt().config()
  assert manifest["outer_steps"] == 0 and manifest["suite_seed"] == 0
  assert manifest["config"] == {"estimator": "es"}
  assert manifest["evaluation"] == {"win_rate_vs_adam": 0.5}
  assert manifest["sha256"] == _hash_by_hand(root / "random" / "weights")
  assert pretrained.available(root) == ["descent", "random"]


def test_loads_offline_with_the_saved_weights(root, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("load_pretrained tried to use the network")

  # Connections and name lookups fail; local socket pairs (asyncio) work.
  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(socket.socket, "connect_ex", no_network)
  monkeypatch.setattr(socket, "getaddrinfo", no_network)
  lopt, theta, manifest = pretrained.load_pretrained_with_info(
    "random", root=root
  )
  assert lopt == learned_opt.MLPLOpt()
  test_utils.assert_trees_equal(theta, lopt.init(jax.random.key(0)))
  assert manifest["name"] == "random"
  # A path works as well as a name.
  _, theta_by_path, _ = pretrained.load_pretrained_with_info(root / "random")
  test_utils.assert_trees_equal(theta, theta_by_path)


def test_loaded_optimizer_trains_a_test_task(root):
  tx = learned_opt.load_pretrained("descent", root=root)
  spec = task_suite.sample_suite(
    1, seed=0, split="test", weights={"quadratic": 1.0}
  )[0]
  task = task_suite.get_task(spec)

  @jax.jit
  def train(key):
    params = task.init(key)

    def step(carry, k):
      params, state = carry
      k_batch, k_loss = jax.random.split(k)
      loss, grads = task.value_and_grad(
        params, k_loss, task.batch(k_batch, "train")
      )
      updates, state = tx.update(grads, state, params, value=loss)
      return (optax.apply_updates(params, updates), state), loss

    keys = jax.random.split(key, 200)
    return jax.lax.scan(step, (params, tx.init(params)), keys)[1]

  losses = np.asarray(train(jax.random.key(0)))
  assert np.all(np.isfinite(losses))
  assert losses[-20:].mean() < 0.7 * losses[:20].mean(), losses[::20]


def _copy(root, tmp_path, name="random"):
  shutil.copytree(root / name, tmp_path / name)
  return tmp_path / name


def test_flipped_byte_is_detected(root, tmp_path):
  directory = _copy(root, tmp_path)
  weights = sorted(
    (p for p in (directory / "weights").rglob("*") if p.is_file()),
    key=lambda p: p.stat().st_size,
  )[-1]  # the largest file: the tensor data
  data = bytearray(weights.read_bytes())
  data[len(data) // 2] ^= 0xFF
  weights.write_bytes(bytes(data))
  with pytest.raises(checkpoint.CheckpointError, match="corrupted"):
    pretrained.load_pretrained(directory)
  with pytest.raises(ValueError, match="sha256"):
    pretrained.verify(directory)


def test_corrupted_manifest_is_detected(root, tmp_path):
  directory = _copy(root, tmp_path)
  manifest = directory / "manifest.json"
  manifest.write_text(manifest.read_text()[:50])
  with pytest.raises(checkpoint.CheckpointError, match="corrupted"):
    pretrained.load_pretrained(directory)
  shutil.rmtree(directory / "weights")
  manifest.write_text(json.dumps({"architecture": {}, "sha256": "0"}))
  with pytest.raises(checkpoint.CheckpointError, match="no weights"):
    pretrained.load_pretrained(directory)


def test_manifest_of_another_architecture_is_detected(root, tmp_path):
  directory = _copy(root, tmp_path)
  manifest = json.loads((directory / "manifest.json").read_text())
  manifest["architecture"]["kwargs"]["step_mult"] = 0.5
  (directory / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(checkpoint.CheckpointError, match="step_mult"):
    pretrained.load_pretrained(directory)


def test_missing_checkpoint_lists_the_available_ones(root, tmp_path):
  with pytest.raises(FileNotFoundError, match="available: descent, random"):
    pretrained.load_pretrained("no_such_name", root=root)
  with pytest.raises(FileNotFoundError, match="available: none"):
    pretrained.load_pretrained("random", root=tmp_path)


def test_save_refuses_to_overwrite(root):
  lopt = learned_opt.MLPLOpt()
  with pytest.raises(FileExistsError):
    pretrained.save_pretrained(
      root / "random", lopt, lopt.init(jax.random.key(1))
    )


def test_the_default_is_shipped():
  assert pretrained.DEFAULT_NAME in pretrained.available()


@pytest.mark.parametrize("name", pretrained.available())
def test_shipped_checkpoint_verifies_and_trains(name):
  directory = pretrained.checkpoints_root() / name
  manifest = pretrained.verify(directory)
  assert manifest["sha256"] == _hash_by_hand(directory / "weights")
  assert manifest["evaluation"]["horizons"], "shipped without its evaluation"
  # The run's length, for the checkpoints with progress features.
  tx = learned_opt.load_pretrained(name, num_steps=300)
  assert isinstance(tx, optax.GradientTransformationExtraArgs)
  # It trains a held-out task: a noise-free test-split quadratic.
  task = task_suite.get_task(
    "quadratic(dim=8;seed=7,cond=30.0,noise_std=0.0,loss_scale=1.0,"
    "init_scale=1.0)"
  )
  params = task.init(jax.random.key(0))

  def step(carry, key):
    params, state = carry
    batch = task.batch(key, "train")
    loss, grads = task.value_and_grad(params, key, batch)
    updates, state = tx.update(grads, state, params, value=loss)
    return (optax.apply_updates(params, updates), state), loss

  keys = jax.random.split(jax.random.key(1), 300)
  _, losses = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), keys))(
    params
  )
  assert bool(jnp.all(jnp.isfinite(losses)))
  assert float(losses[-20:].mean()) < 0.5 * float(losses[:5].mean())
