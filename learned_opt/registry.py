"""Architecture name -> learned-optimizer class, for rebuilding from configs.

``LearnedOptimizer.config()`` records ``architecture`` (the class's
``architecture`` attribute) and its constructor keyword arguments;
``learned_opt.load`` looks the name up here to rebuild the optimizer a
checkpoint was saved with.
"""

from typing import Any

from learned_opt import base, hierarchical, mlp_lopt

ARCHITECTURES: dict[str, type[base.LearnedOptimizer]] = {
  "hierarchical": hierarchical.HierarchicalLOpt,
  "mlp": mlp_lopt.MLPLOpt,
}


def get_architecture(name: str) -> type[base.LearnedOptimizer]:
  """The learned-optimizer class registered under ``name``.

  Args:
    name: an architecture name, e.g. ``"hierarchical"``.

  Returns:
    The class.

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  if name not in ARCHITECTURES:
    raise ValueError(
      f"unknown learned-optimizer architecture {name!r}; known: "
      f"{', '.join(sorted(ARCHITECTURES))}. Register new classes in "
      "learned_opt/registry.py."
    )
  return ARCHITECTURES[name]


def _tuples(value: Any) -> Any:
  # config() stores tuples as JSON lists; the frozen dataclasses need tuples
  # back to stay hashable.
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def from_config(config: dict[str, Any]) -> base.LearnedOptimizer:
  """Rebuilds a learned optimizer from ``lopt.config()`` (or its JSON).

  Args:
    config: ``{"architecture": name, "kwargs": {...}}``.

  Returns:
    The optimizer, equal to the one ``config`` was taken from.

  Raises:
    ValueError: for an unknown architecture or keyword arguments the class
      does not accept.
  """
  cls = get_architecture(config["architecture"])
  kwargs = {k: _tuples(v) for k, v in config.get("kwargs", {}).items()}
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise ValueError(
      f"cannot build {cls.__name__} from the stored arguments {kwargs}: {e}. "
      "The config was probably written by another version of the code."
    ) from e
