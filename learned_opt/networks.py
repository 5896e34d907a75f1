"""The networks of the learned optimizers, as plain jnp over theta dicts.

Weights are dicts of float32 arrays (``{"w": [in, out], "b": [out]}`` per
layer), so theta is an ordinary pytree that ``vmap``/``grad`` handle directly
and checkpoints store by name.

The per-parameter MLP is evaluated per tensor with exact algebra instead of
tiling (``fold_first_layer``, ``mlp_entries``, ``mlp_packed``); the reference in
``tests/learned_opt/reference.py`` tiles everything and must agree.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from learned_opt import segments

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


def fold_first_layer(
  first: Layer, scales: jax.Array, shared_inputs: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Per-tensor first-layer weights and biases of the fused MLP.

  Exact algebra on the tiled input ``[raw * s, shared]`` of tensor ``t``:
  ``(raw * s) @ W_f + shared @ W_k + b == raw @ (s[:, None] * W_f) +
  (shared @ W_k + b)``, so the normalized features are never formed and the
  inputs shared by every entry of a tensor are never tiled.

  Args:
    first: the first layer, ``w: [F + K, H]``.
    scales: ``[T, F]`` per-tensor normalization scales.
    shared_inputs: ``[T, K]`` inputs shared by all entries of each tensor.

  Returns:
    ``([T, H, F] weights for feature-major inputs, [T, H] biases)``.
  """
  f = scales.shape[1]
  w_entry = jnp.swapaxes(scales[:, :, None] * first["w"][None, :f], 1, 2)
  return w_entry, linear({"w": first["w"][f:], "b": first["b"]}, shared_inputs)


