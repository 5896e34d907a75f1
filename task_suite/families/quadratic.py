"""Noisy rotated quadratics: the analytic test bed of meta-training.

The loss of a task is

  loss_scale * (0.5 (x - x*)^T A (x - x*) + noise_std * init_scale * g^T (x - x*))

with ``A = Q^T diag(eigs) Q``: eigenvalues log-spaced from ``1/cond`` to 1
and ``Q`` a random rotation. ``g ~ N(0, I)`` is the batch, so the gradient is
the exact gradient plus Gaussian noise of std
``loss_scale * noise_std * init_scale`` per coordinate, and the expected loss
is the noise-free one. ``noise_std=0`` gives a deterministic task.

Everything that depends on the spec's ``seed`` (rotation, optimum) is built
on device from the traced seed, so one compilation per dimension serves every
spec and specs ``vmap`` together.

Example (a deterministic quadratic, e.g. to test gradient estimators):
  >>> spec = quadratic.QuadraticSpec(dim=8, seed=0, cond=100.0)
  >>> task = quadratic.QuadraticFamily().task(spec)  # or get_task(spec)
  >>> params = task.init(jax.random.key(0))          # {"x": [8]}
  >>> loss = task.loss(params, None, task.batch(jax.random.key(1), "train"))
"""

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from task_suite import base, families
from task_suite.families import common

# Powers of two, so the rotation can use Hadamard matrices.
DIMS = (2, 8, 32, 128)
NOISE_FREE_FRACTION = 0.3


def _log_uniform(rng, low: float, high: float) -> float:
  return base.round_sig(common.log_uniform(rng, low, high))


@dataclasses.dataclass(frozen=True)
class QuadraticSpec(base.TaskSpec):
  """A rotated quadratic of dimension ``dim``.

  Attributes:
    dim: number of parameters (a power of two).
    seed: draws the rotation and the optimum.
    cond: condition number of ``A`` (largest eigenvalue is 1).
    noise_std: gradient-noise std relative to ``init_scale``.
    loss_scale: multiplies the loss.
    init_scale: std of the initial parameters and of the optimum.
  """

  family: ClassVar[str] = "quadratic"
  dim: int = base.static_field()
  seed: int = base.dynamic_field()
  cond: float = base.dynamic_field(default=1.0)
  noise_std: float = base.dynamic_field(default=0.0)
  loss_scale: float = base.dynamic_field(default=1.0)
  init_scale: float = base.dynamic_field(default=1.0)

  def __post_init__(self):
    if not (
      self.cond >= 1
      and self.noise_std >= 0
      and self.loss_scale > 0
      and self.init_scale > 0
    ):
      raise ValueError(
        "quadratic spec needs cond >= 1, noise_std >= 0, loss_scale > 0 and "
        f"init_scale > 0, got {self}"
      )


@functools.cache
def _hadamard(d: int) -> np.ndarray:
  """The orthonormal Sylvester-Hadamard matrix [d, d], d a power of two."""
  h = np.ones((1, 1), np.float32)
  while h.shape[0] < d:
    h = np.block([[h, h], [h, -h]])
  return h / np.sqrt(np.float32(d))


