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
import math
from typing import Any, NamedTuple

import jax

from learned_opt import base as lopt_base
from meta_train import unroll
from meta_train.estimators import es, pes, tbptt
from task_suite import base as task_base

MetaParams = Any
EstState = Any

NAMES = ("es", "pes", "tbptt")


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
  """Which estimator, and the population and unroll it runs.

  Attributes:
    name: "es" (antithetic truncated ES), "pes" or "tbptt".
    num_pairs: the population: ES/PES antithetic pairs (each pair is 2
      inner runs); truncated backprop runs this many single inner runs.
    unroll_length: K inner steps per truncation.
    std: ES/PES perturbation std.
    min_horizon: inner-run length is log-uniform in
      ``[min_horizon, max_horizon]``.
    max_horizon: see ``min_horizon``.
    valid_every: feed the optimizer's validation-loss feature every N inner
      steps (0: never).
    meta_loss_split: "train" or "valid": which batch the meta-loss is
      measured on.
    meta_loss_weighting: "uniform" or "end" (weights later inner steps of a
      run more: against short-horizon bias).
    meta_loss_transform: "linear" or "log" (``unroll.UnrollConfig``).
  """

  name: str = "es"
  num_pairs: int = 8
  unroll_length: int = 20
  std: float = 0.01
  min_horizon: int = 100
  max_horizon: int = 2000
  valid_every: int = 10
  meta_loss_split: str = "train"
  meta_loss_weighting: str = "uniform"
  meta_loss_transform: str = "linear"

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      want = {int: int, float: (int, float), str: str}[field.type]
      if isinstance(value, bool) or not isinstance(value, want):
        raise ValueError(
          f"EstimatorConfig.{field.name} must be a {field.type.__name__}, "
          f"got {value!r} ({type(value).__name__})."
        )
    if self.name not in NAMES:
      raise ValueError(
        f"EstimatorConfig.name must be one of {NAMES}, got {self.name!r}."
      )
    if self.num_pairs < 1:
      raise ValueError(
        f"EstimatorConfig.num_pairs must be >= 1, got {self.num_pairs!r}."
      )
    if not (math.isfinite(self.std) and self.std > 0):
      raise ValueError(
        f"EstimatorConfig.std must be a finite float > 0, got {self.std!r}."
      )
    try:
      self.unroll_config()
    except ValueError as e:
      raise ValueError(str(e).replace("UnrollConfig", "EstimatorConfig")) from e

  def unroll_config(self) -> unroll.UnrollConfig:
    """The unroll settings of this config."""
    return unroll.UnrollConfig(
      unroll_length=self.unroll_length,
      min_horizon=self.min_horizon,
      max_horizon=self.max_horizon,
      valid_every=self.valid_every,
      meta_loss_split=self.meta_loss_split,
      meta_loss_weighting=self.meta_loss_weighting,
      meta_loss_transform=self.meta_loss_transform,
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

  Returns:
    The ``Estimator``.

  Raises:
    ValueError: if ``cfg.name`` is not a registered estimator.
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
  return _REGISTRY[cfg.name](lopt.optimizer, cfg)
