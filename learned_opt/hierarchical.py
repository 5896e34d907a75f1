"""``HierarchicalLOpt``: per-tensor LSTM + per-parameter MLP (DESIGN.md §3).

The architecture of "Tasks, stability, architecture, and compute" (Metz et
al. 2020), our code:

* per parameter: 5 momentum and 5 second-moment accumulators (10 float32
  values, no bias correction), after dynamic gradient clipping;
* per parameter an MLP (54 -> 32 -> 32 -> 18, ReLU) sees 23 per-tensor
  normalized features, 11 step features, 3 tensor features and 17 values
  from its tensor's LSTM; ``step = o0 * exp(0.001 * o1) * 0.001`` and
  ``p_new = p - step``; outputs o2..o17, averaged over the tensor, go to the
  tensor's LSTM at the next step;
* per tensor an LSTM (hidden 64, weights shared by all tensors) sees 18
  tensor statistics (incl. train- and validation-loss features), 18 global
  values (a 64 -> 18 head averaged over tensors at the previous step) and the
  16 averaged MLP outputs; a 64 -> 17 head feeds the MLP.

The MLP is evaluated without tiling (``networks.fold_first_layer``): per-tensor
inputs enter as a bias, and the averaged outputs come from the mean hidden
activation; ``tests/learned_opt/reference.py`` checks it against tiling.

Example:
  >>> lopt = HierarchicalLOpt()
  >>> theta = lopt.init(jax.random.key(0))
  >>> tx = lopt.optimizer(theta)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(grads, state, params, value=loss)
  >>> updates, state = tx.update(grads, state, params, value=loss,
  ...                            valid_value=valid_loss)
"""

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from learned_opt import (
  features,
  loss_stats,
  networks,
  per_param,
  per_param_lopt,
)
from learned_opt.step_adaptation import DEFAULT_ANNEAL_START, DEFAULT_OVERSHOOT
from learned_opt.step_adaptation import (
  DEFAULT_CEILING as DEFAULT_ADAPTATION_CEILING,
)
from learned_opt.step_adaptation import (
  DEFAULT_FLOOR as DEFAULT_ADAPTATION_FLOOR,
)


class HierarchicalLOptState(NamedTuple):
  """State of ``HierarchicalLOpt``; T = number of parameter tensors
  with entries (zero-size ones have no per-tensor state)."""

  count: jax.Array  # [] int32, updates done so far
  m: Any  # params-like tree, leaves [D, p.size] float32 (init_moments)
  v: Any  # params-like tree, leaves [D, p.size] float32
  grad_sq_ema: jax.Array  # [T] clipping EMA per tensor with entries
  lstm_h: jax.Array  # [T, lstm_hidden_size]
  lstm_c: jax.Array  # [T, lstm_hidden_size]
  mlp_avg: jax.Array  # [T, mlp_to_lstm], averaged MLP outputs of last step
  global_features: jax.Array  # [num_global_features], from the last step
  loss: loss_stats.LossState


# With step_scale="init_rms": plus param_scale, [T] step scales.
HierarchicalLOptScaledState = per_param_lopt.with_param_scale(
  HierarchicalLOptState
)


