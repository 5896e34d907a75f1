"""Image classification MLPs (TaskSet's ``mlp`` family, on MNIST-like data).

Static fields (shapes): hidden widths (0-4 layers of 8-256 units), image size
and batch size, drawn from a curated menu of at most 8 configurations so a
large suite needs few compilations. Dynamic fields (traced): activation,
init scale, dataset (mnist or fashion_mnist) and data seed.

Example:
  >>> family = mlp.MLPFamily()
  >>> spec = family.sample(jax.random.key(0))
  >>> task = family.task(spec)
  >>> params = task.init(jax.random.key(1))
  >>> loss = task.loss(params, None, task.batch(jax.random.key(2), "train"))
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import optax

from task_suite import base
from task_suite.families import common

# Mostly 8x8 inputs and 1k-30k parameters (cheap enough for CPU meta-training),
# plus wide layers (128, 256 units; 784 inputs) that an optimizer must also see.
MENU: tuple[dict[str, Any], ...] = (
  {"hidden": (), "image_size": 8, "batch_size": 128},
  {"hidden": (32,), "image_size": 8, "batch_size": 128},
  {"hidden": (128,), "image_size": 8, "batch_size": 64},
  {"hidden": (64, 64), "image_size": 8, "batch_size": 64},
  {"hidden": (16, 16, 16, 16), "image_size": 8, "batch_size": 128},
  {"hidden": (32, 32, 32), "image_size": 16, "batch_size": 64},
  {"hidden": (128, 128), "image_size": 16, "batch_size": 64},
  {"hidden": (256,), "image_size": 28, "batch_size": 32},
)
# The two large entries (~50k and ~200k parameters) are drawn half as often.
MENU_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5)
NUM_CLASSES = common.ImageFamily.NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class _MLPShape:
  """MLPSpec's own fields (they lead: ``common.ImageSpec``)."""

  hidden: tuple[int, ...] = base.static_field()


@dataclasses.dataclass(frozen=True)
class MLPSpec(common.ImageSpec, _MLPShape):
  """An image MLP classifier.

  Attributes (and ``common.ImageSpec``'s):
    hidden: hidden layer widths, e.g. ``(64, 64)``; ``()`` is logistic
      regression.
  """

  family: ClassVar[str] = "mlp"

  def __post_init__(self):
    super().__post_init__()
    if any(w < 1 for w in self.hidden):
      raise ValueError(f"hidden widths must be positive, got {self.hidden}")


class MLPTask(common.ImageTask):
  """Softmax cross-entropy of an MLP on flattened images."""

  def init(self, key: jax.Array) -> base.Params:
    s = self.static
    sizes = (s["image_size"] ** 2, *s["hidden"], NUM_CLASSES)
    return common.mlp_init(key, sizes, self.dynamic["init_scale"])

  def loss(
    self, params: base.Params, key: jax.Array, batch: base.Batch
  ) -> jax.Array:
    del key  # deterministic model
    x = batch["image"].reshape(batch["image"].shape[0], -1)  # [B, S*S]
    logits = common.mlp_apply(params, x, self.dynamic["activation"])
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["label"]
    ).mean()

  def normalize(self, loss: jax.Array) -> jax.Array:
    # Chance level (uniform prediction) is log(num_classes).
    return common.cap(loss / math.log(NUM_CLASSES))


class MLPFamily(common.ImageFamily):
  """Samples ``MLPSpec``s from a menu of static configurations.

  Args: see ``common.ImageFamily`` (menu entries set hidden, image_size and
  batch_size).
  """

  name = "mlp"
  spec_type = MLPSpec
  task_type = MLPTask
  MENU = MENU
  MENU_WEIGHTS = MENU_WEIGHTS