def rotate(draws: jax.Array, v: jax.Array) -> jax.Array:
  """Applies the rotation ``Q`` given by ``draws`` [4, d] ~ N(0, 1) to ``v``.

  ``Q = H D3 H D2 H D1 G``: Givens rotations ``G`` on coordinate pairs by
  uniform angles, then three Hadamard transforms ``H`` with random sign flips
  ``D`` (structured orthogonal random features, Yu et al. 2016): near-Haar
  mixing and exactly orthogonal. Every random quantity
  comes from one Gaussian draw: signs are signs of Gaussians and the angle
  of a 2D Gaussian is uniform (one threefry call compiles much faster than
  four).
  """
  d = v.shape[0]
  a, b = draws[3, : d // 2], draws[3, d // 2 :]  # [d/2] each
  radius = jnp.sqrt(jnp.square(a) + jnp.square(b)) + 1e-30
  cos, sin = b / radius, a / radius
  pairs = v.reshape(d // 2, 2)
  v = jnp.stack(
    [
      cos * pairs[:, 0] - sin * pairs[:, 1],
      sin * pairs[:, 0] + cos * pairs[:, 1],
    ],
    axis=1,
  ).reshape(d)
  signs = jnp.where(draws[:3] >= 0, 1.0, -1.0)  # [3, d]
  # A dense matvec compiles ~10x faster than an O(d log d) butterfly here;
  # HIGHEST keeps float32 accuracy on GPU/TPU.
  h = jnp.asarray(_hadamard(d))
  for i in range(3):
    v = jnp.dot(h, signs[i] * v, precision=jax.lax.Precision.HIGHEST)
  return v


class QuadraticTask(base.Task):
  """A task of the quadratic family; params are ``{"x": [dim]}``."""

  def _dim(self) -> int:
    return self.static["dim"]

  def eigenvalues(self) -> jax.Array:
    """The spectrum of ``A`` [dim], from 1 down to ``1/cond``."""
    frac = jnp.linspace(0.0, 1.0, self._dim(), dtype=jnp.float32)
    return jnp.power(self.dynamic["cond"], -frac)

  def _draws(self) -> jax.Array:
    """Gaussians [5, dim] from the seed: the optimum, then the rotation."""
    key = jax.random.key(self.dynamic["seed"])
    return jax.random.normal(key, (5, self._dim()))

  def optimum(self) -> jax.Array:
    """The minimizer ``x*`` [dim]."""
    return self.dynamic["init_scale"] * self._draws()[0]

  def init(self, key: jax.Array) -> dict[str, jax.Array]:
    """Draws ``x ~ N(0, init_scale^2 I)``."""
    x = jax.random.normal(key, (self._dim(),))
    return {"x": self.dynamic["init_scale"] * x}

  def batch(self, key: jax.Array, split: str) -> dict[str, jax.Array]:
    """The gradient-noise direction ``g ~ N(0, I)`` [dim] of one step."""
    key = jax.random.fold_in(key, base.SPLITS.index(split))
    return {"noise": jax.random.normal(key, (self._dim(),))}

  def loss(self, params, key, batch) -> jax.Array:
    """The (noisy) quadratic loss."""
    del key
    draws = self._draws()
    delta = params["x"] - self.dynamic["init_scale"] * draws[0]
    z = rotate(draws[1:], delta)
    quad = 0.5 * jnp.sum(self.eigenvalues() * jnp.square(z))
    dyn = self.dynamic
    noise = (
      dyn["noise_std"] * dyn["init_scale"] * jnp.dot(batch["noise"], delta)
    )
    return dyn["loss_scale"] * (quad + noise)

  def eval_loss(self, params, key, batch) -> jax.Array:
    """The expected (noise-free) loss: the noise term has mean zero."""
    return self.loss(params, key, jax.tree.map(jnp.zeros_like, batch))

  def normalize(self, loss: jax.Array) -> jax.Array:
    """Loss over the expected loss at init (``x - x*`` has variance 2s^2)."""
    dyn = self.dynamic
    initial = (
      dyn["loss_scale"]
      * jnp.square(dyn["init_scale"])
      * jnp.sum(self.eigenvalues())
    )
    return common.cap(loss / initial)


def _check_dim(dim: int) -> None:
  if dim < 2 or dim & (dim - 1):
    raise ValueError(
      f"quadratic dim must be a power of two >= 2 (e.g. {DIMS}), got {dim}"
    )


class QuadraticFamily:
  """Samples quadratics: dimension from ``dims``, the rest dynamic.

  Args:
    dims: the static menu of dimensions (powers of two), default ``DIMS``.
  """

  name = "quadratic"
  spec_type = QuadraticSpec

  def __init__(self, dims: tuple[int, ...] = DIMS):
    for d in dims:
      _check_dim(d)
    self.dims = tuple(dims)
    self._cache: dict[QuadraticSpec, QuadraticTask] = {}

  def sample(self, key: jax.Array) -> QuadraticSpec:
    """Draws a spec: condition number log-uniform in [1, 1e4], etc."""
    rng = common.host_rng(key)
    noisy = rng.uniform() >= NOISE_FREE_FRACTION
    return QuadraticSpec(
      dim=self.dims[int(rng.integers(len(self.dims)))],
      seed=int(rng.integers(0, 2**31 - 1)),
      cond=_log_uniform(rng, 1.0, 1e4),
      noise_std=_log_uniform(rng, 0.01, 1.0) if noisy else 0.0,
      loss_scale=_log_uniform(rng, 0.01, 100.0),
      init_scale=_log_uniform(rng, 0.1, 10.0),
    )

  def task(self, spec: QuadraticSpec) -> QuadraticTask:
    """Builds (and memoizes) the task of ``spec``."""
    families.check_spec(self, spec)
    _check_dim(spec.dim)
    if spec not in self._cache:
      self._cache[spec] = QuadraticTask(
        spec.signature, families.dynamic_arrays(spec), {}
      )
    return self._cache[spec]
