"""Typed meta-training configuration, built once from an ml_collections dict.

``configs/*.py`` return ``ml_collections.ConfigDict`` objects (so the command
line can override any field with ``--config.x.y=value``); ``from_config``
turns one into a tree of frozen dataclasses and is the only place a
``ConfigDict`` is read. It fails before any compute, with a message naming
the field, on an unknown field, a value of the wrong type, or a value out of
range, e.g.::

  config.estimator.stdd: unknown field; valid: name, num_tasks, ...
  config.outer.learning_rate must be > 0, got -1.0

Example:
  >>> cd = meta_train.config.default_config_dict()
  >>> cd.outer.num_steps = 10
  >>> cfg = meta_train.config.from_config(cd)
  >>> cfg.outer.num_steps
  10
"""

import ast
import collections.abc
import dataclasses
import importlib.util
import pathlib
import typing
from typing import Any

import ml_collections

import learned_opt
from meta_train import estimators

# config name -> learned_opt class name.
LOPT_NAMES = {"mlp": "MLPLOpt", "hierarchical": "HierarchicalLOpt"}
SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
  """A configuration field is unknown, of the wrong type or out of range."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class LOptConfig:
  """Which learned optimizer is meta-trained.

  Attributes:
    name: ``"mlp"`` (``learned_opt.MLPLOpt``) or ``"hierarchical"``
      (``learned_opt.HierarchicalLOpt``).
    kwargs: constructor arguments of that class (architecture sizes, ...).
    init_from: start theta from a trained optimizer instead of a random
      init: a shipped name (``"mlp_small_cpu"``), a pretrained directory or
      a ``learned_opt.save`` checkpoint (e.g. another run's
      ``WORKDIR/theta``). Same architecture: fine-tuning; an ``MLPLOpt``
      into a ``HierarchicalLOpt``: its MLP is embedded so that the new
      optimizer starts with the same steps (``learned_opt.warm_start``).
      Ignored when the run resumes from its own checkpoint.
  """

  name: str = "mlp"
  kwargs: dict = dataclasses.field(default_factory=dict)
  init_from: str = ""

  def __post_init__(self):
    _require(
      self.name in LOPT_NAMES,
      f"name must be one of {sorted(LOPT_NAMES)}, got {self.name!r}",
    )


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """Which tasks meta-training samples from.

  Attributes:
    families: family names to sample, with equal weights (empty: every
      family of the suite, with the suite's default weights).
    num_tasks: number of train-split specs sampled before filtering.
    max_groups: keep at most this many signature groups, the ones with the
      most specs first (0: all).
    max_params: drop signatures whose task has more inner parameters than
      this (0: no limit); restricts a suite to cheap signatures.
    seed: seed of the suite sampler.
  """

  families: tuple[str, ...] = ()
  num_tasks: int = 64
  max_groups: int = 0
  max_params: int = 0
  seed: int = 0

  def __post_init__(self):
    _require(
      self.num_tasks >= 1, f"num_tasks must be >= 1, got {self.num_tasks}"
    )
    _require(self.max_groups >= 0, "max_groups must be >= 0 (0: all)")
    _require(self.max_params >= 0, "max_params must be >= 0 (0: no limit)")


@dataclasses.dataclass(frozen=True)
class OuterConfig:
  """The outer loop: how theta is updated from the meta-gradient.

  Attributes:
    num_steps: number of outer steps of the run.
    optimizer: outer optimizer: a ``learned_opt.baseline`` / optax name
      (``"adam"``, ``"sgd"``, ...) or ``"learned"`` (a trained learned
      optimizer loaded from ``learned_path``).
    learning_rate: peak learning rate (ignored by ``"learned"``).
    schedule: ``"constant"`` or ``"cosine"`` (decays to
      ``final_lr_fraction * learning_rate`` at ``num_steps``).
    warmup_steps: linear warm-up steps before the schedule.
    final_lr_fraction: end value of the cosine decay, relative.
    clip_norm: global-norm clip of the meta-gradient (0: no clipping).
    hparams: extra keyword arguments of the outer optimizer (e.g. b1).
    learned_path: ``learned_opt.save`` directory when optimizer is learned.
  """

  num_steps: int = 1000
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  final_lr_fraction: float = 0.1
  clip_norm: float = 30.0
  hparams: dict = dataclasses.field(default_factory=dict)
  learned_path: str = ""

  def __post_init__(self):
    _require(
      self.num_steps >= 1, f"num_steps must be >= 1, got {self.num_steps}"
    )
    _require(
      self.learning_rate > 0,
      f"learning_rate must be > 0, got {self.learning_rate}",
    )
    _require(
      self.schedule in SCHEDULES,
      f"schedule must be one of {SCHEDULES}, got {self.schedule!r}",
    )
    _require(self.warmup_steps >= 0, "warmup_steps must be >= 0")
    _require(
      0.0 <= self.final_lr_fraction <= 1.0,
      f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}",
    )
    _require(self.clip_norm >= 0, "clip_norm must be >= 0 (0: no clipping)")
    _require(
      self.optimizer != "learned" or bool(self.learned_path),
      "learned_path must name a learned_opt checkpoint directory when "
      "optimizer is 'learned'",
    )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Periodic evaluation of theta on held-out (test-split) tasks.

  Attributes:
    every: evaluate every this many outer steps, and at the start and end
      of the run (0: never).
    num_tasks: number of test-split tasks (same family filters as training).
    num_steps: inner steps each task is trained for with ``theta``.
    keep_thetas: also export theta at every evaluation to
      ``WORKDIR/eval_thetas/step_NNNNNNN`` (a ``learned_opt`` checkpoint with
      the evaluation's metrics as metadata), so that the checkpoint to ship
      can be chosen afterwards by longer rollouts (``lopt evaluate``).
  """

  every: int = 100
  num_tasks: int = 4
  num_steps: int = 200
  keep_thetas: bool = True

  def __post_init__(self):
    _require(self.every >= 0, "every must be >= 0 (0: never)")
    _require(
      self.num_tasks >= 1, f"num_tasks must be >= 1, got {self.num_tasks}"
    )
    _require(
      self.num_steps >= 1, f"num_steps must be >= 1, got {self.num_steps}"
    )


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Orbax checkpoints of the whole meta-training state.

  Attributes:
    every: save every this many outer steps (and always at exit).
    keep: number of most recent checkpoints kept.
  """

  every: int = 100
  keep: int = 3

  def __post_init__(self):
    _require(self.every >= 1, f"every must be >= 1, got {self.every}")
    _require(self.keep >= 1, f"keep must be >= 1, got {self.keep}")


@dataclasses.dataclass(frozen=True)
class LogConfig:
  """Metrics output.

  Attributes:
    every: write metrics every this many outer steps.
    tensorboard: also write TensorBoard event files to the workdir.
    progress: show a tqdm progress bar.
  """

  every: int = 10
  tensorboard: bool = True
  progress: bool = True

  def __post_init__(self):
    _require(self.every >= 1, f"every must be >= 1, got {self.every}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Devices and processes meta-training runs on.

  Attributes:
    num_devices: size of the ``"tasks"`` mesh axis (0: all devices of all
      processes).
    distributed: call ``jax.distributed.initialize`` (also done when the
      standard JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
      environment variables are set).
    coordinator_address: ``host:port`` of process 0 ("" : from env/cluster).
    num_processes: number of processes (0: from env/cluster).
    process_id: this process's index (-1: from env/cluster).
    cpu_collectives: CPU collectives implementation for several processes.
    cpu_devices: JAX devices this process makes of its CPU cores when it
      runs on CPU (``lopt meta-train``; see ``mesh.split_host_cpu``): 0 =
      ``num_devices`` if set, else one per core, as many as divide
      ``estimator.num_tasks``; 1 = one device using all cores. Ignored on
      GPU/TPU and when XLA_FLAGS or JAX_NUM_CPU_DEVICES already set a CPU
      device count.
  """

  num_devices: int = 0
  distributed: bool = False
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1
  cpu_collectives: str = "gloo"
  cpu_devices: int = 0

  def __post_init__(self):
    _require(self.num_devices >= 0, "num_devices must be >= 0 (0: all)")
    _require(
      self.cpu_devices >= 0, "cpu_devices must be >= 0 (0: one per core)"
    )
    _require(self.num_processes >= 0, "num_processes must be >= 0")
    _require(self.process_id >= -1, "process_id must be >= -1 (-1: from env)")
    _require(
      self.cpu_collectives in ("gloo", "mpi", "none"),
      f"cpu_collectives must be 'gloo', 'mpi' or 'none', got "
      f"{self.cpu_collectives!r}",
    )


@dataclasses.dataclass(frozen=True)
class Config:
  """The whole meta-training configuration.

  Attributes:
    seed: the root seed; every PRNG stream of the run is derived from it.
    lopt: the learned optimizer.
    suite: the train tasks.
    estimator: the meta-gradient estimator (``estimators.EstimatorConfig``).
    outer: the outer optimizer and run length.
    eval: held-out evaluation.
    checkpoint: orbax checkpoints.
    log: metrics output.
    mesh: devices and processes.
  """

  seed: int = 0
  lopt: LOptConfig = dataclasses.field(default_factory=LOptConfig)
  suite: SuiteConfig = dataclasses.field(default_factory=SuiteConfig)
  estimator: estimators.EstimatorConfig = dataclasses.field(
    default_factory=estimators.EstimatorConfig
  )
  outer: OuterConfig = dataclasses.field(default_factory=OuterConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  checkpoint: CheckpointConfig = dataclasses.field(
    default_factory=CheckpointConfig
  )
  log: LogConfig = dataclasses.field(default_factory=LogConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)


# ------------------------------------------------------------- conversion


def from_config(cd: Any) -> Config:
  """Validates a ConfigDict (or nested mapping) into a ``Config``.

  Missing fields take the dataclass defaults.

  Args:
    cd: an ``ml_collections.ConfigDict`` or a nested dict.

  Returns:
    The typed, validated configuration.

  Raises:
    ConfigError: naming the field (``config.a.b``) that is unknown, has the
      wrong type or an invalid value.
  """
  if isinstance(cd, Config):
    return cd
  cfg = _build(Config, cd, "config")
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

  ``configs/*.py`` start from it, so that every field exists and can be
  overridden on the command line.
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


def _as_mapping(cd: Any, path: str) -> collections.abc.Mapping:
  if isinstance(
    cd, ml_collections.ConfigDict | ml_collections.FrozenConfigDict
  ):
    return cd.to_dict() if hasattr(cd, "to_dict") else dict(cd)
  if isinstance(cd, collections.abc.Mapping):
    return cd
  raise ConfigError(f"{path} must be a ConfigDict or mapping, got {cd!r}")


def _build(cls: type, cd: Any, path: str) -> Any:
  """Builds dataclass ``cls`` from mapping ``cd``; errors name ``path.x``."""
  values = _as_mapping(cd, path)
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  kwargs = {}
  for key, value in values.items():
    if key not in hints:
      raise ConfigError(
        f"{path}.{key}: unknown field; valid: {', '.join(names)}"
      )
    kwargs[key] = _convert(value, hints[key], f"{path}.{key}")
  try:
    return cls(**kwargs)
  except ConfigError as e:
    raise ConfigError(f"{path}.{e}") from None
  except (ValueError, TypeError) as e:  # from another module's dataclass
    message = str(e)
    prefix = f"{cls.__name__}."
    if message.startswith(prefix):
      raise ConfigError(f"{path}.{message[len(prefix) :]}") from None
    raise ConfigError(f"{path}: {message}") from None


def _type_error(path: str, hint: Any, value: Any) -> ConfigError:
  name = getattr(hint, "__name__", str(hint))
  return ConfigError(
    f"{path} must be of type {name}, got {value!r} ({type(value).__name__})"
  )


def _convert(value: Any, hint: Any, path: str) -> Any:
  """Checks ``value`` against the type ``hint``; returns the typed value."""
  if dataclasses.is_dataclass(hint):
    return _build(hint, value, path)
  if hint is bool:
    if not isinstance(value, bool):
      raise _type_error(path, hint, value)
    return value
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise _type_error(path, hint, value)
    return int(value)
  if hint is float:
    if isinstance(value, bool) or not isinstance(value, int | float):
      raise _type_error(path, hint, value)
    return float(value)
  if hint is str:
    if not isinstance(value, str):
      raise _type_error(path, hint, value)
    return value
  if typing.get_origin(hint) is tuple:
    (elem, _) = typing.get_args(hint)
    if isinstance(value, str) or not isinstance(value, list | tuple):
      raise _type_error(path, hint, value)
    return tuple(_convert(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
  if hint is dict:
    return dict(_as_mapping(value, path))
  raise TypeError(f"{path}: unsupported field type {hint}")  # a bug here


def lopt_class(name: str) -> type:
  """The ``learned_opt`` class of a ``LOptConfig.name``.

  Raises:
    ConfigError: if the name is unknown.
  """
  if name not in LOPT_NAMES:
    raise ConfigError(
      f"config.lopt.name must be one of {sorted(LOPT_NAMES)}, got {name!r}"
    )
  return getattr(learned_opt, LOPT_NAMES[name])


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


# ------------------------------------------------- config files, overrides
#
# Why not ml_collections' config_flags: its tuple parser reads
# ``--config.suite.families=quadratic,mlp`` and ``=[quadratic]`` as the
# one-element tuple of the whole string (ast.literal_eval fails on bare
# words and it falls back to the string), it cannot add a key to an
# open-ended dict (``--config.lopt.kwargs.num_hidden_layers=1``), and it
# needs absl's global FLAGS. The ~100 lines below read the same syntax
# (``--config=FILE[:ARG]``, ``--config.a.b=VALUE``) without those gaps.

# Dict fields whose keys are open-ended (constructor/optimizer kwargs): an
# override may add a key that the config file did not set.
_OPEN_DICTS = ("kwargs", "hparams")


class UsageError(ValueError):
  """A malformed command line or override."""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Runs ``get_config(arg)`` of ``path[:arg]`` (a configs/*.py file).

  Raises:
    UsageError: if the file is missing or defines no get_config.
  """
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise UsageError(f"--config: no such file {path!r}")
  module_spec = importlib.util.spec_from_file_location("_lopt_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UsageError(f"--config: {path} defines no get_config(arg=None)")
  return module.get_config(arg or None)


def _parse_value(text: str, old: Any, path: str) -> Any:
  """Parses ``text`` as a value of the type of ``old`` (the field's value)."""
  try:
    if isinstance(old, bool):
      lowered = text.lower()
      if lowered not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return lowered in ("true", "1")
    if isinstance(old, int):
      return int(text)
    if isinstance(old, float):
      return float(text)
    if isinstance(old, str):
      return text
    if isinstance(old, tuple):
      try:
        value = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        value = tuple(t.strip() for t in text.split(",") if t.strip())
      return tuple(value) if isinstance(value, list | tuple) else (value,)
    return ast.literal_eval(text)  # a new key of an open-ended dict
  except (ValueError, SyntaxError):
    kind = type(old).__name__ if old is not None else "a Python literal"
    raise UsageError(f"{path} must be of type {kind}, got {text!r}") from None


def apply_override(cd: ml_collections.ConfigDict, path: str, text: str):
  """Sets ``config.a.b`` (``path``) from the command-line text ``text``.

  Raises:
    UsageError: naming the field if it does not exist or the value does
      not parse as the field's type.
  """
  *parents, name = path.split(".")[1:]
  node, where = cd, "config"
  for part in parents:
    if part not in node or not isinstance(
      node[part], ml_collections.ConfigDict
    ):
      raise UsageError(
        f"{where}.{part}: unknown section; valid: {', '.join(sorted(node))}"
      )
    node, where = node[part], f"{where}.{part}"
  if name not in node:
    if parents and parents[-1] in _OPEN_DICTS:
      with node.unlocked():
        node[name] = _parse_value(text, None, path)
      return
    raise UsageError(f"{path}: unknown field; valid: {', '.join(sorted(node))}")
  if isinstance(node[name], ml_collections.ConfigDict):
    raise UsageError(f"{path} is a section; set one of its fields")
  node[name] = _parse_value(text, node[name], path)


def flag_pairs(argv: list[str], usage: str) -> list[tuple[str, str]]:
  """``(name, value)`` of each ``--name=value`` or ``--name value``, in order.

  Raises:
    UsageError: for a bare argument or a flag without a value.
  """
  pairs, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if not arg.startswith("--"):
      raise UsageError(f"unexpected argument {arg!r}\n{usage}")
    name, eq, value = arg[2:].partition("=")
    if not eq:
      if i + 1 >= len(argv):
        raise UsageError(f"--{name} needs a value\n{usage}")
      i, value = i + 1, argv[i + 1]
    i += 1
    pairs.append((name, value))
  return pairs
