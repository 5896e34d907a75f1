"""``networks.chunked``: outputs and sums equal to a single pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_opt import networks


@pytest.mark.parametrize(
  "n",
  [
    3,  # one chunk, smaller than the chunk size
    4,  # exactly one chunk
    12,  # a loop over chunks
    23,  # a loop and a remainder
  ],
)
def test_chunked_outputs_and_sums_equal_one_pass(n):
  x = jax.random.normal(jax.random.key(n), (3, n))

  def fn(buffer, x):
    buffer = buffer.at[:, : x.shape[-1]].set(x * 2.0)
    return buffer[:1, : x.shape[-1]], {"sq": x * x, "x": x}, buffer

  buffer = jnp.zeros((3, 4))
  out, sums = jax.jit(lambda x: networks.chunked(fn, (x,), 4, buffer))(x)
  np.testing.assert_allclose(out, 2.0 * x[:1], rtol=1e-6)
  np.testing.assert_allclose(sums["sq"], jnp.sum(x * x, axis=1), rtol=1e-5)
  np.testing.assert_allclose(sums["x"], jnp.sum(x, axis=1), atol=1e-5)
