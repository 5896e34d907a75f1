"""The per-parameter core shared by ``MLPLOpt`` and ``HierarchicalLOpt``.

Both optimizers clip each tensor's gradients, update the momentum and
second-moment accumulators, and run one small MLP over every entry
(DESIGN.md §3). This module does that work for a list of tensors:

* ``prepare``: clipping, accumulators and the per-tensor sums that the
  normalization and the LSTM's statistics need, with small tensors packed
  into shared units (``plan_units``) so their per-op overhead is paid once;
* ``per_param_updates``: the MLP over every entry, chunked, with per-tensor
  inputs folded into its first layer, and the step rule applied per chunk;
* the state helpers (``init_moments``, ``flatten_like`` and ``Layout``,
  which leave zero-size tensors out, ``shaped_like``, ``cast_state``).
"""

from collections.abc import Sequence
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt import features, networks, segments


def plan_units(sizes: Sequence[int], chunk_size: int) -> list[tuple[int, ...]]:
  """Groups tensor indices into units processed together.

  A tensor with more than ``chunk_size`` entries is a unit of its own (run
  in chunks); consecutive smaller tensors are packed into units of at most
  ``chunk_size`` entries, so that their per-tensor op overhead is paid once.
  """
  units, pack, total = [], [], 0
  for t, n in enumerate(sizes):
    if n > chunk_size:
      units.append((t,))
      continue
    if pack and total + n > chunk_size:
      units.append(tuple(pack))
      pack, total = [], 0
    pack.append(t)
    total += n
  if pack:
    units.append(tuple(pack))
  return units


class Unit(NamedTuple):
  """One tensor, or several small ones packed on one entry axis."""

  tensors: tuple[int, ...]  # leaf indices
  offsets: tuple[int, ...]  # start of each tensor on the entry axis
  segment_sizes: tuple[int, ...] | None  # entries of each tensor; None: k == 1
  g: jax.Array  # [N] clipped gradients
  p: jax.Array  # [N] parameters
  m: jax.Array  # [D, N] new first moments
  v: jax.Array  # [D, N] new second moments


class Prepared(NamedTuple):
  """All tensors' clipped gradients, new accumulators and entry sums."""

  units: list[Unit]
  grad_sq_ema: jax.Array  # [T]
  sums: features.EntrySums  # stacked in leaf order, leading [T]
  shapes: tuple[tuple[int, ...], ...]  # the parameters' shapes
  sizes: tuple[int, ...]  # their numbers of entries

  def moments(self) -> tuple[list[jax.Array], list[jax.Array]]:
    """The new ``m`` and ``v`` of each tensor, ``[D, N]``, in leaf order."""
    m, v = [None] * len(self.sizes), [None] * len(self.sizes)
    for u in self.units:
      for t, start in zip(u.tensors, u.offsets):
        end = start + self.sizes[t]
        m[t] = u.m[:, start:end]
        v[t] = u.v[:, start:end]
    return m, v


def _in_leaf_order(units, per_unit: list[jax.Array]) -> jax.Array:
  """Concatenates per-unit ``[k, ...]`` results and reorders them by leaf."""
  order = [t for u in units for t in u.tensors]
  inverse = np.argsort(order)
  cat = jnp.concatenate(per_unit, axis=0)
  return cat if np.all(inverse == np.arange(len(order))) else cat[inverse]


def _segment_sum(x: jax.Array, segment_sizes) -> jax.Array:
  """``[..., N] -> [..., k]`` sums per tensor of a unit."""
  if segment_sizes is None:
    return jnp.sum(x, axis=-1, keepdims=True)
  return segments.segment_sum(x, segment_sizes)


def _expand(x: jax.Array, segment_sizes) -> jax.Array:
  """``[..., k] -> [..., N]`` (or broadcastable): each entry's tensor value."""
  return (
    x if segment_sizes is None else segments.segment_expand(x, segment_sizes)
  )


