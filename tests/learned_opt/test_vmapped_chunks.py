"""``for_vmapped_instances``: smaller chunks under vmap, same numbers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import learned_opt


@pytest.mark.parametrize(
  "num_instances, want",
  [(1, 1024), (2, 1024), (4, 512), (8, 256), (12, 128), (16, 128), (64, 128)],
)
def test_chunk_size_shrinks_with_the_vmapped_instances(num_instances, want):
  lopt = learned_opt.HierarchicalLOpt()
  tuned = learned_opt.for_vmapped_instances(lopt, num_instances)
  assert tuned.chunk_size == want
  # Nothing but the speed knob changes.
  assert dataclasses.replace(tuned, chunk_size=lopt.chunk_size) == lopt


def test_never_raises_a_small_chunk_size():
  lopt = learned_opt.MLPLOpt(chunk_size=64)
  assert learned_opt.for_vmapped_instances(lopt, 8) is lopt


def test_optimizers_without_a_chunk_size_are_unchanged():
  class NoChunks(learned_opt.LearnedOptimizer):
    architecture = "no_chunks"

    def init(self, key):
      return {}

    def optimizer(self, theta):
      return optax.sgd(0.1)

  lopt = NoChunks()
  assert learned_opt.for_vmapped_instances(lopt, 64) is lopt


def test_rejects_a_population_below_one():
  with pytest.raises(ValueError, match="num_instances must be >= 1"):
    learned_opt.for_vmapped_instances(learned_opt.MLPLOpt(), 0)


def test_vmapped_updates_agree_with_the_single_instance_chunking():
  """8 perturbed thetas on 1,300 entries: chunk 1024 vs the tuned 256."""
  lopt = learned_opt.HierarchicalLOpt()
  tuned = learned_opt.for_vmapped_instances(lopt, 8)
  assert tuned.chunk_size == 256
  k_theta, k_noise, k_p, k_g = jax.random.split(jax.random.key(0), 4)
  theta = lopt.init(k_theta)
  leaves, treedef = jax.tree.flatten(theta)
  noise = jax.random.split(k_noise, len(leaves))
  thetas = treedef.unflatten(
    [
      x[None] + 0.1 * jax.random.normal(k, (8, *x.shape))
      for x, k in zip(leaves, noise)
    ]
  )
  params = {
    "w": jax.random.normal(k_p, (50, 26)),
    "b": jnp.zeros([26]),
  }
  grads = jax.tree.map(lambda p: jax.random.normal(k_g, p.shape), params)

  def two_updates(lopt, theta):
    tx = lopt.optimizer(theta)
    state = tx.init(params)
    _, state = tx.update(grads, state, params, value=jnp.float32(1.0))
    updates, _ = tx.update(grads, state, params, value=jnp.float32(0.9))
    return updates

  run = lambda lopt: jax.jit(jax.vmap(lambda th: two_updates(lopt, th)))(thetas)
  want, got = run(lopt), run(tuned)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-9)
