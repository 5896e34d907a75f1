"""Hand-designed optimizers behind the learned optimizers' interface.

``baseline(name, **hparams)`` returns an ``optax.GradientTransformationExtraArgs``
that is used exactly like ``lopt.optimizer(theta)``: its ``update`` accepts
(and ignores) ``value``, ``valid_value`` and any other extra arguments, its
``init`` rejects parameter trees no optimizer can update, and its updates
have the dtypes of the gradients. Built from optax wherever optax has the
optimizer; PowerSign and AddSign are ours (``learned_opt.sign_optimizers``).
Hyperparameters are range-checked when they are concrete numbers, and
gradients must have the parameters' tree and shapes when ``params`` is
given. As in optax, a NaN or inf gradient reaches their state: wrap the
transform in ``optax.apply_if_finite`` to skip such steps.

Composable options, accepted by every name:

* learning-rate schedules (``learned_opt.schedules.make_schedule``):
  ``schedule="constant" | "cosine" | "warmup_cosine" | "sgdr"`` with
  ``decay_steps``, ``warmup_steps``, ``final_lr_scale``, ``period_mult``,
  ``num_cycles``;
* annealed Gaussian gradient noise (Neelakantan et al. 2015), added to the
  gradients before the optimizer: variance ``noise_eta / (1 + t)**noise_gamma``
  (``noise_gamma`` 0.55 as in the paper), sampled from ``noise_key``.

Example:
  >>> tx = learned_opt.baseline("adam", learning_rate=1e-3)
  >>> tx = learned_opt.baseline(
  ...     "momentum", learning_rate=0.1, schedule="sgdr", decay_steps=100)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(grads, state, params, value=loss)
"""

import dataclasses
import inspect
import math
from typing import Any

import jax
import numpy as np
import optax

from learned_opt import base, schedules, sign_optimizers


@dataclasses.dataclass(frozen=True)
class _Spec:
  factory: Any  # optax-style constructor taking learning_rate first
  defaults: dict[str, Any]  # our defaults, learning_rate included
  fixed: dict[str, Any] = dataclasses.field(default_factory=dict)  # by name


_SPECS = {
  "sgd": _Spec(
    optax.sgd, {"learning_rate": 1e-2}, {"momentum": None, "nesterov": False}
  ),
  "momentum": _Spec(
    optax.sgd, {"learning_rate": 1e-2, "momentum": 0.9}, {"nesterov": False}
  ),
  "nesterov": _Spec(
    optax.sgd, {"learning_rate": 1e-2, "momentum": 0.9}, {"nesterov": True}
  ),
  "adagrad": _Spec(optax.adagrad, {"learning_rate": 1e-2}),
  # Zeiler (2012) has no learning rate; 1.0 keeps his update unscaled.
  "adadelta": _Spec(optax.adadelta, {"learning_rate": 1.0}),
  "rmsprop": _Spec(optax.rmsprop, {"learning_rate": 1e-3}),
  "adam": _Spec(optax.adam, {"learning_rate": 1e-3}, {"nesterov": False}),
  "adamw": _Spec(optax.adamw, {"learning_rate": 1e-3}, {"nesterov": False}),
  "amsgrad": _Spec(optax.amsgrad, {"learning_rate": 1e-3}),
  "adamax": _Spec(optax.adamax, {"learning_rate": 2e-3}),
  "nadam": _Spec(optax.adam, {"learning_rate": 1e-3}, {"nesterov": True}),
  "nadamw": _Spec(optax.adamw, {"learning_rate": 1e-3}, {"nesterov": True}),
  "powersign": _Spec(sign_optimizers.powersign, {"learning_rate": 1e-3}),
  "addsign": _Spec(sign_optimizers.addsign, {"learning_rate": 1e-3}),
}

BASELINE_NAMES = tuple(_SPECS)

_NOISE_KWARGS = ("noise_eta", "noise_gamma", "noise_key")
_COMMON_KWARGS = ("schedule", *schedules.SCHEDULE_KWARGS, *_NOISE_KWARGS)


def hparam_names(name: str) -> tuple[str, ...]:
  """The keyword arguments ``baseline(name, ...)`` accepts.

  Args:
    name: one of ``BASELINE_NAMES``.

  Returns:
    The optimizer's own hyperparameters, then the common options.

  Raises:
    ValueError: for an unknown name.
  """
  spec = _get_spec(name)
  own = [
    p for p in inspect.signature(spec.factory).parameters if p not in spec.fixed
  ]
  return (*own, *_COMMON_KWARGS)


def _get_spec(name: str) -> _Spec:
  if name not in _SPECS:
    raise ValueError(
      f"unknown baseline optimizer {name!r}; valid names: "
      f"{', '.join(BASELINE_NAMES)}."
    )
  return _SPECS[name]


# Valid ranges of hyperparameters, by name, as (test, description). Only
# concrete numbers are checked: a traced value (a vmap over a grid) or a
# schedule passes through.
_IN_0_1 = (lambda x: 0.0 <= x < 1.0, "in [0, 1)")
_POSITIVE = (lambda x: x > 0.0, "> 0")
_NON_NEGATIVE = (lambda x: x >= 0.0, ">= 0")
_RANGES = {
  "learning_rate": _POSITIVE,
  "b1": _IN_0_1,
  "b2": _IN_0_1,
  "beta": _IN_0_1,
  "decay": _IN_0_1,
  "rho": _IN_0_1,
  "momentum": _IN_0_1,
  "eps": _POSITIVE,
  "eps_root": _NON_NEGATIVE,
  "weight_decay": _NON_NEGATIVE,
  "initial_accumulator_value": _NON_NEGATIVE,
  "initial_scale": _NON_NEGATIVE,
  "noise_eta": _POSITIVE,
  "noise_gamma": _NON_NEGATIVE,
  "final_lr_scale": _NON_NEGATIVE,
}


