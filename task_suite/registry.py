"""The registry of task families: ``FAMILIES[name]`` is a family instance.

This is the only place that dispatches on a family name; a miss lists the
valid names.
"""

import importlib
import types

from task_suite import base

# family name -> module defining it (each module has exactly one *Family).
_MODULES = {
  "mlp": "task_suite.families.mlp",
  "conv": "task_suite.families.conv",
  "rnn_lm": "task_suite.families.rnn_lm",
  "vae": "task_suite.families.vae",
  "mlp_ae": "task_suite.families.mlp_ae",
  "quadratic": "task_suite.families.quadratic",
  "test_functions": "task_suite.families.test_functions",
  "regression": "task_suite.families.regression",
}


def _family_in(module: types.ModuleType, name: str) -> base.TaskFamily:
  """Instantiates the family class of ``module`` whose ``name`` is ``name``."""
  for attr in vars(module).values():
    if (
      isinstance(attr, type)
      and attr.__name__.endswith("Family")
      and getattr(attr, "name", None) == name
      and attr.__module__ == module.__name__
    ):
      return attr()
  raise ImportError(
    f"module {module.__name__} defines no *Family class with name={name!r}"
  )


def _load() -> dict[str, base.TaskFamily]:
  loaded = {}
  for name, module_name in _MODULES.items():
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      # Tolerated only while a family module is still being written.
      if e.name != module_name:
        raise
      continue
    loaded[name] = _family_in(module, name)
  return loaded


FAMILIES: dict[str, base.TaskFamily] = _load()


def get_family(name: str) -> base.TaskFamily:
  """The family instance registered as ``name``.

  Raises:
    ValueError: if no family has that name (the message lists valid names).
  """
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(
      f"unknown task family {name!r}; valid families: {', '.join(FAMILIES)}"
    ) from None
