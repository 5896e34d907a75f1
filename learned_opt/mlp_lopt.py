"""``MLPLOpt``: the per-parameter MLP optimizer without the LSTM (an ablation).

Same accumulators, gradient clipping, per-parameter features and step rule
as ``HierarchicalLOpt`` (DESIGN.md §3); the MLP sees the 23 normalized
per-parameter features, 11 step features and 3 tensor features (37 inputs
with the default decays) and outputs only the direction and magnitude:
``step = o0 * exp(exp_mult * o1) * step_mult``, ``p_new = p - step``.

This module also holds the per-parameter machinery both optimizers share
(``prepare`` and ``per_param_updates``).

Example:
  >>> lopt = MLPLOpt()
  >>> theta = lopt.init(jax.random.key(0))
  >>> tx = lopt.optimizer(theta)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(grads, state, params, value=loss)
"""

from collections.abc import Sequence
import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt import base, features, networks, segments


class MLPLOptState(NamedTuple):
  """State of ``MLPLOpt``: 10 floats per parameter (default decays)."""

  count: jax.Array  # [] int32, updates done so far
  m: Any  # params-like tree, leaves [D, p.size] float32 (init_moments)
  v: Any  # params-like tree, leaves [D, p.size] float32
  grad_sq_ema: jax.Array  # [T] clipping EMA of each tensor (leaf order)


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
    mean_sq = _segment_sum(jnp.square(g), segment_sizes) / np.asarray(
      [sizes[t] for t in idx], np.float32
    )  # [k]
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
  layers, x: Prepared, shared: jax.Array, lopt
) -> tuple[list[jax.Array], jax.Array]:
  """Every tensor's update ``-step``, and the mean last hidden activations.

  Args:
    layers: the per-parameter MLP's layers.
    x: the prepared inputs.
    shared: ``[T, K]`` inputs shared by the entries of each tensor.
    lopt: the optimizer (for ``exp_mult``, ``step_mult``, ``chunk_size``).

  Returns:
    ``(per tensor [N] float32 updates, [T, H] mean last hidden
    activations)``.
  """
  scales = features.scales_from_sums(x.sums, x.sizes)  # [T, F]
  w_entry, bias = networks.fold_first_layer(layers[0], scales, shared)
  # Applied per chunk, inside the MLP's loop.
  negated_step = lambda out: (
    -step_rule(out, lopt.exp_mult, lopt.step_mult)[None]
  )
  updates, h_sums = [None] * len(x.sizes), []
  for u in x.units:
    inputs = (u.g, u.p, u.m, u.v)
    if u.segment_sizes is None:
      (t,) = u.tensors
      out, h_sum = networks.mlp_entries(
        layers, w_entry[t], bias[t], inputs, features.per_param_features, 2,
        lopt.chunk_size, negated_step,
      )  # fmt: skip
      h_sums.append(h_sum[None])
    else:
      idx = np.asarray(u.tensors)
      out, h_sum = networks.mlp_packed(
        layers, scales[idx], bias[idx], inputs, features.per_param_features,
        u.segment_sizes, 2, negated_step,
      )  # fmt: skip
      h_sums.append(h_sum.T)
    for t, start in zip(u.tensors, u.offsets):
      updates[t] = out[0, start : start + x.sizes[t]]
  sizes = jnp.asarray(x.sizes, jnp.float32)[:, None]
  return updates, _in_leaf_order(x.units, h_sums) / sizes


def step_rule(out: jax.Array, exp_mult: float, step_mult: float) -> jax.Array:
  """``o0 * exp(exp_mult * o1) * step_mult`` from ``[2, N]`` outputs."""
  return out[0] * jnp.exp(exp_mult * out[1]) * step_mult


def shaped_like(updates, params) -> list[jax.Array]:
  """Flat updates in each parameter's shape and dtype."""
  return [
    u.reshape(jnp.shape(p)).astype(jnp.result_type(p))
    for u, p in zip(updates, params)
  ]


def flatten_like(params, *trees):
  """Leaves of ``params`` and of each tree with the same structure."""
  leaves, treedef = jax.tree.flatten(params)
  return treedef, leaves, [treedef.flatten_up_to(t) for t in trees]


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


def require_params(params, name: str) -> None:
  if params is None:
    raise ValueError(
      f"{name}.update needs params: update(grads, state, params, value=loss)."
    )