def mlp_entries(
  layers: Sequence[Layer],
  w_entry: jax.Array,
  bias: jax.Array,
  entry_inputs: Sequence[jax.Array],
  features_fn: Callable[..., jax.Array],
  num_step_outputs: int,
  chunk_size: int,
  output_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The per-parameter MLP over one tensor's entries, feature-major.

  Equal to ``apply_mlp`` on the tiled inputs (see ``fold_first_layer``) for
  the first ``num_step_outputs`` outputs. The other outputs are only needed
  averaged over the tensor, and the last layer is linear, so the caller gets
  them exactly from the mean last hidden activation (``averaged_outputs``).

  Entries are on the minor axis (``W.T @ x``) and go in chunks of
  ``chunk_size``, so a chunk's features and activations stay in cache: on a
  2-core CPU at ~1M entries, 1024-entry chunks were ~3x faster than
  whole-tensor arrays, and feature-major ~2x faster than entry-major.

  Args:
    layers: MLP layers (``w: [in, out]``).
    w_entry: ``[H, F]`` this tensor's folded first-layer weights.
    bias: ``[H]`` its first-layer bias.
    entry_inputs: arrays whose last axis has the ``N`` entries.
    features_fn: maps (chunks of) ``entry_inputs`` and ``buffer=`` (an
      ``[F, C]`` array to overwrite) to ``[F, C]`` raw features.
    num_step_outputs: outputs computed per entry.
    chunk_size: entries per chunk.
    output_fn: applied to each chunk's ``[num_step_outputs, C]`` outputs
      (e.g. the step rule), so that the loop writes only its result (a
      separate pass over all outputs after the loop: ~6% slower over 1M
      entries).

  Returns:
    ``([R, N] per-entry results of output_fn (default: the
    ``[num_step_outputs, N]`` outputs), [H] sum over the entries of the last
    hidden activation)``.
  """
  rest = layers[1:]
  hidden = [(layer["w"].T, layer["b"][:, None]) for layer in rest[:-1]]
  k = num_step_outputs
  w_step, b_step = rest[-1]["w"][:, :k].T, rest[-1]["b"][:k, None]
  bias = bias[:, None]

  finish = output_fn or (lambda out: out)

  def chunk_fn(buffer, *chunk):
    x = features_fn(*chunk, buffer=buffer)  # [F, C]
    h = jax.nn.relu(w_entry @ x + bias)  # [H, C]
    for w, b in hidden:
      h = jax.nn.relu(w @ h + b)
    # The chunk's sum of h as a matmul with ones: the MLP over 1M entries
    # was ~10% faster on XLA:CPU than with h added into a chunk-sized
    # accumulator.
    h_sum = h @ jnp.ones((h.shape[-1], 1), h.dtype)  # [H, 1]
    return finish(w_step @ h + b_step), h_sum, x

  # Each chunk's features overwrite the previous chunk's in one buffer.
  buffer = jnp.zeros((w_entry.shape[-1], chunk_size), jnp.float32)
  return chunked(chunk_fn, entry_inputs, chunk_size, buffer)


def mlp_packed(
  layers: Sequence[Layer],
  scales: jax.Array,
  bias: jax.Array,
  entry_inputs: Sequence[jax.Array],
  features_fn: Callable[..., jax.Array],
  segment_sizes: Sequence[int],
  num_step_outputs: int,
  output_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
  """``mlp_entries`` for k small tensors packed on one entry axis.

  One pass of a handful of ops serves all of them (per-tensor op overhead
  dominated small models): each entry's per-tensor scales and bias come from
  its segment (``segments.segment_expand``).

  Args:
    layers: MLP layers (``w: [in, out]``).
    scales: ``[k, F]`` each tensor's normalization scales.
    bias: ``[k, H]`` each tensor's first-layer bias.
    entry_inputs: arrays whose last axis has the ``N`` packed entries.
    features_fn: maps ``entry_inputs`` to ``[F, N]`` raw features.
    segment_sizes: the ``k`` tensors' numbers of entries, in order.
    num_step_outputs: outputs computed per entry.
    output_fn: applied to the ``[num_step_outputs, N]`` outputs.

  Returns:
    ``([R, N] per-entry results of output_fn (default: the outputs), [H, k]
    per-tensor sums of the last hidden activation)``.
  """
  first, *rest = layers
  f = scales.shape[1]
  # Scales and biases are finite (rsqrt of sums; clipped features), so
  # they may go through the one-hot matmul.
  expand = lambda x: segments.segment_expand(
    x.T, segment_sizes, materialize=True
  )  # [X, N]
  x = features_fn(*entry_inputs) * expand(scales)
  h = jax.nn.relu(first["w"][:f].T @ x + expand(bias))
  for layer in rest[:-1]:
    h = jax.nn.relu(layer["w"].T @ h + layer["b"][:, None])
  k = num_step_outputs
  out = rest[-1]["w"][:, :k].T @ h + rest[-1]["b"][:k, None]
  if output_fn is not None:
    out = output_fn(out)
  return out, segments.segment_sum(h, segment_sizes)


def averaged_outputs(
  last: Layer, h_mean: jax.Array, num_step_outputs: int
) -> jax.Array:
  """Outputs ``num_step_outputs:`` averaged over entries: ``[T, out - k]``."""
  k = num_step_outputs
  return linear({"w": last["w"][:, k:], "b": last["b"][k:]}, h_mean)


def chunked(fn, inputs: Sequence[jax.Array], chunk_size: int, buffer=None):
  """Runs ``fn`` over chunks of the inputs' last axis.

  Full chunks add their per-entry terms elementwise into chunk-sized
  accumulators, summed once after the loop: a reduction per chunk was a
  separate XLA:CPU op, and slow (~3 ns per entry).

  Args:
    fn: ``fn(*chunk) -> (out, terms)``: ``out`` is ``[k, c]`` per-entry
      values (or None), ``terms`` a pytree of per-entry values (entries on
      the last axis) to sum over the entries. With a ``buffer``:
      ``fn(buffer, *chunk) -> (out, terms, buffer)``.
    inputs: arrays whose last axis has the same length ``N``.
    chunk_size: entries per chunk; ``N`` need not be a multiple (a static
      remainder chunk handles the rest).
    buffer: optional scratch array ``[..., chunk_size]`` that each chunk
      gets and returns (the loop carries it, so its memory is reused); a
      smaller chunk gets its leading entries.

  Returns:
    ``(out for all N entries as [k, N] (or None), terms summed over all
    entries)``.
  """
  total = lambda terms: jax.tree.map(lambda x: jnp.sum(x, axis=-1), terms)
  n = inputs[0].shape[-1]

  def run(buffer, chunk):
    if buffer is None:
      return (*fn(*chunk), None)
    return fn(buffer[..., : chunk[0].shape[-1]], *chunk)

  if n <= chunk_size:
    out, terms, _ = run(buffer, inputs)
    return out, total(terms)
  num_full, rem = divmod(n, chunk_size)
  # The first chunk runs outside the loop: it gives the carry's shapes.
  out0, acc, buffer = run(buffer, [x[..., :chunk_size] for x in inputs])
  out = None
  if out0 is not None:
    out = jnp.zeros(out0.shape[:-1] + (n,), out0.dtype)
    out = jax.lax.dynamic_update_slice_in_dim(out, out0, 0, axis=-1)

  def body(i, carry):
    out, acc, buffer = carry
    start = i * chunk_size
    chunk = [
      jax.lax.dynamic_slice_in_dim(x, start, chunk_size, axis=x.ndim - 1)
      for x in inputs
    ]
    o, terms, buffer = run(buffer, chunk)
    if out is not None:
      out = jax.lax.dynamic_update_slice_in_dim(out, o, start, axis=-1)
    return out, jax.tree.map(jnp.add, acc, terms), buffer

  out, acc, buffer = jax.lax.fori_loop(1, num_full, body, (out, acc, buffer))
  sums = total(acc)
  if rem:
    start = num_full * chunk_size
    o, terms, _ = run(buffer, [x[..., start:] for x in inputs])
    if out is not None:
      out = jax.lax.dynamic_update_slice_in_dim(out, o, start, axis=-1)
    sums = jax.tree.map(jnp.add, sums, total(terms))
  return out, sums


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
