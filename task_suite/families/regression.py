"""Teacher-student MLP regression on synthetic Gaussian inputs (no download).

A fixed random teacher MLP (one hidden layer of ``TEACHER_WIDTH`` units),
drawn on device from the traced ``teacher_seed``, labels inputs
``x ~ N(0, I)``; the student MLP fits them with the mean squared error. Every
batch draws fresh inputs, so the train loss is an unbiased estimate of the
population loss, and valid/test batches use their own key streams.

Static fields come from a menu of at most 8 configurations; the teacher
seed, label noise, activation (shared by teacher and student) and the
student's init scale are dynamic.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from task_suite import base
from task_suite.families import common

TEACHER_WIDTH = 32
# The teacher's outputs are divided by their RMS on this many probe inputs,
# so targets have unit scale whatever the activation and seed.
NUM_PROBE = 256
# Narrower than the image families' range: a student whose outputs start at
# 10x the targets' scale starts at the normalized-loss cap.
INIT_SCALE_RANGE = (0.3, 1.5)

MENU: tuple[dict[str, Any], ...] = (
  {"input_dim": 2, "hidden": (16, 16, 16), "output_dim": 1, "batch_size": 32},
  {"input_dim": 4, "hidden": (16,), "output_dim": 1, "batch_size": 32},
  {"input_dim": 8, "hidden": (32,), "output_dim": 1, "batch_size": 64},
  {"input_dim": 8, "hidden": (32, 32), "output_dim": 4, "batch_size": 64},
  {"input_dim": 16, "hidden": (), "output_dim": 1, "batch_size": 32},
  {"input_dim": 16, "hidden": (64,), "output_dim": 2, "batch_size": 64},
  {"input_dim": 32, "hidden": (64, 64), "output_dim": 1, "batch_size": 128},
  {"input_dim": 32, "hidden": (128,), "output_dim": 8, "batch_size": 128},
)


@dataclasses.dataclass(frozen=True)
class RegressionSpec(base.TaskSpec):
  """A teacher-student regression problem.

  Attributes:
    input_dim: input features.
    hidden: student hidden widths (``()``: linear regression).
    output_dim: regression targets per example.
    batch_size: examples per batch.
    activation: one of ``common.ACTIVATION_NAMES`` (teacher and student).
    teacher_seed: draws the teacher's weights.
    noise_std: std of the Gaussian label noise (targets have unit RMS).
    init_scale: multiplier of the student's LeCun-normal init.
  """

  family: ClassVar[str] = "regression"
  input_dim: int = base.static_field()
  hidden: tuple[int, ...] = base.static_field()
  output_dim: int = base.static_field()
  batch_size: int = base.static_field()
  activation: str = base.dynamic_field()
  teacher_seed: int = base.dynamic_field()
  noise_std: float = base.dynamic_field(default=0.0)
  init_scale: float = base.dynamic_field(default=1.0)

  def __post_init__(self):
    common.index_of(self.activation, common.ACTIVATION_NAMES, "activation")
    sizes = (self.input_dim, *self.hidden, self.output_dim, self.batch_size)
    if min(sizes) < 1:
      raise ValueError(f"sizes must be positive, got {self}")
    if not (self.noise_std >= 0 and self.init_scale > 0):
      raise ValueError(
        f"need noise_std >= 0 and init_scale > 0, got {self.noise_std}, "
        f"{self.init_scale}"
      )


def _split_normal(key: jax.Array, shapes: dict) -> dict[Any, jax.Array]:
  """Standard normals of the given shapes, from one ``jax.random`` call."""
  sizes = [math.prod(shape) for shape in shapes.values()]
  flat = jax.random.normal(key, (sum(sizes),))
  offsets = np.cumsum([0, *sizes])
  return {
    name: flat[offsets[i] : offsets[i + 1]].reshape(shape)
    for i, (name, shape) in enumerate(shapes.items())
  }


class RegressionTask(base.Task):
  """Mean squared error of a student MLP against a random teacher."""

  def _teacher(self, x: jax.Array) -> jax.Array:
    """Teacher outputs [N, output_dim] of inputs ``x`` [N, input_dim]."""
    s, dyn = self.static, self.dynamic
    d, w, out = s["input_dim"], TEACHER_WIDTH, s["output_dim"]
    # One Gaussian draw for all of the teacher: each threefry call costs
    # ~0.4 s of XLA:CPU compile time.
    draws = _split_normal(
      jax.random.key(dyn["teacher_seed"]),
      {"w0": (d, w), "b0": (w,), "w1": (w, out), "probe": (NUM_PROBE, d)},
    )
    teacher = {
      "layer_0": {"w": draws["w0"] / math.sqrt(d), "b": 0.5 * draws["b0"]},
      "layer_1": {"w": draws["w1"] / math.sqrt(w), "b": jnp.zeros(out)},
    }
    both = common.mlp_apply(
      teacher, jnp.concatenate([draws["probe"], x]), dyn["activation"]
    )
    probe_out, out = both[:NUM_PROBE], both[NUM_PROBE:]
    mean = probe_out.mean(0, keepdims=True)  # [1, output_dim]
    rms = jnp.sqrt(
      jnp.mean(jnp.square(probe_out - mean), 0, keepdims=True) + 1e-12
    )
    return (out - mean) / rms

  def init(self, key: jax.Array) -> base.Params:
    """The student: ``w ~ N(0, init_scale^2 / fan_in)``, zero biases."""
    s = self.static
    sizes = (s["input_dim"], *s["hidden"], s["output_dim"])
    shapes = {i: (sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)}
    draws = _split_normal(key, shapes)
    scale = self.dynamic["init_scale"]
    return {
      f"layer_{i}": {
        "w": draws[i] * (scale / math.sqrt(shape[0])),
        "b": jnp.zeros(shape[1]),
      }
      for i, shape in shapes.items()
    }

  def batch(self, key: jax.Array, split: str) -> dict[str, jax.Array]:
    """Fresh inputs ``x`` [B, input_dim] and noisy teacher targets ``y``."""
    common.check_split(split)
    s = self.static
    key = jax.random.fold_in(key, base.SPLITS.index(split))
    b = s["batch_size"]
    draws = _split_normal(
      key, {"x": (b, s["input_dim"]), "noise": (b, s["output_dim"])}
    )
    y = self._teacher(draws["x"]) + self.dynamic["noise_std"] * draws["noise"]
    return {"x": draws["x"], "y": y}

  def loss(self, params, key, batch) -> jax.Array:
    """Mean squared error over examples and outputs."""
    del key
    pred = common.mlp_apply(params, batch["x"], self.dynamic["activation"])
    return jnp.mean(jnp.square(pred - batch["y"]))

  def normalize(self, loss: jax.Array) -> jax.Array:
    """Loss over that of predicting the mean (targets have unit variance)."""
    return common.cap(loss / (1.0 + jnp.square(self.dynamic["noise_std"])))


class RegressionFamily:
  """Samples regression specs from a menu of static configurations.

  Args:
    menu: static configurations (at most 8: the compilation budget).
    weights: relative sampling weights of the menu entries (None: uniform).
  """

  name = "regression"
  spec_type = RegressionSpec

  def __init__(
    self,
    menu: Sequence[Mapping[str, Any]] = MENU,
    weights: Sequence[float] | None = None,
  ):
    common.check_menu(menu, weights, RegressionSpec.static_names())
    self.menu, self.weights = tuple(menu), weights
    self._cache: dict[RegressionSpec, RegressionTask] = {}

  def sample(self, key: jax.Array) -> RegressionSpec:
    """Draws a spec deterministically from ``key``."""
    rng = common.host_rng(key)
    static = common.choose_static(rng, self.menu, self.weights)
    names = common.ACTIVATION_NAMES
    log_uniform = lambda lo, hi: base.round_sig(common.log_uniform(rng, lo, hi))
    return RegressionSpec(
      **static,
      activation=names[int(rng.integers(len(names)))],
      teacher_seed=int(rng.integers(2**31 - 1)),
      noise_std=log_uniform(0.01, 1.0) if rng.uniform() < 0.7 else 0.0,
      init_scale=log_uniform(*INIT_SCALE_RANGE),
    )

  def task(self, spec: RegressionSpec) -> RegressionTask:
    """Builds (and memoizes) the task of ``spec``."""
    if not isinstance(spec, RegressionSpec):
      raise TypeError(
        f"RegressionFamily.task needs a RegressionSpec, got {spec!r}"
      )
    if spec not in self._cache:
      dynamic = {
        "activation": jnp.asarray(
          common.ACTIVATION_NAMES.index(spec.activation), jnp.int32
        ),
        "teacher_seed": jnp.asarray(spec.teacher_seed, jnp.int32),
        "noise_std": jnp.asarray(spec.noise_std, jnp.float32),
        "init_scale": jnp.asarray(spec.init_scale, jnp.float32),
      }
      self._cache[spec] = RegressionTask(spec.signature, dynamic, {})
    return self._cache[spec]
