"""The benchmark's straightforward HierarchicalLOpt computes what ours does.

``bench/overhead.py`` reads our speed against it, so it must be the same
optimizer written plainly, not a cheaper or costlier variant.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt import hierarchical

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import straightforward  # noqa: E402


def test_straightforward_matches_hierarchical_over_steps():
  lopt = hierarchical.HierarchicalLOpt(chunk_size=8)
  theta = lopt.init(jax.random.key(0))
  # Larger last-layer weights, so that the MLP's and the LSTM's outputs
  # (not only the small init) move the updates.
  theta["mlp"][-1]["w"] = theta["mlp"][-1]["w"] * 100.0
  k_w, k_b = jax.random.split(jax.random.key(1))
  params = {
    "w": jax.random.normal(k_w, (6, 4)),
    "b": jax.random.normal(k_b, (4,)),
    "scalar": jnp.asarray(0.5),
  }
  ours, plain = lopt.optimizer(theta), straightforward.optimizer(lopt, theta)
  state_ours, state_plain = ours.init(params), plain.init(params)
  update_ours, update_plain = jax.jit(ours.update), jax.jit(plain.update)
  for step in range(4):
    grads = jax.tree.map(
      lambda p, step=step: jnp.sin(3.0 * p + step) + 0.1 * p, params
    )
    loss = 1.0 / (1 + step)
    u_ours, state_ours = update_ours(grads, state_ours, params, value=loss)
    u_plain, state_plain = update_plain(grads, state_plain, params, value=loss)
    for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_plain)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-9)
    params = optax.apply_updates(params, u_ours)
  assert max(float(jnp.max(jnp.abs(u))) for u in jax.tree.leaves(u_ours)) > 0
