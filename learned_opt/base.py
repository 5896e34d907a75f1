"""The interface every optimizer in the project is used through.

A learned optimizer is a frozen dataclass whose fields are its architecture
(sizes, decays); its weights (``theta``) are a separate pytree. Calling
``optimizer(theta)`` gives a plain ``optax.GradientTransformationExtraArgs``,
so learned and hand-designed optimizers are interchangeable everywhere: in
inner training, in evaluation, and as the outer optimizer of meta-training.

The extra arguments of ``update`` are optax's own convention:

* ``value``: the current training loss (a scalar). Learned optimizers need
  it at every step; hand-designed ones ignore it.
* ``valid_value``: an optional validation loss. A NaN ``valid_value`` means
  "no validation loss at this step", so a traced loop can supply it on some
  steps only without changing the call signature.

The learned optimizers check at trace time that ``value`` is a scalar and
that the gradients have the parameters' tree and shapes. Bad values never
poison their state:

* a non-finite loss is not folded into their loss statistics;
* a NaN or +-inf gradient entry reads as 0 (no information), so it never
  reaches the moments (wrap the transform in ``optax.apply_if_finite`` to
  skip such steps altogether);
* a tensor whose largest gradient entry exceeds ``features.MAX_GRAD``
  (2^24) is scaled down as a whole to it before any square is taken, so no
  second moment, norm or sum of squares overflows float32 for any finite
  gradient (the features are normalized per tensor, so the step changes
  little);
* a zero-size parameter gets an empty update.

Example:
  >>> lopt = learned_opt.MLPLOpt()
  >>> theta = lopt.init(jax.random.key(0))
  >>> tx = lopt.optimizer(theta)
  >>> state = tx.init(params)
  >>> updates, state = tx.update(grads, state, params, value=loss)
  >>> params = optax.apply_updates(params, updates)
"""

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

MetaParams = Any  # a pytree of float arrays (theta)
Params = Any  # a pytree of float arrays (inner parameters)


@dataclasses.dataclass(frozen=True)
class LearnedOptimizer(abc.ABC):
  """Base class of learned optimizers: architecture as fields, theta apart.

  Subclasses are frozen dataclasses (hashable, so they can be closed over by
  jitted functions without retracing) and set ``architecture``, the name under
  which ``learned_opt.load`` finds them.
  """

  architecture: ClassVar[str]

  @abc.abstractmethod
  def init(self, key: jax.Array) -> MetaParams:
    """Samples initial meta-parameters.

    Args:
      key: a PRNG key.

    Returns:
      theta, a pytree of float32 arrays.
    """

  @abc.abstractmethod
  def optimizer(
    self, theta: MetaParams
  ) -> optax.GradientTransformationExtraArgs:
    """Returns the optax transform that applies this optimizer with ``theta``.

    Args:
      theta: meta-parameters from ``init`` (or a trained checkpoint).

    Returns:
      A transform whose ``update(grads, state, params, *, value,
      valid_value=None)`` returns additive updates.
    """

  def config(self) -> dict[str, Any]:
    """The architecture as JSON-compatible data, enough to rebuild ``self``."""
    fields = {}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      fields[f.name] = list(v) if isinstance(v, tuple) else v
    return {"architecture": self.architecture, "kwargs": fields}

  def num_meta_params(self) -> int:
    """Number of scalar meta-parameters (without materialising theta)."""
    shapes = jax.eval_shape(self.init, jax.random.key(0))
    return sum(int(x.size) for x in jax.tree.leaves(shapes))


# Entries one pass of the per-parameter MLP should cover across all vmapped
# instances: the vmapped arrays of a chunk are then ~[instances, 32, 2048/n]
# floats, which stay in a core's L2 cache. Measured on a 2-core CPU, 11k-param
# MLP, ES on 2 devices, same process: with 8 instances per device chunk 256
# ran 1.07-1.25x the inner steps/s of chunk 1024; with 64 per device chunk 128
# ran 1.15-1.35x; smaller chunks lost to per-iteration overhead.
_VMAPPED_ENTRIES_PER_CHUNK = 2048
_MIN_VMAPPED_CHUNK = 128


