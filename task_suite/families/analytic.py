"""Classic 2D analytic objectives (Rosenbrock, Beale, Branin, ...).

The module is ``analytic`` (a ``test_*`` module name reads as a test module
to pytest and to people), but the registered family name stays
``"test_functions"``: that name is part of every spec string, and a spec's
train/test split is a hash of its string, so renaming the family would move
specs between splits and change which tasks every seeded suite samples (and
orphan the names in shipped ``EVALUATION.md`` files). Keeping the name is the
only choice with full backward compatibility. ``task_suite.families``
still answers ``test_functions`` (this module) and the old class names are
aliases, for code written before the move.

All functions share one static signature: the function is a traced index
(``lax.switch``), and the initial point, its spread, the loss scale and an
optional gradient noise are dynamic. So every spec of this family runs under
one compilation and any mix of them ``vmap``s together.

The loss is ``loss_scale * (f(x, y) - f_min)`` (>= 0, 0 at a global
minimum), plus ``loss_scale * noise_std * g . (p - center)`` with a fresh
``g ~ N(0, I)`` per batch when ``noise_std > 0``.
"""

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from task_suite import base
from task_suite.families import common


class AnalyticFunction(NamedTuple):
  """A 2D function ``fn(x, y, xp)`` (``xp`` is numpy or jax.numpy)."""

  fn: Any
  domain: tuple[tuple[float, float], tuple[float, float]]  # initial centers
  f_min: float  # global minimum value


def _ackley(x, y, xp):
  # The epsilon keeps the gradient finite at the minimum (0, 0).
  r = xp.sqrt(0.5 * (x * x + y * y) + 1e-12)
  c = 0.5 * (xp.cos(2 * math.pi * x) + xp.cos(2 * math.pi * y))
  return -20.0 * xp.exp(-0.2 * r) - xp.exp(c) + math.e + 20.0


def _branin(x, y, xp):
  b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
  t = 1 / (8 * math.pi)
  return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * xp.cos(x) + 10


