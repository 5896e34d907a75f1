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

from learned_opt import features, networks, per_param, per_param_lopt
from learned_opt.step_adaptation import DEFAULT_ANNEAL_START, DEFAULT_OVERSHOOT
from learned_opt.step_adaptation import (
  DEFAULT_CEILING as DEFAULT_ADAPTATION_CEILING,
)
from learned_opt.step_adaptation import (
  DEFAULT_FLOOR as DEFAULT_ADAPTATION_FLOOR,
)


class MLPLOptState(NamedTuple):
  """State of ``MLPLOpt``: 10 floats per parameter (default decays)."""

  count: jax.Array  # [] int32, updates done so far
  m: Any  # params-like tree, leaves [D, p.size] float32 (init_moments)
  v: Any  # params-like tree, leaves [D, p.size] float32
  grad_sq_ema: jax.Array  # [T] clipping EMA per tensor with entries


# With step_scale="init_rms": plus param_scale, [T] step scales.
MLPLOptScaledState = per_param_lopt.with_param_scale(MLPLOptState)


@dataclasses.dataclass(frozen=True)
class MLPLOpt(per_param_lopt.PerParamLOpt):
  """Per-parameter MLP learned optimizer (no LSTM).

  Attributes:
    decays: decays of the momentum and second-moment accumulators.
    hidden_size: width of each hidden layer.
    num_hidden_layers: number of hidden ReLU layers.
    step_mult: the step is ``o0 * exp(exp_mult * o1) * step_mult`` (times
      the tensor's scale, see ``step_scale``).
    exp_mult: see ``step_mult``.
    last_layer_scale: init scale of the last layer (small = small steps).
    chunk_size: entries per chunk of the per-parameter passes; a speed knob
      (cache-sized chunks), not part of the math.
      Meta-training lowers it for its vmapped population
      (``base.for_vmapped_instances``).
    step_scale: ``"absolute"`` (the paper's rule) or ``"param_rms"``: steps
      are relative to each tensor's RMS (``per_param.param_scales``).
    param_scale_floor: ``"param_rms"`` only: a tensor's scale is at least
      this fraction of the RMS of all parameters (zero-initialized biases).
    progress_features: feed the fraction of the run done
      (``features.progress_features``); ``optimizer`` then needs
      ``num_steps``.
    step_adaptation: rate of the per-tensor online step-size adaptation
      (``learned_opt.step_adaptation``: normalized hypergradients); 0 is
      off. The optimizer's state is then an ``AdaptedState`` around its
      own.
    step_adaptation_floor: the adaptation shrinks a tensor's steps by at
      most ``exp(floor)`` (<= 0; the module docstring says why the
      default optimizer uses -2).
    step_adaptation_final_floor: None: the floor is constant. Otherwise
      it falls linearly to this value over the end of the run (from the
      fraction ``step_adaptation_anneal_start``), so a tensor's steps can
      anneal where its gradients ask for it, in a run whose length
      ``num_steps`` is given (without it the floor stays constant;
      ``learned_opt.step_adaptation`` says why).
    step_adaptation_anneal_start: where the floor starts to fall, as a
      fraction of the run in [0, 1).
    step_adaptation_deep_floor: None: the floor binds. Otherwise a tensor
      whose steps keep overshooting (the mean cosine of its gradient and
      last step above ``step_adaptation_overshoot``) may shrink them down
      to ``exp(deep_floor)`` (<= the floor): exact gradients converge
      past the floor, noisy ones stay at it
      (``learned_opt.step_adaptation`` says why).
    step_adaptation_overshoot: the mean cosine, in (0, 1), above which
      the deep floor opens.
    step_adaptation_memory: in [0, 1). The adaptation's cosine is taken
      against a trace of past updates that decays by this factor per step
      (0: the last update only), so a scale grows while the steps of the
      last ~1 / (1 - memory) updates still point downhill
      (``learned_opt.step_adaptation`` says why).
    step_adaptation_reference_rms: None, or a parameter RMS: a model whose
      parameters' RMS at ``init`` is below it takes steps smaller by that
      ratio for the whole run (``learned_opt.step_adaptation`` says why).
    step_adaptation_significance: None, or a t-statistic threshold (> 0):
      while a tensor's recent cosines are consistently negative (their
      mean below ``-significance`` standard errors), its scale grows at
      least at ``rate`` times their mean over their RMS, however small
      each step's cosine (``learned_opt.step_adaptation`` says why).
    step_adaptation_ceiling: the largest ``log s`` of the adaptation, in
      [0, 50] (default 5: steps grow to at most e^5 ~ 148 times the learned
      ones; ``learned_opt.step_adaptation`` says when a lower one helps).
  """

  architecture: ClassVar[str] = "mlp"

  decays: tuple[float, ...] = features.DEFAULT_DECAYS
  hidden_size: int = 32
  num_hidden_layers: int = 2
  step_mult: float = 1e-3
  exp_mult: float = 1e-3
  last_layer_scale: float = 0.01
  chunk_size: int = 1024
  step_scale: str = "absolute"
  param_scale_floor: float = 0.1
  progress_features: bool = False
  step_adaptation: float = 0.0
  step_adaptation_floor: float = DEFAULT_ADAPTATION_FLOOR
  step_adaptation_final_floor: float | None = None
  step_adaptation_anneal_start: float = DEFAULT_ANNEAL_START
  step_adaptation_deep_floor: float | None = None
  step_adaptation_overshoot: float = DEFAULT_OVERSHOOT
  step_adaptation_memory: float = 0.0
  step_adaptation_reference_rms: float | None = None
  step_adaptation_significance: float | None = None
  step_adaptation_ceiling: float = DEFAULT_ADAPTATION_CEILING

  def __post_init__(self):
    per_param_lopt.check_options(self)
    if self.step_scale in per_param.LSTM_STEP_SCALES:
      own = [s for s in per_param.STEP_SCALES
             if s not in per_param.LSTM_STEP_SCALES]  # fmt: skip
      raise ValueError(
        f"MLPLOpt: step_scale={self.step_scale!r} needs the per-tensor "
        f"LSTM; use HierarchicalLOpt, or one of {own}."
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
      + per_param.num_shared_extra(self)
    )

  def init(self, key: jax.Array) -> dict[str, Any]:
    """Samples theta: ``{"mlp": [layer, ...]}`` with ``{"w", "b"}`` layers."""
    sizes = (self.num_inputs,) + (self.hidden_size,) * self.num_hidden_layers
    layers = networks.init_mlp(key, sizes + (2,), self.last_layer_scale)
    return {"mlp": layers}

  def _init_state(self, theta, params) -> MLPLOptState:
    del theta
    return per_param_lopt.make_state(
      MLPLOptState, MLPLOptScaledState,
      **per_param_lopt.init_state_fields(self, params),
    )  # fmt: skip

  def _update(self, theta, grads, state, params, value, valid_value, num_steps):
    del value, valid_value  # the MLP has no loss features
    treedef, ps, (gs, ms, vs) = per_param.flatten_like(
      params, grads, state.m, state.v
    )
    x = per_param.prepare(
      gs, ps, ms, vs, state.grad_sq_ema, state.count, self.decays,
      self.chunk_size,
    )  # fmt: skip
    progress = per_param.progress_inputs(self, state.count, num_steps)
    shared = per_param_lopt.shared_inputs(x, state.count, progress)
    updates, _ = per_param.per_param_updates(
      theta["mlp"], x, shared, self, per_param.step_scales(self, x, state)
    )
    m, v = per_param_lopt.new_moments(treedef, x, state)
    new_state = state._replace(
      count=state.count + 1, m=m, v=v, grad_sq_ema=x.grad_sq_ema
    )
    return per_param_lopt.finish_update(
      treedef, updates, ps, params, new_state, state
    )
