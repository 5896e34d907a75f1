"""Turns a shipped name, a checkpoint directory or a baseline name into an
optimizer: the one place that does (``lopt evaluate``, the demo,
self-training's learned outer optimizer and ``config.lopt.init_from``).

Optimizers are described by a hashable *factory* and its hyperparameters
(``factory(hparams) -> optax transform``), so that evaluation can build them
inside a jitted function, with a learning-rate grid or theta as traced
arguments.

Example:
  >>> r = resolve.resolve("hierarchical_small_cpu")
  >>> tx = r.factory(r.hparams)          # = r.lopt.optimizer(r.theta)
  >>> resolve.resolve("adam").factory    # BaselineFactory("adam", None)
"""

import dataclasses
import os
import pathlib
from typing import Any, NamedTuple, Protocol

import optax

import learned_opt
from learned_opt import baselines, pretrained

Hparams = Any  # a pytree of arrays: a learning rate, theta, or None


class OptimizerFactory(Protocol):
  """A hashable callable ``hparams -> optax.GradientTransformationExtraArgs``.

  It is a static argument of the jitted run, so it must hash and compare by
  value (a frozen dataclass), or every call would compile again.
  """

  def __call__(
    self, hparams: Hparams
  ) -> optax.GradientTransformationExtraArgs: ...


@dataclasses.dataclass(frozen=True)
class BaselineFactory:
  """Builds ``baselines.baseline(name, **fixed, <hparam>=hparams)``.

  Attributes:
    name: the baseline's name (``"adam"``, ``"momentum"``, ...).
    hparam: the keyword the (possibly traced) hyperparameter is passed as;
      None to ignore ``hparams`` and use the baseline's defaults.
    fixed: further keyword arguments, as ``((key, value), ...)``.
  """

  name: str
  hparam: str | None = "learning_rate"
  fixed: tuple[tuple[str, Any], ...] = ()

  def __call__(self, hparams: Hparams) -> optax.GradientTransformationExtraArgs:
    kwargs = dict(self.fixed)
    if self.hparam is not None:
      kwargs[self.hparam] = hparams
    return baselines.baseline(self.name, **kwargs)


@dataclasses.dataclass(frozen=True)
class LearnedFactory:
  """Builds ``lopt.optimizer(theta)``; ``theta`` is passed as ``hparams``.

  Attributes:
    lopt: the learned optimizer.
    num_steps: the run's total number of steps, for an optimizer with
      progress features (None: the caller passes ``update(...,
      num_steps=N)`` itself, or the optimizer has none).
  """

  lopt: learned_opt.LearnedOptimizer
  num_steps: int | None = None

  def __call__(self, hparams: Hparams) -> optax.GradientTransformationExtraArgs:
    if self.num_steps is None:
      return self.lopt.optimizer(hparams)
    return self.lopt.optimizer(hparams, num_steps=self.num_steps)


class Resolved(NamedTuple):
  """An optimizer found by ``resolve``.

  Attributes:
    label: a short name: the manifest's name, the directory's name or the
      baseline's name.
    factory: builds the optimizer from ``hparams``.
    hparams: theta for a learned optimizer, None for a baseline (its
      default hyperparameters).
    info: the pretrained manifest, a checkpoint's metadata, or
      ``{"baseline": name}``.
    lopt: the learned optimizer (None for a baseline).
  """

  label: str
  factory: OptimizerFactory
  hparams: Hparams
  info: dict
  lopt: learned_opt.LearnedOptimizer | None = None

  @property
  def theta(self) -> Any:
    """The learned optimizer's meta-parameters (None for a baseline)."""
    return self.hparams if self.lopt is not None else None


def resolve(
  name_or_path: str | os.PathLike,
  root: str | os.PathLike | None = None,
  *,
  learned_only: bool = False,
) -> Resolved:
  """A shipped name, a checkpoint directory or a baseline name.

  Args:
    name_or_path: a name under ``checkpoints/`` (``root``), a directory
      written by ``learned_opt.pretrained.save_pretrained`` or
      ``learned_opt.save`` (e.g. a run's ``WORKDIR/theta``), or one of
      ``learned_opt.BASELINE_NAMES``.
    root: where shipped names live (default: the shipped checkpoints).
    learned_only: refuse baseline names (for a learned optimizer's source).

  Returns:
    The ``Resolved`` optimizer.

  Raises:
    FileNotFoundError: if it is none of these (the message lists the
      shipped names, and the baseline names unless ``learned_only``).
    learned_opt.CheckpointError: (a ValueError) for a corrupted checkpoint.
  """
  text = str(name_or_path)
  path = pathlib.Path(name_or_path).expanduser()
  if (
    not path.is_dir() and text in baselines.BASELINE_NAMES and not learned_only
  ):
    factory = BaselineFactory(text, hparam=None)
    return Resolved(text, factory, None, {"baseline": text})
  try:
    lopt, theta, info = pretrained.load_any(name_or_path, root=root)
  except FileNotFoundError as e:
    if learned_only:
      raise
    raise FileNotFoundError(
      f"{e} Nor is it a baseline ({', '.join(baselines.BASELINE_NAMES)})."
    ) from None
  shipped = not path.is_dir() or pretrained.is_pretrained_dir(path)
  label = str(info.get("name", path.name)) if shipped else path.name
  return Resolved(label, LearnedFactory(lopt), theta, dict(info), lopt)