@dataclasses.dataclass(frozen=True)
class MLPLOpt(base.LearnedOptimizer):
  """Per-parameter MLP learned optimizer (no LSTM).

  Attributes:
    decays: decays of the momentum and second-moment accumulators.
    hidden_size: width of each hidden layer.
    num_hidden_layers: number of hidden ReLU layers.
    step_mult: the step is ``o0 * exp(exp_mult * o1) * step_mult``.
    exp_mult: see ``step_mult``.
    last_layer_scale: init scale of the last layer (small = small steps).
    chunk_size: entries per chunk of the per-parameter passes; a speed knob
      (cache-sized chunks), not part of the math.
      Meta-training lowers it for its vmapped population
      (``base.for_vmapped_instances``).
  """

  architecture: ClassVar[str] = "mlp"

  decays: tuple[float, ...] = features.DEFAULT_DECAYS
  hidden_size: int = 32
  num_hidden_layers: int = 2
  step_mult: float = 1e-3
  exp_mult: float = 1e-3
  last_layer_scale: float = 0.01
  chunk_size: int = 1024

  def __post_init__(self):
    # config() stores tuples as lists; keep the dataclass hashable.
    object.__setattr__(self, "decays", tuple(float(d) for d in self.decays))
    if not self.decays or not all(0.0 < d < 1.0 for d in self.decays):
      raise ValueError(
        f"{type(self).__name__}: decays must be a non-empty sequence of "
        f"values in (0, 1), got {self.decays}."
      )
    if min(self.hidden_size, self.num_hidden_layers, self.chunk_size) < 1:
      raise ValueError(
        f"{type(self).__name__}: hidden_size, num_hidden_layers and "
        f"chunk_size must be >= 1, got {self.hidden_size}, "
        f"{self.num_hidden_layers} and {self.chunk_size}."
      )

  @property
  def num_inputs(self) -> int:
    """MLP input width: per-parameter + step + tensor features."""
    return (
      len(features.per_param_feature_names(self.decays))
      + len(features.STEP_FEATURE_NAMES)
      + len(features.TENSOR_FEATURE_NAMES)
    )

  def init(self, key: jax.Array) -> dict[str, Any]:
    """Samples theta: ``{"mlp": [layer, ...]}`` with ``{"w", "b"}`` layers."""
    sizes = (self.num_inputs,) + (self.hidden_size,) * self.num_hidden_layers
    layers = networks.init_mlp(key, sizes + (2,), self.last_layer_scale)
    return {"mlp": layers}

  def optimizer(self, theta) -> optax.GradientTransformationExtraArgs:
    """The optax transform applying this optimizer with ``theta``."""
    name = type(self).__name__

    def init_fn(params):
      base.check_params(params, f"{name}.init")
      m, v = init_moments(params, len(self.decays))
      num_tensors = len(jax.tree.leaves(params))
      return MLPLOptState(
        count=jnp.zeros([], jnp.int32),
        m=m,
        v=v,
        grad_sq_ema=jnp.zeros([num_tensors], jnp.float32),
      )

    def update_fn(
      grads, state, params=None, *, value=None, valid_value=None, **extra
    ):
      del valid_value, extra  # the MLP has no loss features
      base.require_value(value, name)
      require_params(params, name)
      base.check_params(params, f"{name}.update")
      treedef, ps, (gs, ms, vs) = flatten_like(params, grads, state.m, state.v)
      x = prepare(
        gs, ps, ms, vs, state.grad_sq_ema, state.count, self.decays,
        self.chunk_size,
      )  # fmt: skip
      step_feats = features.step_features(state.count)  # [11]
      shared = jnp.concatenate(
        [
          jnp.broadcast_to(step_feats, (len(ps), step_feats.shape[0])),
          features.tensor_features_from_sums(x.sums, x.sizes),
        ],
        axis=1,
      )  # [T, 14]
      updates, _ = per_param_updates(theta["mlp"], x, shared, self)
      m, v = x.moments()
      new_state = MLPLOptState(
        state.count + 1, treedef.unflatten(m), treedef.unflatten(v),
        x.grad_sq_ema,
      )  # fmt: skip
      updates = treedef.unflatten(shaped_like(updates, ps))
      return updates, cast_state(new_state, state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
