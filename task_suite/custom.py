"""Bring your own task: a model's init, loss and batch functions as a Task.

``make_task`` turns plain functions (a haiku or flax model's ``init`` and
``apply`` wrapped in a loss, and a batch sampler) into a ``Task`` that any
optimizer of this project trains, that augmentation wraps and that the
engine ``vmap``s. ``register_task`` also registers it as a task family
under its name, so everything that names tasks reaches it: spec names
(``get_task("my_mlp(;seed=0)")``, ``lopt evaluate --tasks``) and family
lists (``sample_suite(weights={"my_mlp": 1.0})``, a meta-training
config's ``suite.families``). Register it where that process starts, e.g.
at the top of the meta-training config file.

The functions:
  * ``init_fn(key) -> params``;
  * ``loss_fn(params, key, batch) -> scalar`` (``key`` for dropout etc.);
  * ``batch_fn(key, split) -> batch``, or ``batch_fn(key, split, data)``
    when ``data`` (a pytree of arrays) is given: it then travels as the
    task's data, a jit argument instead of a constant baked into the
    compiled code. ``split`` is "train", "valid" or "test". The batch is
    drawn inside ``jit``: sample it with ``jax.random``, not numpy.

The meta-loss needs ``normalize(loss)``: about 1 at init, 0 at a perfect
fit. By default it is ``loss / reference_loss``, the reference being the
mean train loss at 4 random inits (measured once, when the task is built);
for a loss that can be negative, pass ``normalize_fn``.

The functions are part of the task's static signature (compared by
identity, printed by name), so the same functions share one compilation
and new functions never reuse a stale one. A registered family's specs
differ only in ``seed``, which is folded into the init and batch keys: the
suite draws distinct instances (inits and data streams) of the one task.

Example:
  >>> net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([32, 1])(x)))
  >>> task = task_suite.make_task(
  ...     init_fn=lambda key: net.init(key, jnp.zeros([1, 4])),
  ...     loss_fn=lambda p, key, b: jnp.mean((net.apply(p, b["x"]) - b["y"]) ** 2),
  ...     batch_fn=lambda key, split: make_batch(key),
  ...     name="my_mlp")
"""

from collections.abc import Callable
import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from task_suite import base, families, registry
from task_suite.families import common

NUM_REFERENCE_INITS = 4


class TaskFunctions(NamedTuple):
  """A custom task's functions (static: compared by identity)."""

  name: str
  init_fn: Callable[..., Any]
  loss_fn: Callable[..., Any]
  batch_fn: Callable[..., Any]
  normalize_fn: Callable[..., Any] | None
  batch_takes_data: bool

  def __repr__(self) -> str:
    # The repr orders signature groups (``group_by_signature``): it must be
    # the same in every process, so no function addresses.
    return f"TaskFunctions({self.name!r})"


@dataclasses.dataclass(frozen=True)
class CustomSpec(base.TaskSpec):
  """A spec of a registered custom task (one subclass per registered name).

  Attributes:
    seed: folded into the init and batch keys (distinct task instances).
  """

  family: ClassVar[str] = "custom"
  functions: ClassVar[TaskFunctions | None] = None
  seed: int = base.dynamic_field(default=0)

  @property
  def signature(self) -> tuple[Any, ...]:
    """The family name and its functions."""
    return (self.family, ("functions", self.functions))


class CustomTask(base.Task):
  """A task of user functions; ``dynamic`` is its seed and reference loss."""

  @property
  def functions(self) -> TaskFunctions:
    return self.static["functions"]

  def _key(self, key: jax.Array) -> jax.Array:
    return jax.random.fold_in(key, self.dynamic["seed"])

  def init(self, key: jax.Array) -> base.Params:
    """``init_fn`` with the spec's seed folded into ``key``."""
    return self.functions.init_fn(self._key(key))

  def loss(self, params, key, batch) -> jax.Array:
    """``loss_fn(params, key, batch)``."""
    return self.functions.loss_fn(params, key, batch)

  def batch(self, key: jax.Array, split: str) -> base.Batch:
    """``batch_fn`` with the spec's seed folded into ``key``."""
    common.check_split(split)
    fns = self.functions
    if fns.batch_takes_data:
      return fns.batch_fn(self._key(key), split, self.data)
    return fns.batch_fn(self._key(key), split)

  def normalize(self, loss: jax.Array) -> jax.Array:
    """``normalize_fn(loss)``, else ``loss / reference_loss`` (capped)."""
    if self.functions.normalize_fn is not None:
      return common.cap(self.functions.normalize_fn(loss))
    return common.cap(loss / self.dynamic["reference"])


@jax.jit
def _mean_init_loss(task: CustomTask) -> jax.Array:
  keys = jax.random.split(jax.random.key(0), NUM_REFERENCE_INITS)

  def one(key):
    k_init, k_batch, k_loss = jax.random.split(key, 3)
    params = task.init(k_init)
    return task.loss(params, k_loss, task.batch(k_batch, "train"))

  return jnp.mean(jax.vmap(one)(keys))


