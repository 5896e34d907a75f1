"""Meta-gradient estimators selected by name: "es", "pes", "tbptt".

An ``Estimator`` is a pair of pure functions (the caller jits them, passing
the stacked task as an argument so that its data is not baked into the HLO):

* ``init(theta, tasks, key) -> state``: a population of staggered inner runs;
  every array leaf of the state has leading axis ``[num_pairs]``.
* ``estimate(theta, tasks, state, key) -> (grad, state, metrics)``: one
  truncation of ``unroll_length`` inner steps per instance, the meta-gradient
  averaged over finite instances (same tree as theta), and scalar metrics
  ``meta_loss``, ``num_nonfinite``, ``num_resets``, ``inner_steps``.

Example:
  >>> cfg = estimators.EstimatorConfig(name="es", num_pairs=8)
  >>> est = estimators.make_estimator(lopt, cfg)
  >>> state = jax.jit(est.init)(theta, tasks, key)
  >>> grad, state, metrics = jax.jit(est.estimate)(theta, tasks, state, key)
"""

from collections.abc import Callable
import dataclasses
import functools
from typing import Any, NamedTuple

import jax

from learned_opt import base as lopt_base
from meta_train import checks, unroll
from meta_train.estimators import es, pes, restrict, tbptt
from task_suite import base as task_base

MetaParams = Any
EstState = Any

NAMES = ("es", "pes", "tbptt")


@dataclasses.dataclass(frozen=True)
class _Population:
  """EstimatorConfig's own fields (before the unroll's in field order)."""

  name: str = "es"
  num_pairs: int = 8
  std: float = 0.01


@dataclasses.dataclass(frozen=True)
class EstimatorConfig(unroll.UnrollConfig, _Population):
  """Which estimator, and the population and unroll it runs.

  The unroll fields (``unroll_length``, ``min_horizon``, ``max_horizon``,
  ``valid_every``, ``meta_loss_*``) are ``unroll.UnrollConfig``'s, inherited
  so that the config keys stay flat (``config.estimator.unroll_length``).
  ``_Population`` is the later base, so its fields come first in the
  dataclass order (and in the error that lists the valid fields).

  Attributes:
    name: "es" (antithetic truncated ES), "pes" or "tbptt".
    num_pairs: the population: ES/PES antithetic pairs (each pair is 2
      inner runs); truncated backprop runs this many single inner runs.
    std: ES/PES perturbation std.
  """

  def __post_init__(self):
    super().__post_init__()
    for field in dataclasses.fields(_Population):
      checks.check_type(self, field.name, field.type)
    checks.check_choice(self, "name", NAMES)
    checks.check_at_least(self, ("num_pairs",), 1)
    ok = checks.is_positive_float(self.std)
    checks.check(ok, self, "std", "a finite float > 0")

  def unroll_config(self) -> unroll.UnrollConfig:
    """The unroll settings of this config, as a plain ``UnrollConfig``."""
    fields = dataclasses.fields(unroll.UnrollConfig)
    return unroll.UnrollConfig(
      **{f.name: getattr(self, f.name) for f in fields}
    )


class Estimator(NamedTuple):
  """A meta-gradient estimator: pure ``init`` and ``estimate`` functions."""

  init: Callable[[MetaParams, task_base.Task, jax.Array], EstState]
  estimate: Callable[
    [MetaParams, task_base.Task, EstState, jax.Array],
    tuple[MetaParams, EstState, dict[str, jax.Array]],
  ]


def _make_es(optimizer_fn, cfg: EstimatorConfig) -> Estimator:
  ucfg = cfg.unroll_config()
  return Estimator(
    init=functools.partial(es.init, optimizer_fn, ucfg, cfg.num_pairs),
    estimate=functools.partial(es.estimate, optimizer_fn, ucfg, cfg.std),
  )


def _make_pes(optimizer_fn, cfg: EstimatorConfig) -> Estimator:
  ucfg = cfg.unroll_config()
  return Estimator(
    init=functools.partial(pes.init, optimizer_fn, ucfg, cfg.num_pairs),
    estimate=functools.partial(pes.estimate, optimizer_fn, ucfg, cfg.std),
  )


def _make_tbptt(optimizer_fn, cfg: EstimatorConfig) -> Estimator:
  ucfg = cfg.unroll_config()
  return Estimator(
    init=functools.partial(tbptt.init, optimizer_fn, ucfg, cfg.num_pairs),
    estimate=functools.partial(tbptt.estimate, optimizer_fn, ucfg),
  )


_REGISTRY = {"es": _make_es, "pes": _make_pes, "tbptt": _make_tbptt}


def population_size(cfg: EstimatorConfig) -> int:
  """Inner runs the estimator vmaps: ES/PES run 2 per antithetic pair."""
  return cfg.num_pairs * (1 if cfg.name == "tbptt" else 2)


def make_estimator(
  lopt: lopt_base.LearnedOptimizer,
  cfg: EstimatorConfig,
  num_devices: int = 1,
  tune_chunk_size: bool = True,
  trainable: tuple[str, ...] = (),
) -> Estimator:
  """The estimator ``cfg.name`` for the learned optimizer ``lopt``.

  Args:
    lopt: the learned optimizer (anything with ``optimizer(theta)``
      returning an ``optax.GradientTransformationExtraArgs``).
    cfg: estimator settings.
    num_devices: devices the population is sharded over; with the
      population it sets the instances vmapped per device, for which the
      optimizer's chunk size is tuned (``learned_opt.for_vmapped_instances``).
    tune_chunk_size: False keeps ``lopt.chunk_size`` as it is.
    trainable: () estimates the meta-gradient of all of theta. Otherwise
      the paths (``"lr_head"``, ``"mlp/1/w"``) of the only parts it
      perturbs and estimates; elsewhere the meta-gradient is zero
      (``estimators.restrict`` says why).

  Returns:
    The ``Estimator``.

  Raises:
    ValueError: if ``cfg.name`` is not a registered estimator, or a
      ``trainable`` path names no part of theta.
  """
  if cfg.name not in _REGISTRY:
    raise ValueError(
      f"unknown estimator {cfg.name!r}; valid names: {sorted(_REGISTRY)}"
    )
  if not callable(getattr(lopt, "optimizer", None)):
    raise TypeError(
      f"make_estimator needs a learned optimizer with optimizer(theta), got "
      f"{type(lopt).__name__}; wrap a plain optax transform with a "
      "LearnedOptimizer subclass whose optimizer() returns it."
    )
  if tune_chunk_size:
    per_device = max(population_size(cfg) // max(num_devices, 1), 1)
    lopt = lopt_base.for_vmapped_instances(lopt, per_device)
  make = _REGISTRY[cfg.name]
  if not trainable:
    return make(lopt.optimizer, cfg)
  theta_shape = jax.eval_shape(lopt.init, jax.random.key(0))
  mask = restrict.trainable_mask(theta_shape, trainable)
  return Estimator(*restrict.restrict(make, lopt.optimizer, cfg, mask))
