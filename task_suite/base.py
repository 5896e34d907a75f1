"""Task, TaskSpec and TaskFamily: the inner problems optimizers are trained on.

A ``TaskSpec`` is a frozen dataclass of hyperparameters. Fields are either
*static* (they change shapes or code: widths, depth, batch size, dataset) or
*dynamic* (traced values: activation index, init scale, loss scale, data seed).
Specs are hashable, printable and have a stable name that parses back.

A ``Task`` is a pytree: its leaves are the dynamic values (``task.dynamic``)
and the in-memory data (``task.data``); its static part is tree metadata. So a
jitted function that takes a task as an argument compiles once per static
signature, and tasks of one signature stack into one task whose dynamic values
have a leading axis, which ``jax.vmap(f, in_axes=(vmap_axes(task), ...))``
maps over while the data is broadcast.

Example:
  >>> spec = task_suite.sample_suite(1, seed=0)[0]
  >>> task = task_suite.get_task(spec)
  >>> params = task.init(jax.random.key(0))
  >>> batch = task.batch(jax.random.key(1), "train")
  >>> loss, grads = task.value_and_grad(params, jax.random.key(2), batch)
"""

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp

Params = Any
Batch = Any
SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------- TaskSpec


def static_field(**kwargs) -> Any:
  """A TaskSpec field that changes shapes or code (part of the signature)."""
  return dataclasses.field(metadata={"static": True}, **kwargs)


def dynamic_field(**kwargs) -> Any:
  """A TaskSpec field that is a traced value (not part of the signature)."""
  return dataclasses.field(metadata={"static": False}, **kwargs)