def _build(signature, functions, seed, data, reference_loss) -> CustomTask:
  """The task; measures the reference loss when it is needed and not given."""
  dynamic = {
    "seed": jnp.asarray(seed, jnp.int32),
    "reference": jnp.asarray(reference_loss or 1.0, jnp.float32),
  }
  task = CustomTask(signature, dynamic, data if data is not None else {})
  if functions.normalize_fn is not None or reference_loss is not None:
    return task
  reference = float(_mean_init_loss(task))
  if not reference > 0 or reference == float("inf"):
    raise ValueError(
      f"task {functions.name!r}: its mean loss at init is {reference}, not a "
      "positive finite number, so loss / reference_loss cannot normalize it; "
      "pass normalize_fn (about 1 at init, 0 at a perfect fit) or "
      "reference_loss."
    )
  dynamic["reference"] = jnp.asarray(reference, jnp.float32)
  return task.replace(dynamic=dynamic)


def _functions(name, init_fn, loss_fn, batch_fn, normalize_fn, data):
  for arg, fn in (("init_fn", init_fn), ("loss_fn", loss_fn)):
    if not callable(fn):
      raise TypeError(f"{arg} must be callable, got {type(fn).__name__}")
  if not callable(batch_fn):
    raise TypeError(f"batch_fn must be callable, got {type(batch_fn)}")
  return TaskFunctions(
    name, init_fn, loss_fn, batch_fn, normalize_fn, data is not None
  )


def make_task(
  init_fn: Callable[[jax.Array], base.Params],
  loss_fn: Callable[[base.Params, jax.Array, base.Batch], jax.Array],
  batch_fn: Callable[..., base.Batch],
  *,
  name: str = "custom",
  normalize_fn: Callable[[jax.Array], jax.Array] | None = None,
  reference_loss: float | None = None,
  data: Any = None,
) -> CustomTask:
  """A task of user functions (not registered; see ``register_task``).

  Args:
    init_fn: ``key -> params``.
    loss_fn: ``(params, key, batch) -> scalar loss``.
    batch_fn: ``(key, split) -> batch``, or ``(key, split, data)`` when
      ``data`` is given.
    name: the task's name (in its signature and in messages).
    normalize_fn: ``loss -> normalized loss`` (~1 at init, ~0 at best);
      default ``loss / reference_loss``.
    reference_loss: the loss that normalizes to 1; default the mean train
      loss at 4 random inits, measured now.
    data: a pytree of arrays passed to ``batch_fn`` (the task's data).

  Returns:
    The task (seed 0).

  Raises:
    TypeError: a function is not callable.
    ValueError: the default normalization does not apply (see above).
  """
  functions = _functions(name, init_fn, loss_fn, batch_fn, normalize_fn, data)
  signature = (name, ("functions", functions))
  return _build(signature, functions, 0, data, reference_loss)


class CustomFamily:
  """A registered custom task as a family: specs differ only in ``seed``."""

  def __init__(self, spec_type: type[CustomSpec], data, reference_loss):
    self.name = spec_type.family
    self.spec_type = spec_type
    self._data = data
    self._reference_loss = reference_loss
    self._cache: dict[CustomSpec, CustomTask] = {}

  @property
  def functions(self) -> TaskFunctions:
    return self.spec_type.functions

  def sample(self, key: jax.Array) -> CustomSpec:
    """A spec with a seed drawn from ``key``."""
    return self.spec_type(seed=int(common.host_rng(key).integers(2**31 - 1)))

  def task(self, spec: CustomSpec) -> CustomTask:
    """Builds (and memoizes) the task of ``spec``."""
    families.check_spec(self, spec)
    if spec not in self._cache:
      if self._reference_loss is None and self.functions.normalize_fn is None:
        # One measurement serves every seed of the family.
        first = _build(spec.signature, self.functions, 0, self._data, None)
        self._reference_loss = float(first.dynamic["reference"])
      self._cache[spec] = _build(
        spec.signature,
        self.functions,
        spec.seed,
        self._data,
        self._reference_loss,
      )
    return self._cache[spec]


def register_task(
  name: str,
  init_fn: Callable[[jax.Array], base.Params],
  loss_fn: Callable[[base.Params, jax.Array, base.Batch], jax.Array],
  batch_fn: Callable[..., base.Batch],
  *,
  normalize_fn: Callable[[jax.Array], jax.Array] | None = None,
  reference_loss: float | None = None,
  data: Any = None,
  replace: bool = False,
) -> CustomFamily:
  """Registers user functions as the task family ``name``.

  Afterwards ``get_task(f"{name}(;seed=0)")``, ``sample_suite(weights={name:
  1.0})`` and a config's ``suite.families = (name,)`` reach it. Arguments
  are those of ``make_task``.

  Args:
    name: the family name (a Python identifier, not a built-in family's).
    init_fn: see ``make_task``.
    loss_fn: see ``make_task``.
    batch_fn: see ``make_task``.
    normalize_fn: see ``make_task``.
    reference_loss: see ``make_task`` (measured at the first ``task()``).
    data: see ``make_task``.
    replace: allow replacing an earlier registration of ``name``.

  Returns:
    The registered family.
  """
  functions = _functions(name, init_fn, loss_fn, batch_fn, normalize_fn, data)
  # The family name is a ClassVar of the spec type, which names, parses and
  # dispatches specs; a subclass per registered name keeps that machinery.
  spec_type = type(
    f"CustomSpec_{name}",
    (CustomSpec,),
    {"family": name, "functions": functions, "__module__": __name__},
  )
  spec_type = dataclasses.dataclass(frozen=True)(spec_type)
  family = CustomFamily(spec_type, data, reference_loss)
  registry.register_family(family, replace=replace)
  return family
