"""What ``MLPLOpt`` and ``HierarchicalLOpt`` share around the numerics.

``per_param`` computes; this module holds the rest both optimizers have in
common: the option checks, the state fields they share, the per-tensor MLP
inputs, and ``PerParamLOpt.optimizer``, the one optax adapter (argument
checks, then the subclass's ``_init_state`` and ``_update``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from learned_opt import base, features, per_param, step_adaptation


class PerParamLOpt(base.LearnedOptimizer):
  """A learned optimizer built on ``per_param``; subclasses are dataclasses.

  A subclass defines ``_init_state(theta, params)`` and ``_update(theta,
  grads, state, params, value, valid_value, num_steps) -> (updates,
  state)``, and may override ``_check_params(params, where)``.
  """

  def _check_params(self, params, where: str) -> None:
    """Extra checks of the parameters, in ``init`` and ``update``."""
    del params, where

  def optimizer(
    self, theta, num_steps: int | None = None
  ) -> optax.GradientTransformationExtraArgs:
    """The optax transform applying this optimizer with ``theta``.

    ``num_steps`` (the run's length) is needed with ``progress_features``,
    and lets ``step_adaptation_final_floor`` anneal the end of the run;
    ``update(..., num_steps=N)`` overrides it.
    """
    name = type(self).__name__
    default_num_steps = num_steps

    def init_fn(params):
      base.check_params(params, f"{name}.init")
      self._check_params(params, f"{name}.init")
      return self._init_state(theta, params)

    def update_fn(
      grads, state, params=None, *, value=None, valid_value=None,
      num_steps=None, **extra,
    ):  # fmt: skip
      del extra
      check_update_args(name, grads, params, value, valid_value)
      self._check_params(params, f"{name}.update")
      if num_steps is None:
        num_steps = default_num_steps
      return self._update(
        theta, grads, state, params, value, valid_value, num_steps
      )

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    if self.step_adaptation > 0:
      tx = step_adaptation.adapt_steps(
        tx,
        self.step_adaptation,
        floor=self.step_adaptation_floor,
        ceiling=self.step_adaptation_ceiling,
        final_floor=self.step_adaptation_final_floor,
        anneal_start=self.step_adaptation_anneal_start,
        deep_floor=self.step_adaptation_deep_floor,
        overshoot=self.step_adaptation_overshoot,
        memory=self.step_adaptation_memory,
        reference_rms=self.step_adaptation_reference_rms,
        significance=self.step_adaptation_significance,
        num_steps=default_num_steps,
      )
    return tx


def check_options(lopt) -> None:
  """Checks the options both optimizers share, in ``__post_init__``.

  ``decays`` becomes a tuple of floats (``config()`` stores tuples as
  lists; the dataclass must stay hashable).

  Raises:
    ValueError: for empty decays or one outside (0, 1), an unknown
      ``step_scale`` or a negative floor.
  """
  name = type(lopt).__name__
  object.__setattr__(lopt, "decays", tuple(float(d) for d in lopt.decays))
  if not lopt.decays or not all(0.0 < d < 1.0 for d in lopt.decays):
    raise ValueError(
      f"{name}: decays must be a non-empty sequence of values in (0, 1), "
      f"got {lopt.decays}."
    )
  if lopt.step_scale not in per_param.STEP_SCALES:
    raise ValueError(
      f"{name}: step_scale must be one of {per_param.STEP_SCALES}, got "
      f"{lopt.step_scale!r}."
    )
  if not lopt.step_adaptation >= 0:
    raise ValueError(
      f"{name}: step_adaptation must be >= 0 (0: off), got "
      f"{lopt.step_adaptation}."
    )
  if not -50.0 <= lopt.step_adaptation_floor <= 0.0:
    raise ValueError(
      f"{name}: step_adaptation_floor must be in [-50, 0] (a log-scale; "
      f"0: never shrink), got {lopt.step_adaptation_floor}."
    )
  if not 0.0 <= lopt.step_adaptation_ceiling <= 50.0:
    raise ValueError(
      f"{name}: step_adaptation_ceiling must be in [0, 50] (a log-scale; "
      f"0: never grow), got {lopt.step_adaptation_ceiling}."
    )
  final = lopt.step_adaptation_final_floor
  if final is not None and not -50.0 <= final <= 0.0:
    raise ValueError(
      f"{name}: step_adaptation_final_floor must be None (a constant floor) "
      f"or in [-50, 0] (a log-scale), got {final}."
    )
  if not 0.0 <= lopt.step_adaptation_anneal_start < 1.0:
    raise ValueError(
      f"{name}: step_adaptation_anneal_start must be in [0, 1) (the "
      f"fraction of the run where the floor starts to fall), got "
      f"{lopt.step_adaptation_anneal_start}."
    )
  deep = lopt.step_adaptation_deep_floor
  if deep is not None and not -50.0 <= deep <= lopt.step_adaptation_floor:
    raise ValueError(
      f"{name}: step_adaptation_deep_floor must be None (the floor binds) "
      f"or in [-50, step_adaptation_floor={lopt.step_adaptation_floor}] "
      f"(a log-scale), got {deep}."
    )
  if not 0.0 < lopt.step_adaptation_overshoot < 1.0:
    raise ValueError(
      f"{name}: step_adaptation_overshoot must be in (0, 1) (a mean "
      f"cosine), got {lopt.step_adaptation_overshoot}."
    )
  if not 0.0 <= lopt.step_adaptation_memory < 1.0:
    raise ValueError(
      f"{name}: step_adaptation_memory must be in [0, 1) (the decay of the "
      f"update trace; 0: the last update), got {lopt.step_adaptation_memory}."
    )
  ref = lopt.step_adaptation_reference_rms
  if ref is not None and not ref > 0:
    raise ValueError(
      f"{name}: step_adaptation_reference_rms must be None (off) or > 0 (a "
      f"parameter RMS), got {ref}."
    )
  sig = lopt.step_adaptation_significance
  if sig is not None and not sig > 0:
    raise ValueError(
      f"{name}: step_adaptation_significance must be None (off) or > 0 (a "
      f"t-statistic threshold, e.g. 2.0), got {sig}."
    )
  if not lopt.param_scale_floor >= 0:
    raise ValueError(
      f"{name}: param_scale_floor must be >= 0, got {lopt.param_scale_floor}."
    )


def check_update_args(name: str, grads, params, value, valid_value) -> None:
  """The checks of both optimizers' ``update``: loss, params and grads."""
  base.require_value(value, name, valid_value)
  if params is None:
    raise ValueError(
      f"{name}.update needs params: update(grads, state, params, value=loss)."
    )
  base.check_params(params, f"{name}.update")
  base.check_grads(grads, params, f"{name}.update")


def init_state_fields(lopt, params) -> dict:
  """The state fields both optimizers share, at step 0.

  With ``step_scale="init_rms"`` also ``param_scale``, the ``[T]`` step
  scales of the initial parameters (see ``with_param_scale``).
  """
  m, v = per_param.init_moments(params, len(lopt.decays))
  fields = dict(
    count=jnp.zeros([], jnp.int32),
    m=m,
    v=v,
    grad_sq_ema=jnp.zeros([per_param.num_tensors(params)], jnp.float32),
  )
  if lopt.step_scale == "init_rms":
    fields["param_scale"] = per_param.initial_scales(lopt, params)
  return fields


def with_param_scale(state_type: type) -> type:
  """``state_type`` plus a ``param_scale`` field (``[T]``, ``init_rms``).

  A type of its own rather than an optional field: the states of the other
  step rules keep the exact layout of checkpoints written before
  ``init_rms`` existed (orbax restores a NamedTuple field by field, and
  meta-training checkpoints hold the inner optimizers' states).
  """
  fields = [*state_type.__annotations__.items(), ("param_scale", jax.Array)]
  return NamedTuple(state_type.__name__.replace("State", "ScaledState"), fields)


def make_state(state_type: type, scaled_type: type, **fields):
  """``scaled_type(**fields)`` for ``init_rms``, else ``state_type``."""
  cls = scaled_type if "param_scale" in fields else state_type
  return cls(**fields)


def shared_inputs(x: per_param.Prepared, count, progress, *extra) -> jax.Array:
  """``[T, S]`` per-tensor MLP inputs: step, tensor, ``extra``, progress."""
  tile = lambda a: jnp.broadcast_to(a, (len(x.sizes), a.shape[0]))
  return jnp.concatenate(
    [
      tile(features.step_features(count)),  # [T, 11]
      features.tensor_features_from_sums(x.sums, x.sizes),  # [T, 3]
      *extra,
      tile(progress),  # [T, P]
    ],
    axis=1,
  )


def new_moments(treedef, x: per_param.Prepared, state):
  """The updated ``m`` and ``v`` trees, shaped like ``state``'s."""
  m, v = x.moments()
  return treedef.unflatten(m, state.m), treedef.unflatten(v, state.v)


def finish_update(treedef, updates, ps, params, new_state, state):
  """``(updates, new_state)``: updates as ``params``' tree, state cast."""
  updates = treedef.unflatten(per_param.shaped_like(updates, ps), params)
  return updates, per_param.cast_state(new_state, state)
