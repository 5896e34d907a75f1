"""The one way the config dataclasses reject a value: ``check``.

Every message names the class and the field in one style,
``EstimatorConfig.std must be a finite float > 0, got -1.0.``; the config
front door (``config.parsing.build``) turns the class name into the config
path (``config.estimator.std must be ...``). A leaf module: it imports
nothing, so that every package may use it.
"""

import math
from typing import Any

_KINDS = {int: "an int", float: "a float", str: "a str"}


def check(ok: bool, cfg: Any, field: str, allowed: str) -> None:
  """Raises unless ``ok``: ``{Class}.{field} must be {allowed}, got V.``.

  Raises:
    ValueError: naming the field, what it must be and its value.
  """
  if not ok:
    raise ValueError(
      f"{type(cfg).__name__}.{field} must be {allowed}, got "
      f"{getattr(cfg, field)!r}."
    )


def check_type(cfg: Any, field: str, kind: type) -> None:
  """``check`` that the field is an int, a float (ints too) or a str.

  A bool is never an int or a float here (``True`` is not a count).
  """
  value = getattr(cfg, field)
  want = (int, float) if kind is float else kind
  ok = isinstance(value, want) and not isinstance(value, bool)
  check(ok, cfg, field, _KINDS[kind])


def check_at_least(cfg: Any, fields: tuple[str, ...], low: float) -> None:
  """``check`` that each of ``fields`` is ``>= low``."""
  for field in fields:
    check(getattr(cfg, field) >= low, cfg, field, f">= {low}")


def check_choice(cfg: Any, field: str, choices: tuple[str, ...]) -> None:
  """``check`` that the field is one of ``choices``."""
  check(getattr(cfg, field) in choices, cfg, field, f"one of {choices}")


def is_positive_float(value: Any) -> bool:
  """Finite and > 0 (NaN and inf are not)."""
  return math.isfinite(value) and value > 0
