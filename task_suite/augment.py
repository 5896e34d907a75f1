"""Task augmentation: reparameterized weights and scaled losses.

An augmented task trains ``w'`` where the inner task's weights are
``w = s * w'`` (VeLO's and Celo's ``ReparamWeights``): the function is the
same, ``init`` returns ``w / s``, gradients are multiplied by ``s`` and the
step the optimizer must take is divided by ``s``. The loss can also be
multiplied by a constant ``c`` (and ``normalize`` divides it back out, so the
meta-loss does not see ``c``). A learned optimizer meta-trained on such
tasks must set its step magnitude from what it observes, not from a fixed
scale.

``s`` is one scalar (``global``), one per tensor (``per_tensor``) or one per
entry (``per_param``), log-uniform in ``[low, high]``; ``c`` is log-uniform
in the same range. ``kind="none"`` leaves the weights alone (with
``loss_scale=false``, the identity).

Everything about an augmentation is a *traced* value: the kind, the
loss-scale switch, the range and the seed the scales are drawn from. So all
augmented specs of one inner signature share one compilation, whatever their
draws and kinds, and ``sample_suite(..., augment_prob=p)`` (which wraps the
specs it does not augment in the identity augmentation) keeps the suite's
number of signatures. The price is that each loss evaluation draws the
per-entry uniforms of all three kinds (one threefry draw per parameter), a
small cost next to a learned optimizer's per-parameter MLP.

An augmented spec is ``AugmentedSpec(task=inner_spec, augmentation=...)``.
Its name is the inner name, ``+``, and the augmentation's name, e.g.
``quadratic(dim=8;...)+augment(;kind=per_tensor,loss_scale=true,seed=3,
low=0.001,high=1000.0)``; ``task_suite.parse_name`` reads it back and
``task_suite.get_task`` builds it. It belongs to its inner spec's family and
split, so augmenting never moves a test task into the train split.

Example:
  >>> spec = augment.AugmentedSpec(inner_spec, augment.Augmentation(
  ...     kind="per_param", loss_scale=True, seed=7))
  >>> task = task_suite.get_task(spec)
  >>> params = task.init(key)   # w' = w / s
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from task_suite import base

KINDS = ("none", "global", "per_tensor", "per_param")
MAX_RANGE = (1e-3, 1e3)
SEPARATOR = "+"


@dataclasses.dataclass(frozen=True)
class Augmentation(base.TaskSpec):
  """The augmentation part of a spec (it reuses TaskSpec's naming only).

  Every field is dynamic (traced), so augmentations never add signatures.

  Attributes:
    kind: one of ``KINDS``: how many weight scales ``s`` there are.
    loss_scale: whether the loss is multiplied by a drawn constant ``c``.
    seed: the scales are drawn from ``jax.random.key(seed)``.
    low: lower end of the log-uniform range of ``s`` and ``c``.
    high: upper end of that range.
  """

  family: ClassVar[str] = "augment"
  kind: str = base.dynamic_field(default="global")
  loss_scale: bool = base.dynamic_field(default=False)
  seed: int = base.dynamic_field(default=0)
  low: float = base.dynamic_field(default=MAX_RANGE[0])
  high: float = base.dynamic_field(default=MAX_RANGE[1])

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(
        f"unknown augmentation kind {self.kind!r}; choose one of {KINDS}"
      )
    if not 0 <= self.seed < 2**31:
      raise ValueError(
        f"augmentation seed must be in [0, 2**31), got {self.seed}"
      )
    if not (0 < self.low <= self.high and math.isfinite(self.high)):
      raise ValueError(
        f"augmentation range needs 0 < low <= high < inf, got "
        f"[{self.low}, {self.high}]"
      )

  def arrays(self) -> dict[str, jax.Array]:
    """The traced values of this augmentation (an AugmentedTask's)."""
    return {
      "kind": jnp.asarray(KINDS.index(self.kind), jnp.int32),
      "loss_scale": jnp.asarray(self.loss_scale, jnp.bool_),
      "seed": jnp.asarray(self.seed, jnp.int32),
      "log_low": jnp.asarray(math.log(self.low), jnp.float32),
      "log_high": jnp.asarray(math.log(self.high), jnp.float32),
    }


IDENTITY = Augmentation(kind="none", loss_scale=False, low=1.0, high=1.0)


@dataclasses.dataclass(frozen=True)
class AugmentedSpec(base.TaskSpec):
  """A task spec with an augmentation.

  Attributes:
    task: the inner task's spec (any family's, not itself augmented).
    augmentation: how its weights and loss are rescaled.
  """

  task: base.TaskSpec = dataclasses.field(metadata={"static": True})
  augmentation: Augmentation = dataclasses.field(
    metadata={"static": False}, default=IDENTITY
  )

  def __post_init__(self):
    if isinstance(self.task, AugmentedSpec) or not isinstance(
      self.task, base.TaskSpec
    ):
      raise TypeError(
        "AugmentedSpec.task must be a plain (not augmented) TaskSpec, got "
        f"{type(self.task).__name__}"
      )
    if not isinstance(self.augmentation, Augmentation):
      raise TypeError(
        "AugmentedSpec.augmentation must be an Augmentation, got "
        f"{type(self.augmentation).__name__}"
      )

  @property
  def family(self) -> str:  # the inner family's, for reports by family
    return self.task.family

  @property
  def signature(self) -> tuple[Any, ...]:
    """The inner signature marked as augmented (the draws are traced)."""
    return self.task.signature + (("augmented", True),)

  @property
  def name(self) -> str:
    """``inner name + augmentation name``; ``parse_name`` reads it back."""
    return f"{self.task.name}{SEPARATOR}{self.augmentation.name}"


def split_name(name: str) -> tuple[str, str | None]:
  """Splits a spec name into the inner name and the augmentation's body.

  Returns:
    ``(inner_name, body)`` where ``body`` is the text inside
    ``augment(...)``, or None if the name has no augmentation.
  """
  marker = f"{SEPARATOR}{Augmentation.family}("
  inner, sep, rest = name.strip().rpartition(marker)
  if not sep:
    return name, None
  if not rest.endswith(")"):
    raise ValueError(f"malformed augmentation in task name {name!r}")
  return inner, rest[:-1]


def parse_augmentation(body: str) -> Augmentation:
  """Parses the text inside ``augment(...)``."""
  return base.parse_spec_fields(Augmentation, body)


# -------------------------------------------------------------------- task


def _log_uniform(key, shape, log_low, log_high):
  """``log s`` for s log-uniform in [exp(log_low), exp(log_high)]."""
  u = jax.random.uniform(key, shape, jnp.float32)
  return log_low + (log_high - log_low) * u


def weight_scales(aug: dict[str, jax.Array], params: base.Params) -> Any:
  """The scales ``s`` (a tree like ``params``) of a traced augmentation.

  Deterministic in ``aug["seed"]`` and the shapes of ``params``: the global
  scale, the per-tensor scales and the per-entry scales are all drawn and
  ``aug["kind"]`` selects one, so the kind is a traced value too.
  """
  leaves, treedef = jax.tree.flatten(params)
  k_global, k_tensor, k_param = jax.random.split(
    jax.random.fold_in(jax.random.key(aug["seed"]), 0), 3
  )
  lo, hi, kind = aug["log_low"], aug["log_high"], aug["kind"]
  log_global = _log_uniform(k_global, (), lo, hi)
  scales = []
  for i, leaf in enumerate(leaves):
    log_tensor = _log_uniform(jax.random.fold_in(k_tensor, i), (), lo, hi)
    log_param = _log_uniform(jax.random.fold_in(k_param, i), leaf.shape, lo, hi)
    log_s = jnp.where(
      kind == KINDS.index("per_param"),
      log_param,
      jnp.where(kind == KINDS.index("per_tensor"), log_tensor, log_global),
    )
    log_s = jnp.where(kind == KINDS.index("none"), 0.0, log_s)
    scales.append(jnp.exp(log_s))
  return treedef.unflatten(scales)


def loss_scale(aug: dict[str, jax.Array]) -> jax.Array:
  """The loss multiplier ``c`` of a traced augmentation (1 when off)."""
  key = jax.random.fold_in(jax.random.key(aug["seed"]), 1)
  log_c = _log_uniform(key, (), aug["log_low"], aug["log_high"])
  return jnp.where(aug["loss_scale"], jnp.exp(log_c), 1.0)


def _times(scales: Any, tree: Any) -> Any:
  return jax.tree.map(lambda s, x: (s * x).astype(x.dtype), scales, tree)


class AugmentedTask(base.Task):
  """A task trained in ``w' = w / s``, with its loss times ``c``.

  ``dynamic`` holds the inner task (its data removed, so it stacks and maps
  like any dynamic value) under ``"task"`` and the augmentation's traced
  values; ``data`` is the inner task's data (shared, not mapped).
  """

  @property
  def inner(self) -> base.Task:
    """The inner task."""
    return self.dynamic["task"].replace(data=self.data)

  @property
  def augmentation(self) -> dict[str, jax.Array]:
    """The traced augmentation values."""
    return {k: v for k, v in self.dynamic.items() if k != "task"}

  def scales(self, params: base.Params) -> tuple[Any, jax.Array]:
    """``(s, c)``: the weight scales (a tree like params) and loss scale."""
    aug = self.augmentation
    return weight_scales(aug, params), loss_scale(aug)

  def init(self, key: jax.Array) -> base.Params:
    """The inner init ``w``, divided by ``s``."""
    params = self.inner.init(key)
    s, _ = self.scales(params)
    return jax.tree.map(lambda s, w: (w / s).astype(w.dtype), s, params)

  def loss(self, params, key, batch) -> jax.Array:
    """``c * inner.loss(s * w')``."""
    s, c = self.scales(params)
    return c * self.inner.loss(_times(s, params), key, batch)

  def eval_loss(self, params, key, batch) -> jax.Array:
    """``c * inner.eval_loss(s * w')``."""
    s, c = self.scales(params)
    return c * self.inner.eval_loss(_times(s, params), key, batch)

  def value_and_grad(self, params, key, batch):
    """The inner ``value_and_grad`` at ``s * w'``, chained: ``(cL, c s g)``.

    Going through the inner task's ``value_and_grad`` keeps an inner task's
    own gradient (e.g. an ES estimate) in force.
    """
    s, c = self.scales(params)
    value, grads = self.inner.value_and_grad(_times(s, params), key, batch)
    return c * value, _times(jax.tree.map(lambda x: c * x, s), grads)

  def batch(self, key: jax.Array, split: str) -> base.Batch:
    """The inner task's batch."""
    return self.inner.batch(key, split)

  def normalize(self, loss: jax.Array) -> jax.Array:
    """The inner normalization of ``loss / c``: the meta-loss ignores ``c``."""
    return self.inner.normalize(loss / loss_scale(self.augmentation))


def augment_task(
  task: base.Task,
  augmentation: Augmentation,
  signature: tuple[Any, ...] | None = None,
) -> AugmentedTask:
  """Wraps any task with an augmentation.

  Args:
    task: the inner task (a ``base.Task``; any family's or ``make_task``'s).
    augmentation: the augmentation.
    signature: the augmented task's static signature; default the inner
      task's marked as augmented (what ``AugmentedSpec.signature`` gives).

  Returns:
    The augmented task.
  """
  if isinstance(task, AugmentedTask):
    raise TypeError("the task is already augmented")
  if signature is None:
    signature = task.signature + (("augmented", True),)
  dynamic = {"task": task.replace(data=None), **augmentation.arrays()}
  return AugmentedTask(signature, dynamic, task.data)
