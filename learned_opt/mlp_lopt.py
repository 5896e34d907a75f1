"""``MLPLOpt``: the per-parameter MLP optimizer without the LSTM (an ablation).

Same accumulators, gradient clipping, per-parameter features and step rule
as ``HierarchicalLOpt`` (DESIGN.md §3); the MLP sees the 23 normalized
per-parameter features, 11 step features and 3 tensor features (37 inputs
with the default decays) and outputs only the direction and magnitude:
``step = o0 * exp(exp_mult * o1) * step_mult``, ``p_new = p - step``.

Example:
  >>> lopt = MLPLOpt()
  >>> theta = lopt.init(jax.random.key(0))
  >>> tx = lopt.optimizer(theta)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(grads, state, params, value=loss)
"""

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from learned_opt import base, features, networks


class MLPLOptState(NamedTuple):
  """State of ``MLPLOpt``: 10 floats per parameter (default decays)."""

  count: jax.Array  # [] int32, updates done so far
  m: Any  # params-like tree, leaves [D, *p.shape] float32
  v: Any  # params-like tree, leaves [D, *p.shape] float32
  grad_sq_ema: Any  # params-like tree, leaves [] float32 (clipping EMA)


class LeafInputs(NamedTuple):
  """One tensor's clipped gradient, new accumulators and entry sums."""

  g: jax.Array  # [*S] float32, clipped
  p: jax.Array  # [*S] float32
  m: jax.Array  # [D, *S]
  v: jax.Array  # [D, *S]
  grad_sq_ema: jax.Array  # []
  sums: features.EntrySums  # sums over the entries (features' statistics)

  def flat(self) -> tuple[jax.Array, ...]:
    """``(g [N], p [N], m [D, N], v [D, N])``: entries on the last axis."""
    n, d = self.g.size, self.m.shape[0]
    return (self.g.reshape(n), self.p.reshape(n), self.m.reshape(d, n),
            self.v.reshape(d, n))  # fmt: skip


def leaf_inputs(
  g, p, m, v, grad_sq_ema, count, decays, chunk_size
) -> LeafInputs:
  """Clips, updates the accumulators and sums one tensor's statistics.

  Args:
    g: raw gradient (any float dtype).
    p: parameter (any float dtype).
    m: first moments ``[D, *S]``.
    v: second moments ``[D, *S]``.
    grad_sq_ema: the tensor's clipping EMA.
    count: updates done so far (int32 scalar).
    decays: accumulator decays.
    chunk_size: entries per chunk of the statistics pass.

  Returns:
    The tensor's ``LeafInputs``.
  """
  g = jnp.asarray(g, jnp.float32)
  p = jnp.asarray(p, jnp.float32)
  g, grad_sq_ema = features.clip_gradient(g, grad_sq_ema, count)
  m, v = features.update_moments(m, v, g, decays)
  x = LeafInputs(g, p, m, v, grad_sq_ema, None)
  # Chunked like the MLP: cache-sized passes were ~2x faster on CPU.
  _, sums = networks.chunked(
    lambda *c: (None, features.entry_sums(*c)), x.flat(), chunk_size
  )
  return x._replace(sums=sums)


def apply_mlp(layers, x: LeafInputs, shared, chunk_size):
  """The fused per-parameter MLP on one tensor (``networks.apply_mlp_fused``).

  Returns:
    ``([2, N] direction/magnitude outputs, averaged outputs)``.
  """
  scales = features.scales_from_sums(x.sums, x.g.size)
  return networks.apply_mlp_fused(
    layers, x.flat(), features.per_param_features, scales, shared,
    chunk_size=chunk_size,
  )  # fmt: skip


def step_rule(out: jax.Array, exp_mult: float, step_mult: float) -> jax.Array:
  """``o0 * exp(exp_mult * o1) * step_mult`` from ``[2, N]`` outputs."""
  return out[0] * jnp.exp(exp_mult * out[1]) * step_mult


def flatten_like(params, *trees):
  """Leaves of ``params`` and of each tree with the same structure."""
  leaves, treedef = jax.tree.flatten(params)
  return treedef, leaves, [treedef.flatten_up_to(t) for t in trees]


def cast_state(new_state, old_state):
  """The new state with the old state's dtypes (stable ``lax.scan`` carries)."""
  return optax.tree.cast_like(new_state, old_state)


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
    chunk_size: entries per chunk of the per-parameter MLP; a speed knob
      (cache-sized chunks), not part of the math.
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
      # Separate buffers for m and v, so callers may donate the state.
      zeros = lambda: jax.tree.map(
        lambda p: features.init_moments(p, len(self.decays)), params
      )
      return MLPLOptState(
        count=jnp.zeros([], jnp.int32),
        m=zeros(),
        v=zeros(),
        grad_sq_ema=jax.tree.map(lambda p: jnp.zeros([], jnp.float32), params),
      )

    def update_fn(
      grads, state, params=None, *, value=None, valid_value=None, **extra
    ):
      del valid_value, extra  # the MLP has no loss features
      base.require_value(value, name)
      if params is None:
        raise ValueError(f"{name}.update needs params: update(grads, state, "
                         "params, value=loss).")  # fmt: skip
      base.check_params(params, f"{name}.update")
      treedef, ps, (gs, ms, vs, emas) = flatten_like(
        params, grads, state.m, state.v, state.grad_sq_ema
      )
      shared_step = features.step_features(state.count)
      updates, new_m, new_v, new_ema = [], [], [], []
      for g, p, m, v, ema in zip(gs, ps, ms, vs, emas):
        x = leaf_inputs(
          g, p, m, v, ema, state.count, self.decays, self.chunk_size
        )
        shared = jnp.concatenate(
          [
            shared_step,
            features.tensor_features_from_sums(x.sums, x.g.size, len(ps)),
          ]
        )
        out, _ = apply_mlp(theta["mlp"], x, shared, self.chunk_size)
        step = step_rule(out, self.exp_mult, self.step_mult)
        updates.append((-step).reshape(jnp.shape(p)).astype(jnp.result_type(p)))
        new_m.append(x.m)
        new_v.append(x.v)
        new_ema.append(x.grad_sq_ema)
      unflat = treedef.unflatten
      new_state = MLPLOptState(
        state.count + 1, unflat(new_m), unflat(new_v), unflat(new_ema)
      )
      return unflat(updates), cast_state(new_state, state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
