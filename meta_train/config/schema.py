"""The fields of a meta-training configuration: frozen, validated dataclasses.

Each dataclass checks its own ranges in ``__post_init__`` and raises
``ConfigError`` naming the field; ``meta_train.config.from_config`` builds
them from a ConfigDict or JSON and prefixes the path (``config.outer.``).
"""

import dataclasses

from learned_opt import registry
from meta_train import estimators
import task_suite.suite

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
    name: an architecture of ``learned_opt.ARCHITECTURES``: ``"mlp"``
      (``learned_opt.MLPLOpt``) or ``"hierarchical"``
      (``learned_opt.HierarchicalLOpt``).
    kwargs: constructor arguments of that class (architecture sizes, ...).
    init_from: start theta from a trained optimizer instead of a random
      init: a shipped name (``"mlp_small_cpu"``), a pretrained directory or
      a ``learned_opt.save`` checkpoint (e.g. another run's
      ``WORKDIR/theta``). Same architecture: fine-tuning; an ``MLPLOpt``
      into a ``HierarchicalLOpt``: its MLP is embedded so that the new
      optimizer starts with the same steps (``learned_opt.warm_start``).
      Ignored when the run resumes from its own checkpoint.
    trainable: () meta-trains all of theta. Otherwise the only parts of
      theta meta-training moves, as paths (``"lr_head"``: the step-size
      head of ``step_scale="lstm_head"``; ``"mlp/1/w"``); the estimator
      perturbs only them (``meta_train.estimators.restrict``).
  """

  name: str = "mlp"
  kwargs: dict = dataclasses.field(default_factory=dict)
  init_from: str = ""
  trainable: tuple[str, ...] = ()

  def __post_init__(self):
    _require(
      self.name in registry.ARCHITECTURES,
      f"name must be one of {sorted(registry.ARCHITECTURES)}, got "
      f"{self.name!r}",
    )
    _require(
      isinstance(self.trainable, tuple)
      and all(isinstance(p, str) and p for p in self.trainable),
      "trainable must be a tuple of theta paths such as ('lr_head',), got "
      f"{self.trainable!r}",
    )


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """Which tasks meta-training samples from.

  Attributes:
    families: family names to sample, with equal weights (empty: every
      family of the suite, with the suite's default weights).
    num_specs: number of train-split specs sampled before filtering.
    max_groups: keep at most this many signature groups, the ones with the
      most specs first (0: all).
    max_params: drop signatures whose task has more inner parameters than
      this (0: no limit); restricts a suite to cheap signatures.
    seed: seed of the suite sampler.
    augment_prob: probability that a train spec is augmented (weights
      reparameterized as ``w = s * w'``, the loss scaled; see
      ``task_suite.augment``). 0: no augmentation.
    augment_range: ``(low, high)`` of the log-uniform scales.
    augment_kinds: weight-scale kinds drawn from (``global``,
      ``per_tensor``, ``per_param``).
    augment_loss_prob: probability that an augmented spec also scales its
      loss.
    extra_specs: ``"FAMILY:N"`` entries: N more train specs of FAMILY,
      kept as their own signature groups whatever ``families``,
      ``max_groups`` and ``max_params`` say; e.g. ``("self_train:8",)``
      puts training a learned optimizer into the mix (as VeLO's sampler
      does) without growing the rest of it.
  """

  families: tuple[str, ...] = ()
  num_specs: int = 64
  max_groups: int = 0
  max_params: int = 0
  seed: int = 0
  augment_prob: float = 0.0
  augment_range: tuple[float, ...] = (1e-3, 1e3)
  augment_kinds: tuple[str, ...] = ("global", "per_tensor", "per_param")
  augment_loss_prob: float = 0.5
  extra_specs: tuple[str, ...] = ()

  def __post_init__(self):
    self.extra_counts()  # checks the entries
    _require(
      self.num_specs >= 1, f"num_specs must be >= 1, got {self.num_specs}"
    )
    _require(self.max_groups >= 0, "max_groups must be >= 0 (0: all)")
    _require(self.max_params >= 0, "max_params must be >= 0 (0: no limit)")
    _require(
      len(self.augment_range) == 2,
      f"augment_range must be (low, high), got {self.augment_range}",
    )
    try:
      self.augment_config()
    except ValueError as e:
      raise ConfigError(str(e)) from e

  def extra_counts(self) -> dict[str, int]:
    """``extra_specs`` as family -> number of specs."""
    counts = {}
    for entry in self.extra_specs:
      family, sep, count = str(entry).partition(":")
      _require(
        bool(sep) and count.isdigit() and int(count) >= 1,
        f"extra_specs entry {entry!r} must be FAMILY:N with N >= 1, "
        "e.g. 'self_train:8'",
      )
      _require(
        family in task_suite.registry.names(),
        f"extra_specs entry {entry!r}: unknown family {family!r}; valid "
        f"families: {', '.join(task_suite.registry.names())}",
      )
      counts[family] = counts.get(family, 0) + int(count)
    return counts

  def augment_config(self) -> task_suite.suite.AugmentConfig:
    """The sampler's augmentation settings."""
    return task_suite.suite.AugmentConfig(
      prob=self.augment_prob,
      scale_range=tuple(self.augment_range),
      kinds=tuple(self.augment_kinds),
      loss_prob=self.augment_loss_prob,
    )


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
    num_eval_tasks: number of test-split tasks (same family filters as
      training).
    num_steps: inner steps each task is trained for with ``theta``.
    keep_thetas: also export theta at every evaluation to
      ``WORKDIR/eval_thetas/step_NNNNNNN`` (a ``learned_opt`` checkpoint with
      the evaluation's metrics as metadata), so that the checkpoint to ship
      can be chosen afterwards by longer rollouts (``lopt evaluate``).
  """

  every: int = 100
  num_eval_tasks: int = 4
  num_steps: int = 200
  keep_thetas: bool = True

  def __post_init__(self):
    _require(self.every >= 0, "every must be >= 0 (0: never)")
    _require(
      self.num_eval_tasks >= 1,
      f"num_eval_tasks must be >= 1, got {self.num_eval_tasks}",
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
      ``estimator.num_pairs``; 1 = one device using all cores. Ignored on
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
