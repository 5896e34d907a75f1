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

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import math
from typing import Any, ClassVar

import jax
import optax

from task_suite import base, data
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
NUM_CLASSES = 10  # both image datasets; checked when the data is loaded


@dataclasses.dataclass(frozen=True)
class MLPSpec(base.TaskSpec):
  """An image MLP classifier.

  Attributes:
    hidden: hidden layer widths, e.g. ``(64, 64)``; ``()`` is logistic
      regression.
    image_size: input side length (8, 16 or 28).
    batch_size: examples per batch.
    activation: one of ``common.ACTIVATION_NAMES``.
    init_scale: multiplier of the LeCun-normal weight init.
    dataset: "mnist" or "fashion_mnist".
    data_seed: folded into batch keys (decorrelates data streams).
  """

  family: ClassVar[str] = "mlp"
  hidden: tuple[int, ...] = base.static_field()
  image_size: int = base.static_field()
  batch_size: int = base.static_field()
  activation: str = base.dynamic_field()
  init_scale: float = base.dynamic_field()
  dataset: str = base.dynamic_field()
  data_seed: int = base.dynamic_field()

  def __post_init__(self):
    common.check_image_dynamic(self)
    if any(w < 1 for w in self.hidden):
      raise ValueError(f"hidden widths must be positive, got {self.hidden}")


class MLPTask(base.Task):
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

  def batch(self, key: jax.Array, split: str) -> base.Batch:
    return common.image_batch(
      self.data,
      key,
      split,
      self.static["batch_size"],
      self.dynamic["dataset"],
      self.dynamic["data_seed"],
    )

  def normalize(self, loss: jax.Array) -> jax.Array:
    # Chance level (uniform prediction) is log(num_classes).
    return common.cap(loss / math.log(NUM_CLASSES))


class MLPFamily:
  """Samples ``MLPSpec``s from a menu of static configurations.

  Args:
    menu: static configurations (dicts of hidden, image_size, batch_size);
      at most 8, the family's share of the suite's compilation budget.
    weights: relative sampling weights of the menu entries; None gives
      ``MENU_WEIGHTS`` for the default menu and uniform weights otherwise.
    load_images: ``(name, image_size) -> data.ImageData``; defaults to
      ``task_suite.data.load_images`` (tests may pass a fake).
  """

  name = "mlp"
  spec_type = MLPSpec

  def __init__(
    self,
    menu: Sequence[Mapping[str, Any]] = MENU,
    weights: Sequence[float] | None = None,
    load_images: Callable[[str, int], Any] | None = None,
  ):
    if weights is None and menu is MENU:
      weights = MENU_WEIGHTS
    common.check_menu(menu, weights, MLPSpec.static_names())
    self.menu, self.weights = tuple(menu), weights
    self._load_images = load_images or data.load_images
    self._tasks: dict[MLPSpec, MLPTask] = {}
    self._data: dict[int, dict[str, jax.Array]] = {}

  def sample(self, key: jax.Array) -> MLPSpec:
    """Draws a spec deterministically from ``key``."""
    rng = common.host_rng(key)
    static = common.choose_static(rng, self.menu, self.weights)
    return MLPSpec(**static, **common.sample_image_dynamic(rng))

  def task(self, spec: MLPSpec) -> MLPTask:
    """The task of ``spec`` (the same object for equal specs)."""
    if not isinstance(spec, MLPSpec):
      raise TypeError(f"MLPFamily.task needs an MLPSpec, got {spec!r}")
    if spec not in self._tasks:
      self._tasks[spec] = MLPTask(
        spec.signature,
        common.image_dynamic(spec),
        self._image_data(spec.image_size),
      )
    return self._tasks[spec]

  def _image_data(self, image_size: int) -> dict[str, jax.Array]:
    # One dict per size, shared by all tasks, so stacked tasks share data.
    if image_size not in self._data:
      arrays, num_classes = common.image_data(self._load_images, image_size)
      if num_classes != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} classes, got {num_classes}")
      self._data[image_size] = arrays
    return self._data[image_size]
