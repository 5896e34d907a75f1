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
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from task_suite import base, families
from task_suite.families import common

# Powers of two, so the rotation can use fast Walsh-Hadamard transforms.
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


def _walsh_hadamard(v: jax.Array) -> jax.Array:
  """Orthonormal Walsh-Hadamard transform of ``v`` [d], d a power of two."""
  d = v.shape[0]
  k = d.bit_length() - 1
  v = v.reshape((2,) * k)
  # Butterflies are exact adds: no matmul-precision issue on GPU/TPU.
  for axis in range(k):
    a = jnp.take(v, 0, axis=axis)
    b = jnp.take(v, 1, axis=axis)
    v = jnp.stack([a + b, a - b], axis=axis)
  return v.reshape(d) / jnp.sqrt(jnp.float32(d))


def rotate(key: jax.Array, v: jax.Array) -> jax.Array:
  """Applies the random rotation ``Q`` drawn from ``key`` to ``v`` [d].

  ``Q = H D3 H D2 H D1 G``: random Givens rotations ``G`` on coordinate
  pairs, then three Hadamard transforms ``H`` with random sign flips ``D``
  (structured orthogonal random features, Yu et al. 2016): near-Haar mixing
  at O(d log d) cost, and exactly orthogonal.
  """
  d = v.shape[0]
  k_angle, k_signs = jax.random.split(key)
  angle = jax.random.uniform(k_angle, (d // 2,), maxval=2 * jnp.pi)
  pairs = v.reshape(d // 2, 2)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  v = jnp.stack(
    [
      cos * pairs[:, 0] - sin * pairs[:, 1],
      sin * pairs[:, 0] + cos * pairs[:, 1],
    ],
    axis=1,
  ).reshape(d)
  signs = jax.random.rademacher(k_signs, (3, d), dtype=v.dtype)
  for i in range(3):
    v = _walsh_hadamard(signs[i] * v)
  return v


class QuadraticTask(base.Task):
  """A task of the quadratic family; params are ``{"x": [dim]}``."""

  def _dim(self) -> int:
    return self.static["dim"]

  def eigenvalues(self) -> jax.Array:
    """The spectrum of ``A`` [dim], from 1 down to ``1/cond``."""
    frac = jnp.linspace(0.0, 1.0, self._dim(), dtype=jnp.float32)
    return jnp.power(self.dynamic["cond"], -frac)

  def _keys(self) -> tuple[jax.Array, jax.Array]:
    k_rot, k_opt = jax.random.split(jax.random.key(self.dynamic["seed"]))
    return k_rot, k_opt

  def optimum(self) -> jax.Array:
    """The minimizer ``x*`` [dim]."""
    _, k_opt = self._keys()
    return self.dynamic["init_scale"] * jax.random.normal(k_opt, (self._dim(),))

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
    k_rot, _ = self._keys()
    delta = params["x"] - self.optimum()
    z = rotate(k_rot, delta)
    quad = 0.5 * jnp.sum(self.eigenvalues() * jnp.square(z))
    dyn = self.dynamic
    noise = (
      dyn["noise_std"] * dyn["init_scale"] * jnp.dot(batch["noise"], delta)
    )
    return dyn["loss_scale"] * (quad + noise)

  def normalize(self, loss: jax.Array) -> jax.Array:
    """Loss over the expected loss at init (``x - x*`` has variance 2s^2)."""
    dyn = self.dynamic
    initial = (
      dyn["loss_scale"]
      * jnp.square(dyn["init_scale"])
      * jnp.sum(self.eigenvalues())
    )
    return common.cap(loss / initial)


class QuadraticFamily:
  """Samples quadratics: dimension from ``DIMS``, the rest dynamic."""

  name = "quadratic"
  spec_type = QuadraticSpec

  def __init__(self):
    self._cache: dict[QuadraticSpec, QuadraticTask] = {}

  def sample(self, key: jax.Array) -> QuadraticSpec:
    """Draws a spec: condition number log-uniform in [1, 1e4], etc."""
    rng = common.host_rng(key)
    noisy = rng.uniform() >= NOISE_FREE_FRACTION
    return QuadraticSpec(
      dim=int(rng.choice(DIMS)),
      seed=int(rng.integers(0, 2**31 - 1)),
      cond=_log_uniform(rng, 1.0, 1e4),
      noise_std=_log_uniform(rng, 0.01, 1.0) if noisy else 0.0,
      loss_scale=_log_uniform(rng, 0.01, 100.0),
      init_scale=_log_uniform(rng, 0.1, 10.0),
    )

  def task(self, spec: QuadraticSpec) -> QuadraticTask:
    """Builds (and memoizes) the task of ``spec``."""
    families.check_spec(self, spec)
    if spec.dim < 2 or spec.dim & (spec.dim - 1):
      raise ValueError(
        f"quadratic dim must be a power of two >= 2 (e.g. {DIMS}), got "
        f"{spec.dim}"
      )
    if spec not in self._cache:
      self._cache[spec] = QuadraticTask(
        spec.signature, families.dynamic_arrays(spec), {}
      )
    return self._cache[spec]
