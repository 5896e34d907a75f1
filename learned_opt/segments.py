"""Sums and broadcasts over contiguous segments of an entry axis.

Several small tensors packed on one entry axis (``mlp_lopt.plan_units``)
occupy contiguous ranges known at trace time, so per-segment sums are static
slices and per-entry copies of per-segment values are a constant-index gather.
A one-hot ``[N, k]`` matmul computes the same, but XLA:CPU runs such thin
matmuls slowly (~110 us for the segment sums of 874 packed entries of the
10k-parameter model of ``bench/overhead.py``) and embeds the ``N x k``
matrix in the program; with slices and gathers that model's hierarchical
step was 5-7% faster.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def segment_sum(x: jax.Array, sizes: Sequence[int]) -> jax.Array:
  """``[..., N] -> [..., k]``: sums over consecutive segments of ``sizes``.

  Args:
    x: values with the packed entries on the last axis.
    sizes: the ``k`` segments' lengths, in order (they sum to ``N``).
  """
  if x.shape[-1] != sum(sizes):
    raise ValueError(
      f"segment_sum: x has {x.shape[-1]} entries on its last axis but the "
      f"segments {tuple(sizes)} cover {sum(sizes)}."
    )
  bounds = np.cumsum([0, *sizes])
  return jnp.stack(
    [jnp.sum(x[..., a:b], axis=-1) for a, b in zip(bounds[:-1], bounds[1:])],
    axis=-1,
  )


def segment_expand(x: jax.Array, sizes: Sequence[int]) -> jax.Array:
  """``[..., k] -> [..., N]``: every entry gets its segment's value.

  Args:
    x: one value per segment on the last axis.
    sizes: the ``k`` segments' lengths, in order.
  """
  if x.shape[-1] != len(sizes):
    raise ValueError(
      f"segment_expand: x has {x.shape[-1]} values on its last axis but "
      f"there are {len(sizes)} segments."
    )
  index = np.repeat(np.arange(len(sizes)), sizes)
  return jnp.take(x, index, axis=-1)
