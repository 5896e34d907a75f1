"""Starting a meta-training run from an already trained optimizer.

Three cases:

* same architecture and sizes: theta is reused as is (fine-tuning);
* same architecture and sizes, but other step options (``step_scale``,
  ``param_scale_floor``, ``progress_features``, ``step_mult``,
  ``step_adaptation``, which has no meta-parameters): theta is
  reused; the inputs the target adds (progress features) read zero
  first-layer rows and a new ``lr_head`` starts at zero, so only the step's
  scale changes (``param_rms`` makes it relative to each tensor's RMS);
* an ``MLPLOpt`` into a ``HierarchicalLOpt`` with the same per-parameter MLP
  (decays, hidden sizes, step rule): the MLP's weights are copied, and the
  first-layer rows that read the LSTM's values start at zero, so the
  hierarchical optimizer's steps equal the MLP optimizer's exactly until
  meta-training moves those rows. The LSTM and the extra MLP outputs (which
  feed only the LSTM) keep their fresh initialization.

Example:
  >>> src_lopt, src_theta, _ = learned_opt.load_pretrained_with_info()
  >>> theta = warm_start.warm_start_theta(
  ...     HierarchicalLOpt(), jax.random.key(0), src_lopt, src_theta)
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from learned_opt import base, hierarchical, mlp_lopt


class WarmStartError(ValueError):
  """The source optimizer cannot initialize the target optimizer."""


def _same_structure(target_theta, source_theta) -> bool:
  shapes = lambda t: jax.tree.map(lambda x: (jnp.shape(x), str(x.dtype)), t)
  return jax.tree.structure(target_theta) == jax.tree.structure(
    source_theta
  ) and shapes(target_theta) == shapes(source_theta)


def _settings(lopt: base.LearnedOptimizer) -> dict[str, Any]:
  """The fields that define the math (``chunk_size`` is a speed knob)."""
  fields = dataclasses.asdict(lopt)
  fields.pop("chunk_size", None)
  return fields


# Options that change the step but not the networks' sizes.
_STEP_OPTIONS = ("step_scale", "step_head_mult", "param_scale_floor",
                 "progress_features", "step_mult", "step_adaptation",
                 "step_adaptation_floor", "step_adaptation_final_floor",
                 "step_adaptation_anneal_start", "step_adaptation_deep_floor",
                 "step_adaptation_overshoot", "step_adaptation_memory",
                 "step_adaptation_reference_rms",
                 "step_adaptation_significance",
                 "step_adaptation_ceiling")  # fmt: skip


def _grow_rows(target_w: jax.Array, source_w) -> jax.Array:
  """``source_w`` in the leading rows of zeros shaped like ``target_w``."""
  rows = jnp.shape(source_w)[0]
  return jnp.zeros_like(target_w).at[:rows].set(jnp.asarray(source_w))


def with_step_options(fresh_theta, source_theta) -> dict[str, Any]:
  """``source_theta`` reshaped for a target that differs in step options."""
  theta = jax.tree.map(jnp.asarray, dict(source_theta))
  mlp = [dict(layer) for layer in theta["mlp"]]
  mlp[0]["w"] = _grow_rows(fresh_theta["mlp"][0]["w"], mlp[0]["w"])
  theta["mlp"] = mlp
  if "lstm" in fresh_theta:
    lstm = dict(theta["lstm"])
    lstm["wx"] = _grow_rows(fresh_theta["lstm"]["wx"], lstm["wx"])
    theta["lstm"] = lstm
  theta.pop("lr_head", None)
  if "lr_head" in fresh_theta:
    theta["lr_head"] = fresh_theta["lr_head"]
  return theta


def _mlp_mismatches(
  target: hierarchical.HierarchicalLOpt, source: mlp_lopt.MLPLOpt
) -> list[str]:
  pairs = {
    "decays": (target.decays, source.decays),
    "hidden_size": (target.mlp_hidden_size, source.hidden_size),
    "num_hidden_layers": (
      target.mlp_num_hidden_layers,
      source.num_hidden_layers,
    ),
    "step_mult": (target.step_mult, source.step_mult),
    "exp_mult": (target.exp_mult, source.exp_mult),
  }
  return [
    f"{name} (target {t!r}, source {s!r})"
    for name, (t, s) in pairs.items()
    if t != s
  ]


def embed_mlp_theta(
  target: hierarchical.HierarchicalLOpt,
  fresh_theta: dict[str, Any],
  source: mlp_lopt.MLPLOpt,
  source_theta: dict[str, Any],
) -> dict[str, Any]:
  """``fresh_theta`` of ``target`` with ``source``'s MLP embedded in it.

  Raises:
    WarmStartError: if the per-parameter MLPs differ (names the fields).
  """
  mismatches = _mlp_mismatches(target, source)
  if mismatches:
    raise WarmStartError(
      "cannot warm-start HierarchicalLOpt from MLPLOpt: their per-parameter "
      f"MLPs differ in {', '.join(mismatches)}. Use the same sizes, or start "
      "from a checkpoint of the same architecture."
    )
  src = source_theta["mlp"]
  layers = [dict(layer) for layer in fresh_theta["mlp"]]
  first_in = src[0]["w"].shape[0]  # per-parameter + step + tensor features
  w0 = jnp.zeros_like(layers[0]["w"]).at[:first_in].set(src[0]["w"])
  layers[0] = {"w": w0, "b": jnp.asarray(src[0]["b"])}  # LSTM rows: zero
  for i in range(1, len(layers) - 1):
    layers[i] = {"w": jnp.asarray(src[i]["w"]), "b": jnp.asarray(src[i]["b"])}
  last, src_last = layers[-1], src[-1]
  num_out = src_last["w"].shape[1]  # the step outputs (direction, magnitude)
  layers[-1] = {
    "w": last["w"].at[:, :num_out].set(src_last["w"]),
    "b": last["b"].at[:num_out].set(src_last["b"]),
  }
  return {**fresh_theta, "mlp": layers}


def warm_start_theta(
  target: base.LearnedOptimizer,
  key: jax.Array,
  source: base.LearnedOptimizer,
  source_theta: Any,
) -> Any:
  """Theta for ``target`` initialized from a trained ``source`` optimizer.

  Args:
    target: the optimizer to meta-train.
    key: initializes what the source cannot provide (the LSTM).
    source: the trained optimizer.
    source_theta: its meta-parameters.

  Raises:
    WarmStartError: naming what differs when ``source`` cannot initialize
      ``target``.
  """
  fresh = target.init(key)
  sizes = lambda lopt: {
    k: v for k, v in _settings(lopt).items() if k not in _STEP_OPTIONS
  }
  if type(target) is type(source) and _settings(source) != _settings(target):
    if sizes(source) == sizes(target):
      return with_step_options(fresh, source_theta)
  if type(target) is type(source):
    if _settings(source) != _settings(target) or not _same_structure(
      fresh, source_theta
    ):
      raise WarmStartError(
        f"cannot warm-start {target!r} from {source!r}: same architecture "
        "but different sizes or settings. Use the source's settings "
        "(config.lopt.kwargs), or start from scratch."
      )
    return jax.tree.map(jnp.asarray, source_theta)
  if isinstance(target, hierarchical.HierarchicalLOpt) and isinstance(
    source, mlp_lopt.MLPLOpt
  ):
    return embed_mlp_theta(target, fresh, source, source_theta)
  raise WarmStartError(
    f"cannot warm-start {type(target).__name__} from "
    f"{type(source).__name__}: supported are the same architecture, and "
    "MLPLOpt into HierarchicalLOpt."
  )