FUNCTIONS: dict[str, AnalyticFunction] = {
  "rosenbrock": AnalyticFunction(
    lambda x, y, xp: (1 - x) ** 2 + 100 * (y - x * x) ** 2,
    ((-2.0, 2.0), (-1.0, 3.0)),
    0.0,
  ),
  "beale": AnalyticFunction(
    lambda x, y, xp: (
      (1.5 - x + x * y) ** 2
      + (2.25 - x + x * y**2) ** 2
      + (2.625 - x + x * y**3) ** 2
    ),
    ((-3.0, 3.0), (-3.0, 3.0)),
    0.0,
  ),
  "branin": AnalyticFunction(_branin, ((-5.0, 10.0), (0.0, 15.0)), 0.397887),
  "ackley": AnalyticFunction(_ackley, ((-5.0, 5.0), (-5.0, 5.0)), 0.0),
  "styblinski_tang": AnalyticFunction(
    lambda x, y, xp: (
      0.5 * (x**4 - 16 * x * x + 5 * x + y**4 - 16 * y * y + 5 * y)
    ),
    ((-5.0, 5.0), (-5.0, 5.0)),
    -78.332331,
  ),
  "rastrigin": AnalyticFunction(
    lambda x, y, xp: (
      20
      + x * x
      - 10 * xp.cos(2 * math.pi * x)
      + y * y
      - 10 * xp.cos(2 * math.pi * y)
    ),
    ((-5.12, 5.12), (-5.12, 5.12)),
    0.0,
  ),
  "booth": AnalyticFunction(
    lambda x, y, xp: (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2,
    ((-10.0, 10.0), (-10.0, 10.0)),
    0.0,
  ),
  "himmelblau": AnalyticFunction(
    lambda x, y, xp: (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2,
    ((-5.0, 5.0), (-5.0, 5.0)),
    0.0,
  ),
  "matyas": AnalyticFunction(
    lambda x, y, xp: 0.26 * (x * x + y * y) - 0.48 * x * y,
    ((-10.0, 10.0), (-10.0, 10.0)),
    0.0,
  ),
}
FUNCTION_NAMES = tuple(FUNCTIONS)
# Centers closer than this (in f - f_min) to a minimum are redrawn, so the
# normalization reference log1p(gap at the center) is never ~0.
MIN_CENTER_GAP = 0.5
NOISE_FREE_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class AnalyticSpec(base.TaskSpec):
  """A test function started near ``(x0, y0)``.

  Attributes:
    function: one of ``FUNCTION_NAMES``.
    x0: center of the initial point, first coordinate.
    y0: center of the initial point, second coordinate.
    init_scale: std of the initial point around the center.
    loss_scale: multiplies the loss.
    noise_std: std of the additive gradient noise (before ``loss_scale``).
  """

  family: ClassVar[str] = "test_functions"
  function: str = base.dynamic_field()
  x0: float = base.dynamic_field()
  y0: float = base.dynamic_field()
  init_scale: float = base.dynamic_field(default=0.1)
  loss_scale: float = base.dynamic_field(default=1.0)
  noise_std: float = base.dynamic_field(default=0.0)

  def __post_init__(self):
    common.index_of(self.function, FUNCTION_NAMES, "test function")
    if not (self.init_scale >= 0 and self.loss_scale > 0):
      raise ValueError(
        f"need init_scale >= 0 and loss_scale > 0, got {self.init_scale}, "
        f"{self.loss_scale}"
      )


def gap(index: jax.Array, xy: jax.Array) -> jax.Array:
  """``f(xy) - f_min`` of function ``FUNCTION_NAMES[index]`` (traceable)."""
  branches = [
    lambda p, f=f: f.fn(p[0], p[1], jnp) - f.f_min for f in FUNCTIONS.values()
  ]
  return jax.lax.switch(index, branches, xy)


class AnalyticTask(base.Task):
  """A task of the test-function family; params are ``{"xy": [2]}``."""

  def _center(self) -> jax.Array:
    return jnp.stack([self.dynamic["x0"], self.dynamic["y0"]])  # [2]

  def init(self, key: jax.Array) -> dict[str, jax.Array]:
    """The center plus ``init_scale`` Gaussian noise."""
    noise = jax.random.normal(key, (2,))
    return {"xy": self._center() + self.dynamic["init_scale"] * noise}

  def batch(self, key: jax.Array, split: str) -> dict[str, jax.Array]:
    """The gradient-noise direction ``g ~ N(0, I)`` [2] of one step."""
    common.check_split(split)
    key = jax.random.fold_in(key, base.SPLITS.index(split))
    return {"noise": jax.random.normal(key, (2,))}

  def loss(self, params, key, batch) -> jax.Array:
    """``loss_scale * (f - f_min + noise_std * g . (p - center))``."""
    del key
    dyn = self.dynamic
    xy = params["xy"]
    noise = dyn["noise_std"] * jnp.dot(batch["noise"], xy - self._center())
    return dyn["loss_scale"] * (gap(dyn["function"], xy) + noise)

  def eval_loss(self, params, key, batch) -> jax.Array:
    """The expected (noise-free) loss: the noise term has mean zero."""
    return self.loss(params, key, jax.tree.map(jnp.zeros_like, batch))

  def normalize(self, loss: jax.Array) -> jax.Array:
    """``log1p(gap) / log1p(gap at the center)``: ~1 at init, 0 at f_min.

    The log keeps the huge dynamic range of these functions (Rosenbrock
    spans 1e-8 to 1e4) on a readable scale.
    """
    dyn = self.dynamic
    reference = jnp.log1p(gap(dyn["function"], self._center()))
    value = jnp.log1p(jnp.maximum(loss / dyn["loss_scale"], -0.5))
    return common.cap(value / jnp.maximum(reference, 1e-3))


def _dynamic(spec: AnalyticSpec) -> dict[str, jax.Array]:
  out = {
    n: jnp.asarray(getattr(spec, n), jnp.float32)
    for n in ("x0", "y0", "init_scale", "loss_scale", "noise_std")
  }
  out["function"] = jnp.asarray(FUNCTION_NAMES.index(spec.function), jnp.int32)
  return out


class AnalyticFamily:
  """Samples test-function specs; one static signature for all of them."""

  name = "test_functions"
  spec_type = AnalyticSpec

  def __init__(self):
    self._cache: dict[AnalyticSpec, AnalyticTask] = {}

  def sample(self, key: jax.Array) -> AnalyticSpec:
    """Draws a function uniformly and a center in its usual domain."""
    rng = common.host_rng(key)
    name = FUNCTION_NAMES[int(rng.integers(len(FUNCTION_NAMES)))]
    f = FUNCTIONS[name]
    (xlo, xhi), (ylo, yhi) = f.domain
    while True:  # the expected number of redraws is far below 1
      x0 = base.round_sig(float(rng.uniform(xlo, xhi)))
      y0 = base.round_sig(float(rng.uniform(ylo, yhi)))
      if f.fn(np.float64(x0), np.float64(y0), np) - f.f_min > MIN_CENTER_GAP:
        break
    noisy = rng.uniform() >= NOISE_FREE_FRACTION
    log_uniform = lambda lo, hi: base.round_sig(common.log_uniform(rng, lo, hi))
    return AnalyticSpec(
      function=name,
      x0=x0,
      y0=y0,
      init_scale=log_uniform(0.01, 1.0),
      loss_scale=log_uniform(0.1, 10.0),
      noise_std=log_uniform(0.01, 1.0) if noisy else 0.0,
    )

  def task(self, spec: AnalyticSpec) -> AnalyticTask:
    """Builds (and memoizes) the task of ``spec``."""
    if not isinstance(spec, AnalyticSpec):
      raise TypeError(f"AnalyticFamily.task needs a AnalyticSpec, got {spec!r}")
    if spec not in self._cache:
      self._cache[spec] = AnalyticTask(spec.signature, _dynamic(spec), {})
    return self._cache[spec]


# The names before the module was renamed from ``test_functions``.
TestFunctionSpec = AnalyticSpec
TestFunctionTask = AnalyticTask
TestFunctionFamily = AnalyticFamily
