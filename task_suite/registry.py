"""The registry of task families: ``FAMILIES[name]`` is a family instance.

This is the only place that dispatches on a family name; a miss lists the
valid names. Family instances build their datasets lazily (on the first
``task(spec)`` that needs them), so importing the registry loads no data.
"""

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
