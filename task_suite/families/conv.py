"""Small image CNNs (TaskSet's ``conv`` family) with im2col convolutions.

Static fields: per-layer channels (1-4 layers of 4-64), strides (1 or 2) and
2x2 max-pool flags, image size and batch size, from a menu of at most 8
configurations. Dynamic fields: activation, init scale, dataset, data seed.
The network is conv layers (3x3, SAME), global average pooling and a dense
classifier.

Convolutions are patch extraction (static strided slices) + one matmul. On
XLA:CPU this is numerically the same as ``lax.conv_general_dilated`` and much
faster inside ``lax.scan``, where the meta-training engine runs every step
(DESIGN.md section 8: a 2-conv step took 127 ms with lax.conv in a scan).
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from task_suite import base
from task_suite.families import common

KERNEL_SIZE = 3

MENU: tuple[dict[str, Any], ...] = (
  {"channels": (8,), "strides": (2,), "pool": (0,)},
  {"channels": (8, 16), "strides": (2, 2), "pool": (0, 0)},
  {"channels": (4, 8, 16), "strides": (1, 1, 1), "pool": (1, 1, 0)},
  {"channels": (64,), "strides": (1,), "pool": (1,)},
  {"channels": (16, 32), "strides": (1, 2), "pool": (1, 0)},
  {"channels": (32, 64), "strides": (2, 2), "pool": (0, 0)},
  {"channels": (8, 16, 32, 64), "strides": (2, 1, 2, 1), "pool": (0, 0, 0, 0)},
  {"channels": (16, 32, 32), "strides": (2, 2, 2), "pool": (0, 0, 0)},
)
_SIZES = ((8, 32),) * 4 + ((16, 32), (16, 32), (16, 16), (28, 16))
MENU = tuple(
  {**entry, "image_size": size, "batch_size": batch}
  for entry, (size, batch) in zip(MENU, _SIZES)
)
MENU_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class _ConvShape:
  """ConvSpec's own fields (they lead: ``common.ImageSpec``)."""

  channels: tuple[int, ...] = base.static_field()
  strides: tuple[int, ...] = base.static_field()
  pool: tuple[int, ...] = base.static_field()


@dataclasses.dataclass(frozen=True)
class ConvSpec(common.ImageSpec, _ConvShape):
  """A small CNN classifier.

  Attributes (and ``common.ImageSpec``'s):
    channels: output channels of each 3x3 conv layer.
    strides: stride (1 or 2) of each conv layer.
    pool: per layer, 1 to follow it with a 2x2 max pool, else 0.
  """

  family: ClassVar[str] = "conv"

  def __post_init__(self):
    super().__post_init__()
    n = len(self.channels)
    if not n or len(self.strides) != n or len(self.pool) != n:
      raise ValueError(
        "channels, strides and pool need one entry per conv layer (at least "
        f"one), got {self.channels}, {self.strides}, {self.pool}"
      )
    if any(c < 1 for c in self.channels):
      raise ValueError(f"channels must be positive, got {self.channels}")
    if any(s not in (1, 2) for s in self.strides):
      raise ValueError(f"strides must be 1 or 2, got {self.strides}")
    if any(p not in (0, 1) for p in self.pool):
      raise ValueError(f"pool flags must be 0 or 1, got {self.pool}")


def _same_padding(size: int, stride: int, k: int) -> tuple[int, int, int]:
  """(output size, low pad, high pad) of TensorFlow/XLA "SAME" padding."""
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return out, total // 2, total - total // 2


def im2col(x: jax.Array, k: int, stride: int) -> jax.Array:
  """Patches of a "SAME"-padded ``k x k`` convolution.

  Args:
    x: [B, H, W, C].
    k: kernel size.
    stride: stride in both spatial dimensions.

  Returns:
    [B, Ho, Wo, k * k * C], ordered (kernel row, kernel column, channel) like
    an HWIO kernel reshaped to [k * k * C, O].
  """
  _, h, w, _ = x.shape
  ho, h_lo, h_hi = _same_padding(h, stride, k)
  wo, w_lo, w_hi = _same_padding(w, stride, k)
  x = jnp.pad(x, ((0, 0), (h_lo, h_hi), (w_lo, w_hi), (0, 0)))
  patches = [
    x[
      :,
      i : i + (ho - 1) * stride + 1 : stride,
      j : j + (wo - 1) * stride + 1 : stride,
    ]
    for i in range(k)
    for j in range(k)
  ]
  return jnp.concatenate(patches, axis=-1)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """ "SAME" 2D convolution as im2col + matmul.

  Args:
    x: [B, H, W, C].
    kernel: HWIO [k, k, C, O].
    stride: spatial stride.

  Returns:
    [B, ceil(H / stride), ceil(W / stride), O]; equal to
    ``lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
    dimension_numbers=("NHWC", "HWIO", "NHWC"))``.
  """
  k, _, c, o = kernel.shape
  return im2col(x, k, stride) @ kernel.reshape(k * k * c, o)


def max_pool2(x: jax.Array) -> jax.Array:
  """2x2 max pool with stride 2 (an odd last row/column is dropped)."""
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ConvTask(common.ImageTask):
  """Softmax cross-entropy of a CNN with global average pooling."""

  def init(self, key: jax.Array) -> base.Params:
    s, scale = self.static, self.dynamic["init_scale"]
    c_ins = (1, *s["channels"][:-1])
    shapes = [
      (KERNEL_SIZE, KERNEL_SIZE, c_in, c_out)
      for c_in, c_out in zip(c_ins, s["channels"])
    ]
    normals = common.normal_draws(
      key, shapes + [(s["channels"][-1], NUM_CLASSES)]
    )
    params = {
      f"conv_{i}": common.dense_params(z, scale)
      for i, z in enumerate(normals[:-1])
    }
    params["head"] = common.dense_params(normals[-1], scale)
    return params

  def loss(
    self, params: base.Params, key: jax.Array, batch: base.Batch
  ) -> jax.Array:
    del key  # deterministic model
    s, act = self.static, self.dynamic["activation"]
    x = batch["image"]  # [B, S, S, 1]
    for i, (stride, pool) in enumerate(zip(s["strides"], s["pool"])):
      layer = params[f"conv_{i}"]
      x = conv2d(x, layer["w"], stride) + layer["b"][None, None, None]
      x = common.activation(act, x)
      if pool:
        x = max_pool2(x)
    logits = common.dense(params["head"], x.mean(axis=(1, 2)))  # [B, classes]
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["label"]
    ).mean()

  def normalize(self, loss: jax.Array) -> jax.Array:
    # Chance level (uniform prediction) is log(num_classes).
    return common.cap(loss / math.log(NUM_CLASSES))


NUM_CLASSES = common.ImageFamily.NUM_CLASSES


class ConvFamily(common.ImageFamily):
  """Samples ``ConvSpec``s from a menu of static configurations.

  Args: see ``common.ImageFamily`` (menu entries set channels, strides, pool,
  image_size and batch_size).
  """

  name = "conv"
  spec_type = ConvSpec
  task_type = ConvTask
  MENU = MENU
  MENU_WEIGHTS = MENU_WEIGHTS
