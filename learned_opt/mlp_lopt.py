"""``MLPLOpt``: the per-parameter MLP optimizer without the LSTM (an ablation).

Same accumulators, gradient clipping, per-parameter features and step rule
as ``HierarchicalLOpt`` (DESIGN.md §3); the MLP sees the 23 normalized
per-parameter features, 11 step features and 3 tensor features (37 inputs
with the default decays) and outputs only the direction and magnitude:
``step = o0 * exp(exp_mult * o1) * step_mult``, ``p_new = p - step``.

The per-parameter machinery both optimizers share is in ``per_param``.

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

from learned_opt import base, features, networks, per_param


class MLPLOptState(NamedTuple):
  """State of ``MLPLOpt``: 10 floats per parameter (default decays)."""

  count: jax.Array  # [] int32, updates done so far
  m: Any  # params-like tree, leaves [D, p.size] float32 (init_moments)
  v: Any  # params-like tree, leaves [D, p.size] float32
  grad_sq_ema: jax.Array  # [T] clipping EMA per tensor with entries


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
      m, v = per_param.init_moments(params, len(self.decays))
      num_tensors = per_param.num_tensors(params)
      return MLPLOptState(
        count=jnp.zeros([], jnp.int32),
        m=m,
        v=v,
        grad_sq_ema=jnp.zeros([num_tensors], jnp.float32),
      )

    def update_fn(
      grads, state, params=None, *, value=None, valid_value=None, **extra
    ):
      base.require_value(value, name, valid_value)
      del valid_value, extra  # the MLP has no loss features
      per_param.require_params(params, name)
      base.check_params(params, f"{name}.update")
      base.check_grads(grads, params, f"{name}.update")
      treedef, ps, (gs, ms, vs) = per_param.flatten_like(
        params, grads, state.m, state.v
      )
      x = per_param.prepare(
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
      updates, _ = per_param.per_param_updates(theta["mlp"], x, shared, self)
      m, v = x.moments()
      new_state = MLPLOptState(
        state.count + 1, treedef.unflatten(m, state.m), treedef.unflatten(v, state.v),
        x.grad_sq_ema,
      )  # fmt: skip
      updates = treedef.unflatten(per_param.shaped_like(updates, ps), params)
      return updates, per_param.cast_state(new_state, state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
