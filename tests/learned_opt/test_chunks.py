"""``networks.chunked``: chunk lengths, and sums equal to a single pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_opt import networks


@pytest.mark.parametrize(
  "n, chunk_size, want",
  [
    (1000, 1024, 1000),  # one chunk
    (655360, 1024, 1024),  # a multiple
    (4608, 1024, 1536),  # 3 chunks instead of 4 and a remainder
    (5184, 1024, 1296),  # 4 instead of 5 and a remainder
    (1300, 1024, 1300),  # one chunk of at most 1.5 chunk sizes
    (2053, 1024, 1024),  # prime: chunks and a remainder
    (320, 128, 160),
  ],
)
def test_chunk_length(n, chunk_size, want):
  got = networks.chunk_length(n, chunk_size)
  assert got == want
  num_chunks = -(-n // got)
  assert num_chunks <= -(-n // chunk_size)  # never more chunks
  assert got <= max(n, chunk_size) and got <= 1.5 * chunk_size


@pytest.mark.parametrize(
  "n, length",
  [
    (5, 5),  # one chunk
    (12, 4),  # a loop over chunks
    (18, 6),  # a loop over 3 chunks of 6
    (23, 4),  # a loop and a remainder: no divisor of 23 fits
  ],
)
def test_chunked_outputs_and_sums_equal_one_pass(n, length):
  assert networks.chunk_length(n, 4) == length
  x = jax.random.normal(jax.random.key(n), (3, n))

  def fn(buffer, x):
    buffer = buffer.at[:, : x.shape[-1]].set(x * 2.0)
    return buffer[:1, : x.shape[-1]], {"sq": x * x, "x": x}, buffer

  buffer = jnp.zeros((3, networks.chunk_length(n, 4)))
  out, sums = jax.jit(lambda x: networks.chunked(fn, (x,), 4, buffer))(x)
  np.testing.assert_allclose(out, 2.0 * x[:1], rtol=1e-6)
  np.testing.assert_allclose(sums["sq"], jnp.sum(x * x, axis=1), rtol=1e-5)
  np.testing.assert_allclose(sums["x"], jnp.sum(x, axis=1), atol=1e-5)