def _segment_max(x: jax.Array, segment_sizes) -> jax.Array:
  """``[N] -> [k]`` maxima per tensor of a unit (of non-negative ``x``)."""
  if segment_sizes is None:
    return jnp.max(x, axis=-1, keepdims=True)
  bounds = np.cumsum([0, *segment_sizes])
  return jnp.stack([jnp.max(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])


def _bounded(g: jax.Array, segment_sizes, sizes: Sequence[int]):
  """Gradients bounded for float32 squares, and their mean squares.

  A NaN or +-inf gradient entry reads as 0 (no information), so it never
  reaches the accumulators; a tensor whose ``max|g|`` exceeds
  ``features.MAX_GRAD`` is scaled down as a whole to it, so that no square
  formed from it overflows. This costs one reduction (the max) per tensor.
  A one-pass form, ``mean((g * 2^-66)^2)`` beside ``mean(g^2)``, was not
  safe: XLA rewrote ``(g * c)^2`` as ``g^2 * c^2`` (``inf * 0``) under jit.

  Returns:
    ``([N] bounded gradients, [k] their mean squares)``.
  """
  g = jnp.where(jnp.isfinite(g), g, 0.0)
  factor = features.bound_factors(_segment_max(jnp.abs(g), segment_sizes))
  g = g * _expand(factor, segment_sizes)
  n = np.asarray(sizes, np.float32)
  return g, _segment_sum(jnp.square(g), segment_sizes) / n  # [k]


def prepare(
  grads: Sequence[jax.Array],
  params: Sequence[jax.Array],
  m: Sequence[jax.Array],
  v: Sequence[jax.Array],
  grad_sq_ema: jax.Array,
  count: jax.Array,
  decays: Sequence[float],
  chunk_size: int,
) -> Prepared:
  """Clips the gradients, updates the accumulators, sums the statistics.

  Args:
    grads: gradient leaves (any float dtype).
    params: parameter leaves (any float dtype).
    m: first moments ``[D, N]`` per leaf (``init_moments``).
    v: second moments ``[D, N]`` per leaf.
    grad_sq_ema: ``[T]`` clipping EMAs.
    count: updates done so far (int32 scalar).
    decays: accumulator decays.
    chunk_size: entries per chunk of the statistics pass.

  Returns:
    The ``Prepared`` inputs of every tensor.
  """
  shapes = tuple(jnp.shape(p) for p in params)
  sizes = tuple(int(np.prod(s, dtype=int)) for s in shapes)
  flat = lambda xs, t: jnp.asarray(xs[t], jnp.float32).reshape(-1, sizes[t])
  units, ema, sums = [], [], []
  for idx in plan_units(sizes, chunk_size):
    offsets = tuple(np.cumsum([0] + [sizes[t] for t in idx[:-1]]).tolist())
    segment_sizes = tuple(sizes[t] for t in idx) if len(idx) > 1 else None
    cat = lambda xs, idx=idx: jnp.concatenate([flat(xs, t) for t in idx], 1)
    g, p, mu, vu = cat(grads)[0], cat(params)[0], cat(m), cat(v)
    g, mean_sq = _bounded(g, segment_sizes, [sizes[t] for t in idx])
    limit, unit_ema = features.clip_limits(
      mean_sq, grad_sq_ema[np.asarray(idx)], count
    )
    limit = _expand(limit, segment_sizes)
    g = jnp.clip(g, -limit, limit)
    mu, vu = features.update_moments(mu, vu, g, decays)
    if segment_sizes is None:
      # Chunked like the MLP: cache-sized passes were ~2x faster on CPU.
      _, terms = networks.chunked(
        lambda *c: (None, features.entry_terms(*c)), (g, p, mu, vu),
        chunk_size,
      )  # fmt: skip
      s = jax.tree.map(lambda x: x[None], features.sums_from_terms(terms))
    else:
      s = features.segment_entry_sums(g, p, mu, vu, segment_sizes)
    units.append(Unit(idx, offsets, segment_sizes, g, p, mu, vu))
    ema.append(unit_ema)
    sums.append(s)
  return Prepared(
    units,
    _in_leaf_order(units, ema),
    jax.tree.map(lambda *x: _in_leaf_order(units, list(x)), *sums),
    shapes,
    sizes,
  )


def per_param_updates(
  layers,
  x: Prepared,
  shared: jax.Array,
  lopt,
  tensor_scale: jax.Array | None = None,
) -> tuple[list[jax.Array], jax.Array]:
  """Every tensor's update ``-step``, and the mean last hidden activations.

  Args:
    layers: the per-parameter MLP's layers.
    x: the prepared inputs.
    shared: ``[T, K]`` inputs shared by the entries of each tensor.
    lopt: the optimizer (for ``exp_mult``, ``step_mult``, ``chunk_size``).
    tensor_scale: ``[T]`` multipliers of each tensor's steps (None: 1),
      applied inside the MLP's loop (no extra pass over the entries).

  Returns:
    ``(per tensor [N] float32 updates, [T, H] mean last hidden
    activations)``.
  """
  scales = features.scales_from_sums(x.sums, x.sizes)  # [T, F]
  w_entry, bias = networks.fold_first_layer(layers[0], scales, shared)
  # Applied per chunk, inside the MLP's loop.
  mult = -1.0 if tensor_scale is None else -tensor_scale  # [T] or scalar
  negated_step = lambda out, mult: (
    step_rule(out, lopt.exp_mult, lopt.step_mult)[None] * mult
  )

  def unit_mult(u):
    if tensor_scale is None:
      return mult
    if u.segment_sizes is None:
      return mult[u.tensors[0]]
    return _expand(mult[np.asarray(u.tensors)], u.segment_sizes)[None]

  updates, h_sums = [None] * len(x.sizes), []
  for u in x.units:
    inputs = (u.g, u.p, u.m, u.v)
    output_fn = functools.partial(negated_step, mult=unit_mult(u))
    if u.segment_sizes is None:
      (t,) = u.tensors
      out, h_sum = networks.mlp_entries(
        layers, w_entry[t], bias[t], inputs, features.per_param_features, 2,
        lopt.chunk_size, output_fn,
      )  # fmt: skip
      h_sums.append(h_sum[None])
    else:
      idx = np.asarray(u.tensors)
      out, h_sum = networks.mlp_packed(
        layers, scales[idx], bias[idx], inputs, features.per_param_features,
        u.segment_sizes, 2, output_fn,
      )  # fmt: skip
      h_sums.append(h_sum.T)
    for t, start in zip(u.tensors, u.offsets):
      updates[t] = out[0, start : start + x.sizes[t]]
  sizes = jnp.asarray(x.sizes, jnp.float32)[:, None]
  return updates, _in_leaf_order(x.units, h_sums) / sizes


def step_rule(out: jax.Array, exp_mult: float, step_mult: float) -> jax.Array:
  """``o0 * exp(exp_mult * o1) * step_mult`` from ``[2, N]`` outputs."""
  return out[0] * jnp.exp(exp_mult * out[1]) * step_mult


STEP_SCALES = ("absolute", "param_rms", "init_rms", "lstm_head")
# The rules whose per-tensor multiplier needs the hierarchical LSTM.
LSTM_STEP_SCALES = ("lstm_head",)


def param_scales(
  sums: features.EntrySums, sizes: Sequence[int], floor_fraction: float
) -> jax.Array:
  """``[T]`` step scales of the ``"param_rms"`` rule: each tensor's RMS.

  A tensor whose RMS is below ``floor_fraction`` times the RMS of all the
  parameters takes that floor instead: biases start at zero, and a step
  proportional to their own RMS would keep them there.

  Args:
    sums: stacked ``EntrySums`` of the T tensors (``sq[:, 1]``: sum of p^2).
    sizes: their numbers of entries.
    floor_fraction: the floor, relative to the RMS of all parameters.
  """
  n = jnp.asarray(sizes, jnp.float32)
  sq = sums.sq[:, 1]
  # The 1e-24 keeps sqrt's gradient finite at 0; an all-zero model takes
  # steps of 1e-12 times the rule's.
  rms = lambda total, count: jnp.sqrt(
    jnp.maximum(total / jnp.maximum(count, 1.0), 1e-24)
  )
  overall = rms(jnp.sum(sq), jnp.sum(n))
  return jnp.maximum(rms(sq, n), floor_fraction * overall)


def _overflow_free_rms(x: jax.Array, weights=None) -> jax.Array:
  """RMS of ``x`` (weighted mean of squares), computed as ``max|x| * RMS(x /
  max|x|)`` so that no square overflows float32."""
  top = jnp.max(jnp.abs(x), initial=0.0)
  unit = x / jnp.where(top > 0, top, 1.0)
  if weights is None:
    return top * jnp.sqrt(jnp.mean(jnp.square(unit)))
  mean_sq = jnp.sum(weights * jnp.square(unit)) / jnp.sum(weights)
  return top * jnp.sqrt(mean_sq)


def init_param_scales(params, floor_fraction: float) -> jax.Array:
  """``[T]`` step scales of the ``"init_rms"`` rule, from the initial params
  (the tensors with entries).

  Each tensor's RMS when the optimizer starts, floored like
  ``param_scales``. Fixed for the run: a scale that follows the parameters
  lets steps and weights grow each other without bound (measured: the
  shipped theta warm-started into ``param_rms`` diverged on 5 of 7 MLP
  classifiers within 500 steps).
  """
  flat = [jnp.asarray(p, jnp.float32).reshape(-1) for p in params]
  own, overall = tensor_and_overall_rms(flat)
  return jnp.maximum(jnp.maximum(own, floor_fraction * overall), 1e-12)


def tensor_and_overall_rms(flat: list[jax.Array]):
  """``([T] each vector's RMS, the RMS of all their entries together)``,
  overflow-free, for non-empty float32 vectors."""
  sizes = jnp.asarray([x.size for x in flat], jnp.float32)
  own = jnp.stack([_overflow_free_rms(x) for x in flat])
  return own, _overflow_free_rms(own, weights=sizes)


def shaped_like(updates, params) -> list[jax.Array]:
  """Flat updates in each parameter's shape and dtype."""
  return [
    u.reshape(jnp.shape(p)).astype(jnp.result_type(p))
    for u, p in zip(updates, params)
  ]


class Layout(NamedTuple):
  """Where the tensors with entries sit among a parameter tree's leaves.

  The per-parameter core sees only tensors with at least one entry: a
  zero-size tensor has no entries to update and no statistics (its means
  would be 0/0), so it gets an empty update and keeps its (empty) state.
  """

  treedef: jax.tree_util.PyTreeDef
  keep: tuple[int, ...]  # leaf positions of the tensors with entries

  def unflatten(self, leaves, like):
    """A tree with ``leaves`` at the kept positions, ``like``'s elsewhere.

    Args:
      leaves: one leaf per kept tensor, in leaf order.
      like: a tree of the same structure; its leaves fill the positions of
        the zero-size tensors (they are empty arrays there).
    """
    full = self.treedef.flatten_up_to(like)
    for i, x in zip(self.keep, leaves, strict=True):
      full[i] = x
    return self.treedef.unflatten(full)


def _check_some_entries(params, count: int) -> None:
  if not count:
    raise ValueError(
      "the learned optimizers need at least one parameter with entries; "
      f"every parameter here has size 0 ({jax.tree.map(jnp.shape, params)})."
    )


def num_tensors(params) -> int:
  """The number of parameter tensors with at least one entry (>= 1)."""
  count = sum(int(np.size(p)) > 0 for p in jax.tree.leaves(params))
  _check_some_entries(params, count)
  return count


def flatten_like(params, *trees):
  """Leaves of the non-empty tensors of ``params`` and of same-shaped trees.

  Returns:
    ``(layout, params' kept leaves, [each tree's kept leaves])``; put
    results back with ``layout.unflatten``.
  """
  leaves, treedef = jax.tree.flatten(params)
  keep = tuple(i for i, p in enumerate(leaves) if np.size(p) > 0)
  _check_some_entries(params, len(keep))
  pick = lambda xs: [xs[i] for i in keep]
  return (
    Layout(treedef, keep),
    pick(leaves),
    [pick(treedef.flatten_up_to(t)) for t in trees],
  )


def cast_state(new_state, old_state):
  """The new state with the old state's dtypes (stable ``lax.scan`` carries)."""
  return optax.tree.cast_like(new_state, old_state)


def init_moments(params, num_decays: int):
  """Zero ``m`` and ``v`` trees, leaves ``[D, p.size]``.

  Separate buffers, so that states are donatable. Each tensor's entries are
  flattened because the update passes work on that layout: with leaves
  ``[D, *p.shape]``, XLA:CPU could not update a donated state in place
  across the reshape, so it wrote the new accumulators to a temporary and
  copied them over (at 1M parameters a 56 MB temporary, page-faulted afresh
  every step; the step was ~15% slower).
  """
  zeros = lambda: jax.tree.map(
    lambda p: features.init_moments(p, num_decays).reshape(num_decays, -1),
    params,
  )
  return zeros(), zeros()


def num_shared_extra(lopt) -> int:
  """Per-tensor inputs the options add to the MLP (and to the LSTM)."""
  return len(features.PROGRESS_FEATURE_NAMES) if lopt.progress_features else 0


def progress_inputs(lopt, count, num_steps) -> jax.Array:
  """``[P]`` progress features (``[0]`` when the option is off)."""
  if not lopt.progress_features:
    return jnp.zeros([0], jnp.float32)
  if num_steps is None:
    raise ValueError(
      f"{type(lopt).__name__}(progress_features=True) needs the run's total "
      "number of steps: lopt.optimizer(theta, num_steps=N), or "
      "tx.update(..., num_steps=N)."
    )
  return features.progress_features(count, num_steps)


def step_scales(lopt, x: Prepared, state) -> jax.Array | None:
  """``[T]`` step multipliers of ``lopt.step_scale`` (None: ``absolute``)."""
  if lopt.step_scale == "absolute":
    return None
  if lopt.step_scale == "init_rms":
    return state.param_scale
  if lopt.step_scale == "lstm_head":  # the LSTM's head alone sets it
    return jnp.ones([len(x.sizes)], jnp.float32)
  return param_scales(x.sums, x.sizes, lopt.param_scale_floor)


def initial_scales(lopt, params) -> jax.Array | None:
  """The state's ``param_scale``: ``[T]`` for ``init_rms``, else None."""
  if lopt.step_scale != "init_rms":
    return None
  kept = [p for p in jax.tree.leaves(params) if np.size(p) > 0]  # as Layout
  return init_param_scales(kept, lopt.param_scale_floor)
