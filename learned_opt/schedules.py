"""Learning-rate schedules for the hand-designed baselines.

Every schedule is ``learning_rate * unit(step)`` with ``unit`` an optax
schedule peaking at 1.0. Keeping the peak a Python float and multiplying by
the learning rate afterwards lets ``learning_rate`` be a traced array (a
``vmap`` over a learning-rate grid): optax's warmup-cosine schedules branch in
Python on ``peak_value == 0`` and so cannot take a tracer as their peak.
"""

from typing import Any

import jax.numpy as jnp
import optax

SCHEDULE_NAMES = ("constant", "cosine", "warmup_cosine", "sgdr")

# Keyword arguments of `make_schedule` other than the learning rate and kind;
# `learned_opt.baseline` forwards exactly these.
SCHEDULE_KWARGS = (
  "decay_steps",
  "warmup_steps",
  "final_lr_scale",
  "period_mult",
  "num_cycles",
)


def _check_int(name: str, value: Any, minimum: int, kind: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(
      f"schedule={kind!r}: {name} must be an integer >= {minimum}, got "
      f"{value!r}."
    )
  return value


def _unit_schedule(
  kind: str,
  decay_steps: int,
  warmup_steps: int,
  final_lr_scale: float,
  period_mult: int,
  num_cycles: int,
) -> optax.Schedule:
  """The schedule's shape with peak 1.0 (see the module docstring)."""
  if kind == "constant":
    return optax.join_schedules(
      [
        optax.linear_schedule(0.0, 1.0, warmup_steps),
        optax.constant_schedule(1.0),
      ],
      [warmup_steps],
    )
  if kind in ("cosine", "warmup_cosine"):
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=1.0,
      warmup_steps=warmup_steps,
      decay_steps=decay_steps,
      end_value=final_lr_scale,
    )
  # SGDR (Loshchilov & Hutter 2017, eq. 5): cosine cycles restarting at the
  # peak, cycle i lasting decay_steps * period_mult**i steps. The linear
  # warmup, if any, only precedes the first cycle.
  return optax.sgdr_schedule(
    [
      dict(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=warmup_steps if i == 0 else 0,
        decay_steps=decay_steps * period_mult**i,
        end_value=final_lr_scale,
      )
      for i in range(num_cycles)
    ]
  )


def _check_decay_steps(kind: str, decay_steps, warmup_steps: int) -> int:
  """``decay_steps`` checked against ``kind`` and the warmup (0: constant).

  Raises:
    ValueError: for decay steps given to a constant rate or missing from a
      decaying one, a warmup as long as the decay, or a ``warmup_cosine``
      without warmup.
  """
  if kind == "constant":
    if decay_steps is not None:
      raise ValueError(
        "decay_steps has no effect with schedule='constant'; choose "
        "schedule='cosine', 'warmup_cosine' or 'sgdr' to decay the rate."
      )
    return 0
  if decay_steps is None:
    raise ValueError(
      f"schedule={kind!r} needs decay_steps (the length of the cosine "
      "decay, or of the first cycle for 'sgdr')."
    )
  decay_steps = _check_int("decay_steps", decay_steps, 1, kind)
  if warmup_steps >= decay_steps:
    raise ValueError(
      f"schedule={kind!r}: warmup_steps={warmup_steps} must be smaller "
      f"than decay_steps={decay_steps} (the warmup counts towards it)."
    )
  if kind == "warmup_cosine" and not warmup_steps:
    raise ValueError(
      "schedule='warmup_cosine' needs warmup_steps >= 1 (use "
      "schedule='cosine' for no warmup)."
    )
  return decay_steps


def make_schedule(
  learning_rate: Any,
  kind: str = "constant",
  *,
  decay_steps: int | None = None,
  warmup_steps: int = 0,
  final_lr_scale: float = 0.0,
  period_mult: int = 2,
  num_cycles: int = 10,
) -> Any:
  """Builds a learning-rate schedule, or returns a constant rate unchanged.

  Args:
    learning_rate: the peak learning rate: a float or a (possibly traced)
      scalar array.
    kind: ``"constant"`` (after an optional linear warmup), ``"cosine"``
      (cosine decay over ``decay_steps``, optionally after a warmup that
      counts towards ``decay_steps``), ``"warmup_cosine"`` (the same with a
      mandatory warmup) or ``"sgdr"`` (cosine decay with warm restarts,
      Loshchilov & Hutter 2017: the first cycle lasts ``decay_steps`` and
      each following one ``period_mult`` times longer).
    decay_steps: length of the cosine decay (the first cycle for SGDR),
      warmup included. Required by every kind but ``"constant"``.
    warmup_steps: steps of linear warmup from 0 to ``learning_rate``.
    final_lr_scale: the learning rate at the end of a cosine (cycle), as a
      fraction of ``learning_rate``.
    period_mult: SGDR's ``T_mult``: each cycle is this many times longer than
      the previous one.
    num_cycles: number of SGDR cycles; after the last the rate stays at
      ``final_lr_scale * learning_rate``.

  Returns:
    ``learning_rate`` itself for a constant rate without warmup (so optax
    keeps no step counter for it), else a function of the step count.

  Raises:
    ValueError: for an unknown kind or inconsistent arguments.
  """
  if kind not in SCHEDULE_NAMES:
    raise ValueError(
      f"unknown schedule {kind!r}; valid schedules: {', '.join(SCHEDULE_NAMES)}."
    )
  if callable(learning_rate):
    if kind != "constant" or warmup_steps:
      raise ValueError(
        "learning_rate is already a schedule (a callable); pass a number "
        f"as learning_rate to use schedule={kind!r}, or drop the schedule "
        "options."
      )
    return learning_rate
  warmup_steps = _check_int("warmup_steps", warmup_steps, 0, kind)
  if kind == "constant" and not warmup_steps:
    _check_decay_steps(kind, decay_steps, warmup_steps)
    return learning_rate
  decay_steps = _check_decay_steps(kind, decay_steps, warmup_steps)
  period_mult = _check_int("period_mult", period_mult, 1, kind)
  num_cycles = _check_int("num_cycles", num_cycles, 1, kind)
  unit = _unit_schedule(
    kind, decay_steps, warmup_steps, final_lr_scale, period_mult, num_cycles
  )
  return lambda count: learning_rate * jnp.asarray(unit(count), jnp.float32)
