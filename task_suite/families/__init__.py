"""Task families, and generic helpers for their specs.

Each family module defines ``XSpec(base.TaskSpec)`` (with a ``family``
ClassVar), ``XTask(base.Task)`` and ``XFamily`` with attributes ``name`` and
``spec_type`` and methods ``sample(key) -> XSpec`` (deterministic in the key)
and ``task(spec) -> XTask`` (memoized per spec). ``task_suite.registry`` maps
family names to family instances; ``common`` holds the helpers of the
model families (activations, inits, image batches, menus, ``cap``).

Public API: the family modules ``mlp``, ``conv``, ``rnn_lm``, ``vae``,
``mlp_ae``, ``quadratic``, ``analytic`` (registered as ``test_functions``)
and ``regression`` (import them by name, e.g. ``from task_suite.families
import quadratic``), ``common``, and the two helpers below for writing a
family: ``dynamic_arrays`` and ``check_spec``. To add a family, write such a
module and list its family in ``task_suite/registry.py`` (or, outside this
package, ``task_suite.register_family``).
"""

import dataclasses
import importlib
import typing
from typing import Any

import jax
import jax.numpy as jnp

from task_suite import base

__all__ = ["check_spec", "dynamic_arrays"]


def dynamic_arrays(spec: base.TaskSpec) -> dict[str, jax.Array]:
  """The dynamic fields of ``spec`` as scalar arrays (a Task's ``dynamic``).

  Floats become float32, ints int32 and bools bool, so every task of one
  signature has the same dtypes and ``stack_tasks`` never retraces.
  """
  hints = typing.get_type_hints(type(spec))
  out = {}
  for f in dataclasses.fields(spec):
    if f.metadata.get("static", True):
      continue
    value = getattr(spec, f.name)
    dtype = {float: jnp.float32, int: jnp.int32, bool: jnp.bool_}.get(
      hints[f.name]
    )
    if dtype is None:
      raise TypeError(
        f"dynamic field {f.name!r} of {spec.family} must be float, int or "
        f"bool, not {hints[f.name]}"
      )
    out[f.name] = jnp.asarray(value, dtype)
  return out


def check_spec(family: Any, spec: base.TaskSpec) -> None:
  """Raises a clear error if ``spec`` is not a spec of ``family``."""
  if not isinstance(spec, family.spec_type):
    raise TypeError(
      f"the {family.name} family builds tasks from {family.spec_type.__name__}"
      f", got {type(spec).__name__}; use task_suite.get_task(spec) to dispatch"
      " on the spec's family."
    )


def __getattr__(name: str) -> Any:
  # ``families.test_functions`` was renamed ``families.analytic``; code
  # written before (``from task_suite.families import test_functions``) keeps
  # working through this alias.
  if name == "test_functions":
    return importlib.import_module("task_suite.families.analytic")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