def check_ranks(params, where: str) -> None:
  """Raises for tensors of rank > 4 (the LSTM's shape features stop at 4)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if jnp.ndim(leaf) > features.MAX_RANK:
      raise ValueError(
        f"{where}: parameter {jax.tree_util.keystr(path) or '<root>'} has "
        f"rank {jnp.ndim(leaf)} (shape {jnp.shape(leaf)}); the hierarchical "
        f"optimizer supports ranks 0 to {features.MAX_RANK}. Reshape it "
        "(e.g. merge leading axes) or use MLPLOpt."
      )


@dataclasses.dataclass(frozen=True)
class HierarchicalLOpt(per_param_lopt.PerParamLOpt):
  """Hierarchical (per-tensor LSTM, per-parameter MLP) learned optimizer.

  Attributes:
    decays: decays of the momentum and second-moment accumulators.
    mlp_hidden_size: width of the per-parameter MLP's hidden layers.
    mlp_num_hidden_layers: number of hidden ReLU layers of the MLP.
    lstm_hidden_size: hidden size of the per-tensor LSTM.
    num_global_features: width of the global (averaged over tensors) head.
    lstm_to_mlp: values the LSTM passes to its tensor's MLP.
    mlp_to_lstm: MLP outputs averaged over the tensor for the LSTM.
    step_mult: the step is ``o0 * exp(exp_mult * o1) * step_mult``.
    exp_mult: see ``step_mult``.
    last_layer_scale: init scale of the MLP's last layer (small steps).
    chunk_size: entries per chunk of the per-parameter MLP; a speed knob
      (cache-sized chunks), not part of the math.
      Meta-training lowers it for its vmapped population
      (``base.for_vmapped_instances``).
    step_scale: ``"absolute"`` (the paper's rule); ``"param_rms"``: each
      tensor's steps are relative to its RMS (``per_param.param_scales``)
      and multiplied by ``exp`` of a per-tensor LSTM head (``lr_head`` in
      theta, zero at init), so the LSTM sets each tensor's step size;
      ``"init_rms"``: the same, relative to the RMS at ``init``;
      ``"lstm_head"``: the paper's absolute step times ``exp`` of that
      head (Celo's per-tensor multiplier without the RMS), so a theta
      trained with the paper's step warm-starts into it unchanged
      (``warm_start``) and meta-training can then learn each tensor's step
      size directly, where ``exp(exp_mult * o1)`` needs ``|o1|`` in the
      hundreds to move it.
    step_head_mult: the head's output is multiplied by this (> 0) before
      ``exp``. Meta-training moves each weight by about the outer learning
      rate per step, so a larger multiplier lets a few thousand outer steps
      move a tensor's step size by a factor e^k rather than e^(k/10)
      (1: the head's own scale).
    param_scale_floor: ``"param_rms"`` only: a tensor's scale is at least
      this fraction of the RMS of all parameters (zero-initialized biases).
    progress_features: feed the fraction of the run done to the LSTM and
      the MLP (``features.progress_features``); ``optimizer`` then needs
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

  architecture: ClassVar[str] = "hierarchical"

  decays: tuple[float, ...] = features.DEFAULT_DECAYS
  mlp_hidden_size: int = 32
  mlp_num_hidden_layers: int = 2
  lstm_hidden_size: int = 64
  num_global_features: int = 18
  lstm_to_mlp: int = 17
  mlp_to_lstm: int = 16
  step_mult: float = 1e-3
  exp_mult: float = 1e-3
  last_layer_scale: float = 0.01
  chunk_size: int = 1024
  step_scale: str = "absolute"
  step_head_mult: float = 1.0
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
    name = type(self).__name__
    sizes = ("mlp_hidden_size", "mlp_num_hidden_layers", "lstm_hidden_size",
             "chunk_size")  # fmt: skip
    for field in sizes:
      if getattr(self, field) < 1:
        raise ValueError(f"{name}: {field} must be >= 1.")
    if not self.step_head_mult > 0:
      raise ValueError(
        f"{name}: step_head_mult must be > 0, got {self.step_head_mult}."
      )
    for field in ("num_global_features", "lstm_to_mlp", "mlp_to_lstm"):
      if getattr(self, field) < 0:
        raise ValueError(f"{name}: {field} must be >= 0.")

  @property
  def num_mlp_inputs(self) -> int:
    """Per-parameter + step + tensor features + LSTM values (54)."""
    return (
      len(features.per_param_feature_names(self.decays))
      + len(features.STEP_FEATURE_NAMES)
      + len(features.TENSOR_FEATURE_NAMES)
      + self.lstm_to_mlp
      + per_param.num_shared_extra(self)
    )

  @property
  def num_lstm_inputs(self) -> int:
    """Tensor statistics + global values + averaged MLP outputs (52)."""
    return (
      len(features.LSTM_STAT_NAMES)
      + self.num_global_features
      + self.mlp_to_lstm
      + per_param.num_shared_extra(self)
    )

  def init(self, key: jax.Array) -> dict[str, Any]:
    """Samples theta (a dict of float32 arrays).

    Keys: ``mlp`` (list of ``{"w", "b"}`` layers), ``lstm`` (``wx``, ``wh``,
    ``b``), ``lstm_out`` and ``global_head`` (linear heads), ``init`` (the
    learned initial ``h``, ``c``, ``global`` and ``mlp_avg`` vectors).
    """
    k_mlp, k_lstm, k_out, k_glob = jax.random.split(key, 4)
    hidden = (self.mlp_hidden_size,) * self.mlp_num_hidden_layers
    sizes = (self.num_mlp_inputs, *hidden, 2 + self.mlp_to_lstm)
    h = self.lstm_hidden_size
    zeros = lambda n: jnp.zeros([n], jnp.float32)
    theta = {
      "mlp": networks.init_mlp(k_mlp, sizes, self.last_layer_scale),
      "lstm": networks.init_lstm(k_lstm, self.num_lstm_inputs, h),
      "lstm_out": networks.init_linear(k_out, h, self.lstm_to_mlp),
      "global_head": networks.init_linear(k_glob, h, self.num_global_features),
      "init": {
        "h": zeros(h),
        "c": zeros(h),
        "global": zeros(self.num_global_features),
        "mlp_avg": zeros(self.mlp_to_lstm),
      },
    }
    if self.step_scale != "absolute":
      # exp(0) = 1: at init every tensor's step is its RMS times the rule.
      theta["lr_head"] = {"w": jnp.zeros([h, 1]), "b": zeros(1)}
    return theta

  def _check_params(self, params, where: str) -> None:
    check_ranks(params, where)

  def _init_state(self, theta, params) -> HierarchicalLOptState:
    num_tensors = per_param.num_tensors(params)
    tile = lambda x: jnp.tile(x[None], (num_tensors, 1))
    return per_param_lopt.make_state(
      HierarchicalLOptState,
      HierarchicalLOptScaledState,
      **per_param_lopt.init_state_fields(self, params),
      lstm_h=tile(theta["init"]["h"]),
      lstm_c=tile(theta["init"]["c"]),
      mlp_avg=tile(theta["init"]["mlp_avg"]),
      # A copy: a state donated to a jitted step must not take theta's
      # own buffer with it.
      global_features=jnp.copy(theta["init"]["global"]),
      loss=loss_stats.init_loss_state(),
    )

  def _update(self, theta, grads, state, params, value, valid_value, num_steps):
    treedef, ps, (gs, ms, vs) = per_param.flatten_like(
      params, grads, state.m, state.v
    )
    num_tensors = len(ps)
    loss_state = loss_stats.update_loss_state(state.loss, value, valid_value)
    loss_feats = loss_stats.loss_features(loss_state, value)  # [2]
    progress = per_param.progress_inputs(self, state.count, num_steps)  # [P]
    x = per_param.prepare(
      gs, ps, ms, vs, state.grad_sq_ema, state.count, self.decays,
      self.chunk_size,
    )  # fmt: skip
    # The per-tensor LSTM, batched over tensors.
    tile = lambda a: jnp.broadcast_to(a[None], (num_tensors, a.shape[0]))
    lstm_in = jnp.concatenate(
      [
        features.lstm_stats_from_sums(x.sums, x.shapes),  # [T, 16]
        tile(loss_feats),  # [T, 2]
        tile(state.global_features),  # [T, 18]
        state.mlp_avg,  # [T, 16]
        tile(progress),  # [T, P]
      ],
      axis=1,
    )
    h, c = networks.lstm_step(
      theta["lstm"], lstm_in, state.lstm_h, state.lstm_c
    )
    to_mlp = networks.linear(theta["lstm_out"], h)  # [T, 17]
    new_global = jnp.mean(networks.linear(theta["global_head"], h), axis=0)
    # The per-parameter MLP; per-tensor inputs enter as a first-layer bias.
    shared = per_param_lopt.shared_inputs(x, state.count, progress, to_mlp)
    tensor_scale = per_param.step_scales(self, x, state)
    if tensor_scale is not None:
      lr_head = self.step_head_mult * networks.linear(theta["lr_head"], h)[:, 0]
      tensor_scale = tensor_scale * jnp.exp(lr_head)
    updates, h_mean = per_param.per_param_updates(
      theta["mlp"], x, shared, self, tensor_scale
    )
    m, v = per_param_lopt.new_moments(treedef, x, state)
    new_state = state._replace(
      count=state.count + 1,
      m=m,
      v=v,
      grad_sq_ema=x.grad_sq_ema,
      lstm_h=h,
      lstm_c=c,
      mlp_avg=networks.averaged_outputs(theta["mlp"][-1], h_mean, 2),
      global_features=new_global,
      loss=loss_state,
    )
    return per_param_lopt.finish_update(
      treedef, updates, ps, params, new_state, state
    )
