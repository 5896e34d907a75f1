"""The networks of the learned optimizers, as plain jnp over theta dicts.

Weights are dicts of float32 arrays (``{"w": [in, out], "b": [out]}`` per
layer), so theta is an ordinary pytree that ``vmap``/``grad`` handle directly
and checkpoints store by name.

The per-parameter MLP is evaluated per tensor with exact algebra instead of
tiling (see ``apply_mlp_fused``); the reference in
``tests/learned_opt/reference.py`` tiles everything and must agree.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Layer = dict[str, jax.Array]


def init_linear(
  key: jax.Array, fan_in: int, fan_out: int, scale: float = 1.0
) -> Layer:
  """``w ~ N(0, 1/fan_in) * scale`` (truncated at 2 std), ``b = 0``."""
  std = scale / jnp.sqrt(fan_in)
  w = std * jax.random.truncated_normal(key, -2.0, 2.0, (fan_in, fan_out))
  return {"w": w.astype(jnp.float32), "b": jnp.zeros([fan_out], jnp.float32)}


def linear(layer: Layer, x: jax.Array) -> jax.Array:
  """``x @ w + b`` for ``x`` of any rank >= 1."""
  b = layer["b"].reshape((1,) * (x.ndim - 1) + (-1,))
  return x @ layer["w"] + b


def init_mlp(
  key: jax.Array, sizes: Sequence[int], last_scale: float = 0.01
) -> list[Layer]:
  """Layers for ``sizes = (in, hidden..., out)``; the last one scaled down.

  A small last layer makes a randomly initialised optimizer take small,
  stable steps (DESIGN.md §8).
  """
  keys = jax.random.split(key, len(sizes) - 1)
  last = len(sizes) - 2
  return [
    init_linear(k, a, b, last_scale if i == last else 1.0)
    for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
  ]


def apply_mlp(layers: Sequence[Layer], x: jax.Array) -> jax.Array:
  """ReLU MLP with a linear last layer."""
  for layer in layers[:-1]:
    x = jax.nn.relu(linear(layer, x))
  return linear(layers[-1], x)


def apply_mlp_fused(
  layers: Sequence[Layer],
  raw_features: jax.Array,
  scales: jax.Array,
  shared_inputs: jax.Array,
  num_step_outputs: int = 2,
) -> tuple[jax.Array, jax.Array]:
  """The per-parameter MLP on one tensor, without tiling anything.

  Mathematically equal to running ``apply_mlp`` on the tiled input
  ``concat([raw_features * scales, broadcast(shared_inputs)], axis=1)`` and
  then averaging outputs ``num_step_outputs:`` over the entries:

  * normalization folds into the weights: ``(x * s) @ W == x @ (s[:, None] *
    W)``, so normalized features are never materialized;
  * the shared inputs (identical for every entry) enter as a per-tensor bias
    of the first layer;
  * the last layer is linear, so the mean of its averaged outputs is the
    last layer applied to the mean last hidden activation.

  Args:
    layers: MLP layers; the first takes ``F + K`` inputs.
    raw_features: ``[N, F]`` unnormalized per-entry features.
    scales: ``[F]`` per-column normalization scales.
    shared_inputs: ``[K]`` inputs shared by all entries of the tensor.
    num_step_outputs: outputs kept per entry (the rest are averaged).

  Returns:
    ``([N, num_step_outputs] per-entry outputs, [out - num_step_outputs]
    averaged outputs)``.
  """
  first, *rest = layers
  f = raw_features.shape[1]
  w_entry = scales[:, None] * first["w"][:f]  # [F, H]
  bias = shared_inputs @ first["w"][f:] + first["b"]  # [H]
  h = jax.nn.relu(raw_features @ w_entry + bias[None])
  for layer in rest[:-1]:
    h = jax.nn.relu(linear(layer, h))
  last = rest[-1]
  step_out = (
    h @ last["w"][:, :num_step_outputs] + last["b"][None, :num_step_outputs]
  )
  avg_out = (
    jnp.mean(h, axis=0) @ last["w"][:, num_step_outputs:]
    + last["b"][num_step_outputs:]
  )
  return step_out, avg_out


def init_lstm(key: jax.Array, num_inputs: int, hidden: int) -> Layer:
  """One fused LSTM layer: gates ``[x, h] @ w + b`` in order (i, f, g, o)."""
  layer = init_linear(key, num_inputs + hidden, 4 * hidden)
  return {"wx": layer["w"][:num_inputs], "wh": layer["w"][num_inputs:],
          "b": layer["b"]}  # fmt: skip


def lstm_step(
  lstm: Layer, x: jax.Array, h: jax.Array, c: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """One LSTM step on a batch ``x: [B, I]``, ``h, c: [B, H]``.

  The forget gate gets a +1 bias (as haiku's LSTM), so a fresh LSTM keeps
  its memory.
  """
  gates = x @ lstm["wx"] + h @ lstm["wh"] + lstm["b"][None]
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return h, c