def for_vmapped_instances(lopt: Any, num_instances: int) -> Any:
  """``lopt`` with its ``chunk_size`` suited to ``num_instances`` under vmap.

  ``chunk_size`` is a speed knob of the per-parameter passes, not part of the
  math (results agree to float rounding). It is tuned for one instance; a
  population vmapped over ``num_instances`` inner runs per device wants
  chunks ``num_instances`` times smaller (a power of two, at least 128, never
  larger than ``lopt.chunk_size``). Optimizers without a ``chunk_size``
  field are returned unchanged.

  Args:
    lopt: a learned optimizer (any object; only dataclasses with an int
      ``chunk_size`` field are changed).
    num_instances: inner runs vmapped together on one device.

  Returns:
    ``lopt``, or a copy with a smaller ``chunk_size``.
  """
  if num_instances < 1:
    raise ValueError(f"num_instances must be >= 1, got {num_instances}.")
  chunk = getattr(lopt, "chunk_size", None)
  if not dataclasses.is_dataclass(lopt) or not isinstance(chunk, int):
    return lopt
  target = max(_VMAPPED_ENTRIES_PER_CHUNK // num_instances, 1)
  target = max(1 << (target.bit_length() - 1), _MIN_VMAPPED_CHUNK)
  if target >= chunk:
    return lopt
  return dataclasses.replace(lopt, chunk_size=target)


def check_params(params: Params, where: str = "optimizer") -> None:
  """Raises a clear error for parameter trees no optimizer can update.

  Runs at trace time (shapes and dtypes only), so it costs nothing in a jitted
  step.

  Args:
    params: the parameter pytree given to ``tx.init``.
    where: name of the caller, used in the message.

  Raises:
    ValueError: if the tree has no leaves, or a leaf is not floating point.
  """
  leaves_with_path = jax.tree_util.tree_leaves_with_path(params)
  if not leaves_with_path:
    raise ValueError(
      f"{where}: the parameter tree is empty ({params!r}); pass the pytree "
      "of float arrays the model trains (e.g. the output of model.init)."
    )
  for path, leaf in leaves_with_path:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
        f"{where}: parameter {jax.tree_util.keystr(path) or '<root>'} has "
        f"dtype {dtype}; only floating-point parameters can be optimized. "
        "Keep integer/boolean values (counters, masks, indices) out of the "
        "parameter tree, or cast them with .astype(jnp.float32)."
      )


def check_grads(grads: Any, params: Params, where: str) -> None:
  """Raises unless ``grads`` has the structure and leaf shapes of ``params``.

  The per-parameter passes flatten every leaf, so a transposed or batched
  gradient would otherwise be read entry by entry into the wrong places.
  Runs at trace time (structure and shapes only): free in a jitted step.

  Args:
    grads: the gradient pytree given to ``update``.
    params: the parameter pytree.
    where: name of the caller, used in the message.

  Raises:
    ValueError: naming the offending leaf's path and both shapes, or the
      leaves present in one tree only.
  """
  path_str = lambda path: jax.tree_util.keystr(path) or "<root>"
  if jax.tree.structure(grads) != jax.tree.structure(params):
    g_paths = [
      path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(grads)
    ]
    p_paths = [
      path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)
    ]
    missing = [p for p in p_paths if p not in g_paths]
    extra = [p for p in g_paths if p not in p_paths]
    detail = "; ".join(
      [f"no gradient for {', '.join(missing)}"] * bool(missing)
      + [f"gradients for unknown {', '.join(extra)}"] * bool(extra)
    ) or (
      f"tree structures differ: {jax.tree.structure(grads)} vs "
      f"{jax.tree.structure(params)}"
    )
    raise ValueError(
      f"{where}: the gradients do not have the parameters' tree structure "
      f"({detail}). Pass the gradients of the loss with respect to these "
      "params, e.g. jax.grad(loss_fn)(params)."
    )
  flat_params = jax.tree.leaves(params)
  for (path, g), p in zip(
    jax.tree_util.tree_leaves_with_path(grads), flat_params
  ):
    if jnp.shape(g) != jnp.shape(p):
      raise ValueError(
        f"{where}: the gradient of parameter {path_str(path)} has shape "
        f"{jnp.shape(g)}, but the parameter has shape {jnp.shape(p)}. Each "
        "gradient must have its parameter's shape (a transposed gradient, "
        "or per-example gradients not yet averaged over the batch?)."
      )


def require_value(value: Any, where: str, valid_value: Any = None) -> None:
  """Raises unless a learned optimizer's ``update`` got a scalar loss.

  Args:
    value: the ``value`` keyword given to ``update``.
    where: name of the optimizer, used in the message.
    valid_value: the ``valid_value`` keyword (None: not given).

  Raises:
    ValueError: if ``value`` is None, or ``value`` or ``valid_value`` is not
      a scalar (shape ``()``).
  """
  if value is None:
    raise ValueError(
      f"{where}.update needs the current training loss: call "
      "tx.update(grads, state, params, value=loss). Learned optimizers use "
      "the loss as an input feature at every step (jax.value_and_grad gives "
      "both the loss and the gradients)."
    )
  for arg, kind, x in (
    ("value", "training", value),
    ("valid_value", "validation", valid_value),
  ):
    if x is not None and jnp.shape(x) != ():
      raise ValueError(
        f"{where}.update needs the scalar {kind} loss as {arg} (shape ()), "
        f"got shape {jnp.shape(x)}: pass the mean loss, e.g. "
        f"{arg}=jnp.mean(per_example_losses)."
      )
