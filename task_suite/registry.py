"""The registry of task families: ``FAMILIES[name]`` is a family instance.

This is the only place that dispatches on a family name; a miss lists the
valid names. Family instances build their datasets lazily (on the first
``task(spec)`` that needs them), so importing the registry loads no data.
"""

import importlib

from task_suite import base
from task_suite.families import (
  analytic,
  conv,
  mlp,
  mlp_ae,
  quadratic,
  regression,
  rnn_lm,
  vae,
)

FAMILIES: dict[str, base.TaskFamily] = {
  family.name: family
  for family in (
    mlp.MLPFamily(),
    conv.ConvFamily(),
    rnn_lm.RNNLMFamily(),
    vae.VAEFamily(),
    mlp_ae.MLPAEFamily(),
    quadratic.QuadraticFamily(),
    analytic.AnalyticFamily(),
    regression.RegressionFamily(),
  )
}


# The suite's own families (the default mix draws from these).
BUILT_IN = tuple(FAMILIES)

# Families defined on top of the meta-training engine (which imports
# task_suite, not the reverse): name -> the module whose ``FAMILY`` is the
# instance, imported the first time the name is used. Not in ``FAMILIES``
# nor in the default mix; a config names them (``suite.extra_specs``).
DEFERRED: dict[str, str] = {
  "self_train": "meta_train.self_training.task",
}


def names() -> tuple[str, ...]:
  """Every family name: the suite's, the deferred ones and registered ones."""
  return tuple(FAMILIES) + tuple(DEFERRED)


def get_family(name: str) -> base.TaskFamily:
  """The family instance registered as ``name``.

  Raises:
    ValueError: if no family has that name (the message lists valid names).
  """
  if name in FAMILIES:
    return FAMILIES[name]
  if name in DEFERRED:
    return importlib.import_module(DEFERRED[name]).FAMILY
  raise ValueError(
    f"unknown task family {name!r}; valid families: {', '.join(names())}"
  )


def register_family(family: base.TaskFamily, *, replace: bool = False) -> None:
  """Adds a family (e.g. a user's) to the registry under ``family.name``.

  Its specs then parse, build and sample like the built-in families' ones;
  the default suite mix (``suite.DEFAULT_WEIGHTS``) does not include it, so
  seeded default suites do not change.

  Args:
    family: an object with ``name``, ``spec_type``, ``sample`` and ``task``
      (``base.TaskFamily``); ``spec_type.family`` must equal ``name``.
    replace: allow replacing an earlier registration of the same name.

  Raises:
    ValueError: the name is not an identifier, is a built-in family's, is
      taken (without ``replace``), or disagrees with the spec type's.
  """
  name = family.name
  if not name.isidentifier():
    raise ValueError(f"family name {name!r} must be a Python identifier")
  if name in BUILT_IN or name in DEFERRED:
    raise ValueError(f"{name!r} is a built-in family; choose another name")
  if name in FAMILIES and not replace:
    raise ValueError(
      f"family {name!r} is already registered; pass replace=True to replace it"
    )
  if family.spec_type.family != name:
    raise ValueError(
      f"family {name!r} builds specs of family {family.spec_type.family!r}"
    )
  FAMILIES[name] = family
