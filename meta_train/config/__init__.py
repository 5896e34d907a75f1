"""The meta-training configuration: the one front door.

``configs/*.py`` return ``ml_collections.ConfigDict`` objects (so the command
line can override any field with ``--config.x.y=value``); ``from_config``
turns one, or the ``config.json`` a run saved, into a tree of frozen
dataclasses (``schema``) and is the only place a ``ConfigDict`` is read. It
fails before any compute, with a message naming the field, on an unknown
field, a value of the wrong type, or a value out of range, e.g.::

  config.estimator.stdd: unknown field; valid: name, num_pairs, ...
  config.outer.learning_rate must be > 0, got -1.0

Fields renamed since a run was written (``parsing.LEGACY_FIELDS``, e.g.
``estimator.num_tasks`` -> ``estimator.num_pairs``) are read under their
new names, so a workdir of the old code resumes.

Modules: ``schema`` (the dataclasses and their checks), ``parsing`` (typed
conversion, migration, config files and overrides). Use them through the
names below.

Example:
  >>> cd = meta_train.config.default_config_dict()
  >>> cd.outer.num_steps = 10
  >>> cfg = meta_train.config.from_config(cd)
  >>> cfg.outer.num_steps
  10
"""

import dataclasses
from typing import Any

import ml_collections

from learned_opt import registry
from meta_train.config import parsing
from meta_train.config.parsing import (  # noqa: F401
  LEGACY_FIELDS,
  UsageError,
  apply_override,
  flag_pairs,
  load_config_file,
  migrate,
  parse_command_line,
)
from meta_train.config.schema import (  # noqa: F401
  SCHEDULES,
  CheckpointConfig,
  Config,
  ConfigError,
  EvalConfig,
  LogConfig,
  LOptConfig,
  MeshConfig,
  OuterConfig,
  SuiteConfig,
)


def from_config(cd: Any) -> Config:
  """Validates a ConfigDict (or nested mapping) into a ``Config``.

  Missing fields take the dataclass defaults; renamed fields
  (``LEGACY_FIELDS``) are migrated.

  Args:
    cd: an ``ml_collections.ConfigDict`` or a nested dict (e.g. a saved
      ``config.json``).

  Returns:
    The typed, validated configuration.

  Raises:
    ConfigError: naming the field (``config.a.b``) that is unknown, has the
      wrong type or an invalid value.
  """
  if isinstance(cd, Config):
    return cd
  values = migrate(parsing.as_mapping(cd, "config"))
  cfg = parsing.build(Config, values, "config")
  _check_lopt_kwargs(cfg.lopt)
  return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
  """The configuration as JSON-compatible nested dicts (tuples as lists)."""

  def plain(x):
    if isinstance(x, dict):
      return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
      return [plain(v) for v in x]
    return x

  return plain(dataclasses.asdict(cfg))


def default_config_dict() -> ml_collections.ConfigDict:
  """A ConfigDict holding every field at its default.

  ``configs/*.py`` start from it (through ``configs/base.py``), so that every
  field exists and can be overridden on the command line.
  """
  return to_config_dict(Config())


def to_config_dict(cfg: Config) -> ml_collections.ConfigDict:
  """The ConfigDict equivalent of a ``Config`` (tuples stay tuples)."""

  def convert(obj):
    if dataclasses.is_dataclass(obj):
      return ml_collections.ConfigDict(
        {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
      )
    if isinstance(obj, dict):
      return ml_collections.ConfigDict({k: convert(v) for k, v in obj.items()})
    return obj

  return convert(cfg)


def lopt_class(name: str) -> type:
  """The ``learned_opt`` class of a ``LOptConfig.name``.

  Raises:
    ConfigError: if the name is unknown.
  """
  try:
    return registry.get_architecture(name)
  except ValueError:
    raise ConfigError(
      f"config.lopt.name must be one of {sorted(registry.ARCHITECTURES)}, "
      f"got {name!r}"
    ) from None


def _check_lopt_kwargs(cfg: LOptConfig) -> None:
  """Fails early on constructor arguments the optimizer class lacks."""
  cls = lopt_class(cfg.name)
  if not dataclasses.is_dataclass(cls):
    return
  valid = [f.name for f in dataclasses.fields(cls) if f.init]
  for key in cfg.kwargs:
    if key not in valid:
      raise ConfigError(
        f"config.lopt.kwargs.{key}: unknown field of {cls.__name__}; valid: "
        f"{', '.join(valid)}"
      )
  try:
    cls(**cfg.kwargs)  # a dataclass: cheap, and runs its own validation
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.lopt.kwargs: {e}") from None
