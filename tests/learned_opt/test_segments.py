"""Segment sums and broadcasts equal their one-hot matrix forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_opt import segments


def onehot(sizes):
  ids = np.repeat(np.arange(len(sizes)), sizes)
  return (ids[:, None] == np.arange(len(sizes))[None]).astype(np.float32)


@pytest.mark.parametrize("sizes", [(5,), (72, 72, 720, 10), (1, 3, 1)])
def test_segment_sum_matches_onehot_matmul(sizes):
  x = jax.random.normal(jax.random.key(0), (3, 4, sum(sizes)))
  got = jax.jit(segments.segment_sum, static_argnums=1)(x, sizes)
  np.testing.assert_allclose(got, x @ onehot(sizes), rtol=1e-5, atol=1e-5)
  assert got.shape == (3, 4, len(sizes))


@pytest.mark.parametrize("sizes", [(5,), (72, 72, 720, 10), (1, 3, 1)])
def test_segment_expand_matches_onehot_matmul(sizes):
  x = jax.random.normal(jax.random.key(1), (2, len(sizes)))
  for materialize in (False, True):
    expand = functools.partial(segments.segment_expand, materialize=materialize)
    got = jax.jit(expand, static_argnums=1)(x, sizes)
    # Exact copies, not rounded products.
    np.testing.assert_array_equal(got, np.repeat(np.asarray(x), sizes, -1))


def test_plain_segment_expand_keeps_segments_apart():
  x = jnp.array([1.0, jnp.inf, 2.0])
  got = segments.segment_expand(x, (2, 1, 3))
  np.testing.assert_array_equal(got, [1.0, 1.0, np.inf, 2.0, 2.0, 2.0])


def test_segment_expand_of_many_segments_uses_no_large_constant():
  sizes = (1,) * 300  # 300 x 300 one-hot entries: over the limit
  x = jnp.arange(2.0 * 300).reshape(2, 300)
  expand = jax.jit(
    functools.partial(segments.segment_expand, materialize=True),
    static_argnums=1,
  )
  np.testing.assert_array_equal(expand(x, sizes), x)
  assert "dot" not in expand.lower(x, sizes).as_text()


def test_segments_under_vmap():
  sizes = (2, 6, 1)
  x = jax.random.normal(jax.random.key(2), (8, 4, 9))
  got = jax.vmap(lambda a: segments.segment_sum(a, sizes))(x)
  np.testing.assert_allclose(got, x @ onehot(sizes), rtol=1e-5, atol=1e-5)
  v = jnp.arange(8.0 * 3).reshape(8, 3)
  back = jax.vmap(lambda a: segments.segment_expand(a, sizes))(v)
  np.testing.assert_array_equal(back, v @ onehot(sizes).T)


def test_mismatched_sizes_raise():
  with pytest.raises(ValueError, match="cover 5"):
    segments.segment_sum(jnp.ones(6), (2, 3))
  with pytest.raises(ValueError, match="2 segments"):
    segments.segment_expand(jnp.ones(3), (2, 3))