def _concrete_number(x: Any) -> float | None:
  """``x`` as a float if it is a concrete real scalar, else None."""
  if isinstance(x, bool) or callable(x) or isinstance(x, jax.core.Tracer):
    return None
  try:
    a = np.asarray(x)
  except (TypeError, ValueError):
    return None
  if a.shape != () or not np.issubdtype(a.dtype, np.number):
    return None
  return float(a)


def _check_ranges(name: str, hparams: dict[str, Any]) -> None:
  """Raises for a concrete hyperparameter outside its valid range."""
  ranges = dict(_RANGES)
  if name == "powersign":
    ranges["alpha"] = _POSITIVE  # the base of a power
  for arg, value in hparams.items():
    x = _concrete_number(value)
    if arg not in ranges or x is None:
      continue
    test, description = ranges[arg]
    if not (math.isfinite(x) and test(x)):
      raise ValueError(
        f"baseline({name!r}): {arg} must be finite and {description}, got "
        f"{value!r}."
      )


def _gradient_noise(name: str, options: dict[str, Any]):
  """optax.add_noise from the noise options, or None when noise is off."""
  eta = options.get("noise_eta")
  if eta is None:
    if "noise_gamma" in options or "noise_key" in options:
      raise ValueError(
        f"baseline({name!r}): noise_gamma/noise_key given without noise_eta; "
        "pass noise_eta=<base variance> (e.g. 0.01) to add gradient noise."
      )
    return None
  key = options.get("noise_key")
  if key is None:
    raise ValueError(
      f"baseline({name!r}): gradient noise needs an explicit noise_key "
      "(e.g. noise_key=jax.random.key(0)); the project never draws from "
      "hidden global randomness."
    )
  return optax.add_noise(eta, options.get("noise_gamma", 0.55), key)


def _with_interface(
  tx: optax.GradientTransformation, name: str
) -> optax.GradientTransformationExtraArgs:
  """Adds the interface guarantees every optimizer of the project has."""
  tx = optax.with_extra_args_support(tx)
  where = f"baseline({name!r})"

  def init_fn(params):
    base.check_params(params, where=where)
    return tx.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    if params is not None:
      base.check_grads(updates, params, f"{where}.update")
    new_updates, state = tx.update(updates, state, params, **extra_args)
    # Noise and schedules are float32; keep bfloat16 updates bfloat16.
    return optax.tree.cast_like(new_updates, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def baseline(
  name: str, **hparams: Any
) -> optax.GradientTransformationExtraArgs:
  """Builds a hand-designed optimizer with the learned optimizers' interface.

  Args:
    name: one of ``BASELINE_NAMES``: ``sgd``, ``momentum`` (heavy ball,
      momentum 0.9), ``nesterov``, ``adagrad``, ``adadelta``, ``rmsprop``,
      ``adam``, ``adamw``, ``amsgrad``, ``adamax``, ``nadam``, ``nadamw``,
      ``powersign``, ``addsign``.
    **hparams: the optimizer's own hyperparameters (the keyword arguments of
      the optax constructor, e.g. ``learning_rate``, ``b1``, ``momentum``,
      ``weight_decay``; see ``hparam_names(name)``) and the common options
      described in the module docstring. ``learning_rate`` may be a traced
      scalar, e.g. inside a ``vmap`` over a learning-rate grid.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` returning additive updates.

  Raises:
    ValueError: for an unknown name (the message lists the valid ones), a
      hyperparameter the optimizer does not take, a concrete value outside
      its valid range (a learning rate or ``eps`` <= 0, decays such as
      ``b1``, ``b2``, ``decay``, ``momentum`` outside [0, 1), NaN), or
      inconsistent options.
  """
  spec = _get_spec(name)
  valid = hparam_names(name)
  unknown = sorted(set(hparams) - set(valid))
  if unknown:
    fixed = [k for k in unknown if k in spec.fixed]
    hint = (
      f" ({', '.join(fixed)} is fixed by the name {name!r}; pick another "
      "name instead)"
      if fixed
      else ""
    )
    raise ValueError(
      f"baseline({name!r}) got unknown hyperparameter(s) "
      f"{', '.join(unknown)}{hint}; valid: {', '.join(valid)}."
    )
  _check_ranges(name, hparams)
  options = {k: hparams.pop(k) for k in _COMMON_KWARGS if k in hparams}
  kwargs = {**spec.defaults, **hparams, **spec.fixed}
  kwargs["learning_rate"] = schedules.make_schedule(
    kwargs["learning_rate"],
    options.get("schedule", "constant"),
    **{k: options[k] for k in schedules.SCHEDULE_KWARGS if k in options},
  )
  tx = spec.factory(**kwargs)
  noise = _gradient_noise(name, options)
  if noise is not None:
    tx = optax.chain(optax.with_extra_args_support(noise), tx)
  return _with_interface(tx, name)
