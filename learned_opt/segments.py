"""Sums and broadcasts over contiguous segments of an entry axis.

Several small tensors packed on one entry axis (``per_param.plan_units``)
occupy contiguous ranges known at trace time.

* Per-segment sums are static slices. A one-hot ``[N, k]`` matmul computes
  the same, but XLA:CPU runs such thin matmuls slowly (~110 us for the
  segment sums of 874 packed entries of the 10k-parameter model of
  ``bench/overhead.py``); with slices that model's hierarchical step was
  5-7% faster.
* Per-entry copies of per-segment values are a constant-index gather, or
  (``materialize=True``) a ``[k] @ [k, N]`` one-hot matmul at full float32
  precision (exact: each output is one value times 1). With the gather,
  XLA:CPU fused the per-segment values' computation into it and redid it
  for every entry (~4.5 ns per entry for the first layer's bias); the
  matmul materializes them first, and the 10k model's step was ~5% faster.
  Above ``_MAX_ONEHOT_ENTRIES`` one-hot entries (many tiny tensors in one
  unit) the gather is used anyway, so that no large constant enters the
  program.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_MAX_ONEHOT_ENTRIES = 1 << 16


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


def segment_expand(
  x: jax.Array, sizes: Sequence[int], *, materialize: bool = False
) -> jax.Array:
  """``[..., k] -> [..., N]``: every entry gets its segment's value.

  Args:
    x: one value per segment on the last axis.
    sizes: the ``k`` segments' lengths, in order.
    materialize: compute ``x`` once, as the input of a one-hot matmul (see
      the module docstring). Only for finite values: ``0 * inf`` would make
      the other segments' entries NaN.
  """
  if x.shape[-1] != len(sizes):
    raise ValueError(
      f"segment_expand: x has {x.shape[-1]} values on its last axis but "
      f"there are {len(sizes)} segments."
    )
  if not materialize or len(sizes) * sum(sizes) > _MAX_ONEHOT_ENTRIES:
    index = np.repeat(np.arange(len(sizes)), sizes)
    return jnp.take(x, index, axis=-1)
  onehot = np.repeat(np.eye(len(sizes), dtype=np.float32), sizes, axis=1)
  return jnp.matmul(
    x.astype(jnp.float32), onehot, precision=jax.lax.Precision.HIGHEST
  ).astype(x.dtype)
