"""Tree assertions shared by the tests (optax keeps its own the same way)."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np


def assert_trees_all_close(a, b, rtol=1e-6, atol=1e-6):
  """Same structure, and every leaf pair close."""
  assert jax.tree.structure(a) == jax.tree.structure(b), (
    f"structures differ: {jax.tree.structure(a)} vs {jax.tree.structure(b)}"
  )
  for path, x, y in zip(
    [
      jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(a)
    ],
    jax.tree.leaves(a),
    jax.tree.leaves(b),
  ):
    np.testing.assert_allclose(
      np.asarray(x, np.float64),
      np.asarray(y, np.float64),
      rtol=rtol,
      atol=atol,
      err_msg=path,
    )


def assert_trees_equal(a, b):
  """Same structure, and every leaf pair bit-identical."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_tree_shapes_dtypes_equal(a, b):
  """Same structure, shapes and dtypes."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert jnp.shape(x) == jnp.shape(y), (jnp.shape(x), jnp.shape(y))
    assert jnp.result_type(x) == jnp.result_type(y), (
      jnp.result_type(x),
      jnp.result_type(y),
    )


def assert_tree_all_finite(tree):
  """Every leaf is finite."""
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    assert bool(jnp.all(jnp.isfinite(x))), (
      f"non-finite values at {jax.tree_util.keystr(path)}"
    )


def train_losses(task, tx, key, num_steps):
  """The train losses of ``num_steps`` steps of ``tx`` from ``task.init``.

  The inner loop every task test needs (jit it at the call site): batches
  and loss keys are split from ``key``, and the loss is passed as ``value``
  so learned optimizers and baselines run alike.
  """
  import optax  # only the training helpers need it

  k_init, k_steps = jax.random.split(key)
  params = task.init(k_init)

  def step(carry, k):
    params, state = carry
    k_batch, k_loss = jax.random.split(k)
    batch = task.batch(k_batch, "train")
    loss, grads = task.value_and_grad(params, k_loss, batch)
    updates, state = tx.update(grads, state, params, value=loss)
    return (optax.apply_updates(params, updates), state), loss

  init = (params, tx.init(params))
  return jax.lax.scan(step, init, jax.random.split(k_steps, num_steps))[1]


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def meta_train_cmd(workdir, *args: str, config: str = "tiny.py") -> list[str]:
  """``lopt meta-train`` of ``configs/CONFIG`` in ``workdir``, as a command.

  ``args`` (``--config.a.b=V`` overrides) follow the workdir.
  """
  return [
    sys.executable,
    "-m",
    "meta_train.cli.meta_train",
    "--config",
    str(REPO_ROOT / "configs" / config),
    "--workdir",
    str(workdir),
    *args,
  ]