def round_sig(x: float, digits: int = 3) -> float:
  """Rounds to ``digits`` significant digits, so spec names stay readable."""
  if x == 0 or not math.isfinite(x):
    return float(x)
  return float(f"{x:.{digits}g}")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Base of all task specs; each family subclasses it with typed fields.

  Every field must be declared with ``static_field`` or ``dynamic_field`` and
  typed ``int``, ``float``, ``str``, ``bool`` or ``tuple[int, ...]``.

  The name is ``family(static fields;dynamic fields)``, e.g.
  ``mlp(hidden=32x32,batch_size=64;activation=relu,init_scale=1.0)``.
  """

  family: ClassVar[str]

  @classmethod
  def static_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if _is_static(f))

  @classmethod
  def dynamic_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if not _is_static(f))

  @property
  def signature(self) -> tuple[Any, ...]:
    """Hashable static signature: specs with equal signatures share code."""
    return (self.family,) + tuple(
      (n, getattr(self, n)) for n in self.static_names()
    )

  @property
  def name(self) -> str:
    """Stable human-readable name; ``parse_name(spec.name) == spec``."""
    fmt = lambda names: ",".join(
      f"{n}={_format_value(getattr(self, n))}" for n in names
    )
    return (
      f"{self.family}({fmt(self.static_names())};{fmt(self.dynamic_names())})"
    )

  def __str__(self) -> str:
    return self.name


def _is_static(f: dataclasses.Field) -> bool:
  if "static" not in f.metadata:
    raise TypeError(
      f"TaskSpec field {f.name!r} must be declared with static_field() or "
      "dynamic_field()."
    )
  return f.metadata["static"]


def _format_value(v: Any) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, tuple):
    return "x".join(str(int(e)) for e in v) if v else "-"
  if isinstance(v, float):
    return repr(v)
  return str(v)


def _parse_value(text: str, annotation: Any, field_name: str) -> Any:
  try:
    if annotation is bool:
      if text not in ("true", "false"):
        raise ValueError(text)
      return text == "true"
    if annotation is int:
      return int(text)
    if annotation is float:
      return float(text)
    if annotation is str:
      return text
    origin = typing.get_origin(annotation)
    if origin is tuple:
      return () if text == "-" else tuple(int(e) for e in text.split("x"))
  except ValueError as e:
    raise ValueError(
      f"bad value {text!r} for field {field_name!r} ({annotation})"
    ) from e
  raise TypeError(f"unsupported TaskSpec field type {annotation}")


def parse_spec_fields(spec_cls: type[TaskSpec], body: str) -> TaskSpec:
  """Parses the part of a name inside the parentheses into ``spec_cls``.

  Args:
    spec_cls: the family's TaskSpec subclass.
    body: ``"k=v,k=v;k=v"``.

  Returns:
    The spec.

  Raises:
    ValueError: if a field is missing, unknown or malformed.
  """
  hints = typing.get_type_hints(spec_cls)
  values: dict[str, Any] = {}
  for part in body.replace(";", ",").split(","):
    if not part:
      continue
    key, sep, text = part.partition("=")
    if not sep or key not in hints or key == "family":
      raise ValueError(
        f"unknown field {key!r} in {spec_cls.family} spec; fields are "
        f"{[f.name for f in dataclasses.fields(spec_cls)]}"
      )
    values[key] = _parse_value(text, hints[key], key)
  missing = [
    f.name for f in dataclasses.fields(spec_cls) if f.name not in values
  ]
  if missing:
    raise ValueError(f"{spec_cls.family} spec name lacks fields {missing}")
  return spec_cls(**values)


# -------------------------------------------------------------------- Task


class Task:
  """Base of all tasks: a pytree of dynamic values and data, static metadata.

  Subclasses implement ``init``, ``loss``, ``batch`` and ``normalize`` using
  ``self.static`` (a mapping of the static spec fields), ``self.dynamic``
  (dict of scalar arrays) and ``self.data`` (dict of arrays, may be empty).
  Subclasses are registered as pytrees automatically.

  Attributes:
    static: read-only mapping of static field name -> value.
    signature: the spec's static signature (tree metadata).
    dynamic: dict name -> array, per-instance traced values.
    data: dict name -> array, in-memory dataset shared by all instances.
  """

  def __init__(self, signature: tuple[Any, ...], dynamic: dict, data: dict):
    self.signature = signature
    self.dynamic = dynamic
    self.data = data

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    jax.tree_util.register_pytree_node(
      cls, lambda t: ((t.dynamic, t.data), t.signature), cls._unflatten
    )

  @classmethod
  def _unflatten(cls, signature, children):
    task = object.__new__(cls)
    task.signature = signature
    task.dynamic, task.data = children
    return task

  @property
  def static(self) -> types.MappingProxyType:
    return types.MappingProxyType(dict(self.signature[1:]))

  @property
  def family(self) -> str:
    return self.signature[0]

  def replace(self, **kwargs) -> "Task":
    """A copy with ``dynamic`` and/or ``data`` replaced."""
    children = (
      kwargs.pop("dynamic", self.dynamic),
      kwargs.pop("data", self.data),
    )
    if kwargs:
      raise TypeError(f"unknown Task fields {sorted(kwargs)}")
    return type(self)._unflatten(self.signature, children)

  # The task API. ------------------------------------------------------------

  def init(self, key: jax.Array) -> Params:
    """Samples initial parameters (float pytree)."""
    raise NotImplementedError

  def loss(self, params: Params, key: jax.Array, batch: Batch) -> jax.Array:
    """Scalar training objective on ``batch``; ``key`` drives e.g. VAE noise."""
    raise NotImplementedError

  def eval_loss(
    self, params: Params, key: jax.Array, batch: Batch
  ) -> jax.Array:
    """The loss that evaluations report on ``batch``; by default ``loss``.

    A task whose ``loss`` is an exact objective plus a zero-mean noise term
    that only models gradient noise returns the objective itself: near the
    optimum, a few batches' estimate of it is dominated by that noise, so
    comparing two optimizers' estimates would compare noise draws.
    """
    return self.loss(params, key, batch)

  def value_and_grad(
    self, params: Params, key: jax.Array, batch: Batch
  ) -> tuple[jax.Array, Params]:
    """Loss and gradient; overridable (e.g. by an ES-estimated gradient)."""
    return jax.value_and_grad(self.loss)(params, key, batch)

  def batch(self, key: jax.Array, split: str) -> Batch:
    """Samples a batch on device from ``self.data`` (inside jit)."""
    raise NotImplementedError

  def normalize(self, loss: jax.Array) -> jax.Array:
    """Maps a loss to a task-agnostic scale for the meta-loss.

    Contract: about 1 for a freshly initialised model, about 0 at a good
    solution, capped (at most ~10) for divergent runs; NaN stays NaN so the
    engine can detect it.
    """
    raise NotImplementedError


class TaskFamily(Protocol):
  """A sampler of specs of one kind and a builder of their tasks."""

  name: str
  spec_type: type[TaskSpec]

  def sample(self, key: jax.Array) -> TaskSpec:
    """Draws a spec deterministically from ``key``."""
    ...

  def task(self, spec: TaskSpec) -> Task:
    """Builds the task of ``spec`` (memoized per spec)."""
    ...


# ---------------------------------------------------- vectorizing helpers


def stack_tasks(tasks: typing.Sequence[Task]) -> Task:
  """Stacks same-signature tasks into one with a leading ``[tasks]`` axis.

  The data is shared, not stacked (all tasks of a signature use the same
  in-memory dataset).

  Raises:
    ValueError: if the tasks have different signatures.
  """
  if not tasks:
    raise ValueError("stack_tasks needs at least one task")
  first = tasks[0]
  for t in tasks[1:]:
    if t.signature != first.signature:
      raise ValueError(
        f"cannot stack tasks of different static signatures: "
        f"{first.signature} vs {t.signature}; group them first with "
        "task_suite.group_by_signature."
      )
  dynamic = jax.tree.map(lambda *xs: jnp.stack(xs), *[t.dynamic for t in tasks])
  return first.replace(dynamic=dynamic)


def vmap_axes(task: Task, axis: int | None = 0) -> Task:
  """``in_axes`` for ``jax.vmap``: maps the dynamic values, broadcasts data."""
  return task.replace(
    dynamic=jax.tree.map(lambda _: axis, task.dynamic), data=None
  )


def index_task(stacked: Task, index: jax.Array) -> Task:
  """The ``index``-th task of a stacked task (traceable)."""
  return stacked.replace(
    dynamic=jax.tree.map(lambda x: x[index], stacked.dynamic)
  )
