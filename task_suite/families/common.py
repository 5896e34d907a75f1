"""Helpers shared by the data families (mlp, conv, rnn_lm, vae, mlp_ae).

What lives here is the part every family needs and which must behave the same
everywhere: the table of traced activations, the scaled initializers, host-side
spec sampling from a jax key, the curated menus of static configurations, the
on-device image batches and the capping used by ``Task.normalize``.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from task_suite import base, data

# Activations selectable by a traced index (``TaskSpec`` field "activation").
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "relu": jax.nn.relu,
  "tanh": jnp.tanh,
  "gelu": jax.nn.gelu,
  "swish": jax.nn.silu,
  "elu": jax.nn.elu,
  "sigmoid": jax.nn.sigmoid,
  "cos": jnp.cos,
}
ACTIVATION_NAMES = tuple(ACTIVATIONS)

# Image datasets every image task carries, selected by a traced index, so the
# dataset choice never adds a compilation.
IMAGE_DATASETS = ("mnist", "fashion_mnist")

# Log-uniform range of the multiplier on the standard (1/sqrt(fan_in)) init.
INIT_SCALE_RANGE = (0.3, 3.0)

# Normalized losses are capped here so a divergent run cannot dominate a mean.
NORMALIZED_CAP = 10.0


def activation(index: jax.Array, x: jax.Array) -> jax.Array:
  """Applies ``ACTIVATION_NAMES[index]`` to ``x``; ``index`` may be traced."""
  return jax.lax.switch(index, tuple(ACTIVATIONS.values()), x)


def index_of(name: str, names: Sequence[str], field: str) -> int:
  """Position of ``name`` in ``names``, or a ValueError listing the choices."""
  if name not in names:
    raise ValueError(f"unknown {field} {name!r}; choose one of {tuple(names)}")
  return names.index(name)


def cap(normalized: jax.Array) -> jax.Array:
  """Caps a normalized loss at ``NORMALIZED_CAP``; NaN stays NaN."""
  return jnp.where(
    jnp.isnan(normalized), normalized, jnp.minimum(normalized, NORMALIZED_CAP)
  )


# ------------------------------------------------------------ initializers


def normal_draws(
  key: jax.Array, shapes: Sequence[tuple[int, ...]]
) -> list[jax.Array]:
  """Standard-normal float32 arrays of ``shapes``, from ONE random draw.

  A threefry draw costs ~0.5 s of XLA:CPU compile time each, so drawing all
  weights of a model at once (then slicing) compiles several times faster
  than one draw per layer.
  """
  sizes = [math.prod(shape) for shape in shapes]
  flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
  out, offset = [], 0
  for shape, size in zip(shapes, sizes):
    out.append(flat[offset : offset + size].reshape(shape))
    offset += size
  return out


def dense_params(z: jax.Array, scale: jax.Array) -> dict[str, jax.Array]:
  """A dense (or conv) layer from standard normals ``z`` [..., fan_out].

  Args:
    z: standard normals of the weight's shape; the fan-in is the product of
      all but the last dimension (e.g. kh * kw * in channels for a conv).
    scale: traced multiplier of the LeCun-normal standard deviation.

  Returns:
    {"w": z * scale / sqrt(fan_in), "b": zeros [fan_out]}, float32.
  """
  fan_in = math.prod(z.shape[:-1])
  return {
    "w": z * (scale / math.sqrt(fan_in)),
    "b": jnp.zeros(z.shape[-1:], jnp.float32),
  }


def mlp_shapes(sizes: Sequence[int]) -> list[tuple[int, int]]:
  """Weight shapes of dense layers mapping ``sizes[i] -> sizes[i+1]``."""
  return [(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]


def mlp_params(
  normals: Sequence[jax.Array], scale: jax.Array
) -> dict[str, dict[str, jax.Array]]:
  """Layers ``layer_0 ..`` from normals of ``mlp_shapes(sizes)``."""
  return {f"layer_{i}": dense_params(z, scale) for i, z in enumerate(normals)}


def mlp_init(
  key: jax.Array, sizes: Sequence[int], scale: jax.Array
) -> dict[str, dict[str, jax.Array]]:
  """Dense layers ``layer_0 .. layer_{n-2}`` mapping ``sizes[i] -> sizes[i+1]``."""
  return mlp_params(normal_draws(key, mlp_shapes(sizes)), scale)


def dense(layer: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
  """``x @ w + b`` over the last axis (explicit broadcast of ``b``)."""
  y = x @ layer["w"]
  return y + layer["b"][(None,) * (y.ndim - 1)]


def mlp_apply(
  params: Mapping[str, Mapping[str, jax.Array]],
  x: jax.Array,
  act_index: jax.Array,
) -> jax.Array:
  """Applies ``mlp_init`` layers, the activation between (not after) them."""
  n = len(params)
  for i in range(n):
    x = dense(params[f"layer_{i}"], x)
    if i < n - 1:
      x = activation(act_index, x)
  return x


# ------------------------------------------------------ host-side sampling


def host_rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded by the bits of a jax key (typed or raw uint32).

  Spec sampling happens on the host (it picks Python values), so it reads the
  key once instead of dispatching many tiny device computations.
  """
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.random.default_rng(np.asarray(key, np.uint32).ravel().tolist())


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
  """A log-uniform draw in [low, high] as a Python float."""
  return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def choose_static(
  rng: np.random.Generator,
  menu: Sequence[Mapping[str, Any]],
  weights: Sequence[float] | None,
) -> dict[str, Any]:
  """Picks one entry of a family's menu of static configurations."""
  if weights is None:
    return dict(menu[int(rng.integers(len(menu)))])
  p = np.asarray(weights, np.float64)
  return dict(menu[int(rng.choice(len(menu), p=p / p.sum()))])


def check_menu(
  menu: Sequence[Mapping[str, Any]],
  weights: Sequence[float] | None,
  static_names: Sequence[str],
  max_entries: int = 8,
) -> None:
  """Validates a menu of static configurations (size, fields, weights).

  Raises:
    ValueError: naming the problem, e.g. too many entries for the compilation
      budget, or entries whose keys are not the spec's static fields.
  """
  if not menu or len(menu) > max_entries:
    raise ValueError(
      f"a family menu needs 1 to {max_entries} static configurations (the "
      f"suite's compilation budget), got {len(menu)}"
    )
  for entry in menu:
    if set(entry) != set(static_names):
      raise ValueError(
        f"menu entry {dict(entry)} must set exactly the static fields "
        f"{tuple(static_names)}"
      )
  if weights is not None and (
    len(weights) != len(menu) or min(weights) < 0 or sum(weights) <= 0
  ):
    raise ValueError(
      f"menu weights {tuple(weights)} must be {len(menu)} non-negative "
      "numbers with a positive sum"
    )


def sample_image_dynamic(rng: np.random.Generator) -> dict[str, Any]:
  """Dynamic fields shared by the image families (as TaskSpec values)."""
  return {
    "activation": ACTIVATION_NAMES[int(rng.integers(len(ACTIVATION_NAMES)))],
    "init_scale": base.round_sig(log_uniform(rng, *INIT_SCALE_RANGE)),
    "dataset": IMAGE_DATASETS[int(rng.integers(len(IMAGE_DATASETS)))],
    "data_seed": int(rng.integers(2**16)),
  }


# ---------------------------------------------------------- image data


def image_data(
  load_images: Callable[[str, int], Any], image_size: int
) -> tuple[dict[str, jax.Array], int]:
  """All ``IMAGE_DATASETS`` at one size as one flat dict for ``Task.data``.

  Args:
    load_images: ``data.load_images``-like ``(name, image_size) -> ImageData``.
    image_size: 8, 16 or 28.

  Returns:
    ({"<dataset>/<split>_x": uint8 [N, S, S, 1], "<dataset>/<split>_y": int32
    [N]}, num_classes).

  Raises:
    ValueError: if the datasets disagree on the number of classes.
  """
  arrays, classes = {}, set()
  for name in IMAGE_DATASETS:
    loaded = load_images(name, image_size)
    classes.add(int(loaded.num_classes))
    for k, v in loaded.arrays.items():
      arrays[f"{name}/{k}"] = v
  if len(classes) != 1:
    raise ValueError(f"datasets {IMAGE_DATASETS} disagree on classes {classes}")
  return arrays, classes.pop()


def check_split(split: str) -> None:
  """Raises a ValueError for a split other than train/valid/test."""
  if split not in ("train", "valid", "test"):
    raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")


def image_batch(
  data: Mapping[str, jax.Array],
  key: jax.Array,
  split: str,
  batch_size: int,
  dataset_index: jax.Array,
  data_seed: jax.Array,
) -> dict[str, jax.Array]:
  """Samples a batch (with replacement) from the traced-selected dataset.

  Every dataset is gathered and the traced index picks one: a batch-sized
  gather is cheap, and it keeps datasets of different lengths possible.

  Returns:
    {"image": float32 [B, S, S, 1] in [0, 1], "label": int32 [B]}.
  """
  check_split(split)
  key = jax.random.fold_in(key, data_seed)
  # One uniform draw serves every dataset (each draw adds compile time).
  u = jax.random.uniform(key, (batch_size,), jnp.float32)
  images, labels = [], []
  for name in IMAGE_DATASETS:
    x, y = data[f"{name}/{split}_x"], data[f"{name}/{split}_y"]
    n = x.shape[0]
    idx = jnp.minimum((u * n).astype(jnp.int32), n - 1)
    images.append(x[idx])  # uint8 gather: 4x less memory traffic than float
    labels.append(y[idx])
  image = jnp.stack(images)[dataset_index].astype(jnp.float32) / 255.0
  # XLA turns "/ 255" into "* (1 / 255)", which maps 255 to 1 + 1 ulp; that
  # made log(1 - x) NaN in the VAE's entropy term.
  image = jnp.minimum(image, 1.0)
  return {"image": image, "label": jnp.stack(labels)[dataset_index]}


def image_dynamic(spec: Any) -> dict[str, jax.Array]:
  """``Task.dynamic`` of an image spec: scalar arrays of its dynamic fields."""
  return {
    "activation": jnp.asarray(
      index_of(spec.activation, ACTIVATION_NAMES, "activation"), jnp.int32
    ),
    "init_scale": jnp.asarray(spec.init_scale, jnp.float32),
    "dataset": jnp.asarray(
      index_of(spec.dataset, IMAGE_DATASETS, "dataset"), jnp.int32
    ),
    "data_seed": jnp.asarray(spec.data_seed, jnp.int32),
  }


@dataclasses.dataclass(frozen=True)
class ImageSpec(base.TaskSpec):
  """The fields every image family's spec shares, after the family's own.

  A family's spec lists ``ImageSpec`` first among its bases and a dataclass
  of its own (shape) fields second: dataclasses take fields from the last
  base first, so the family's fields lead, in its specs' names too
  (``mlp(hidden=32,image_size=8,batch_size=128;activation=relu,...)``).

  Attributes:
    image_size: input side length (8, 16 or 28).
    batch_size: examples per batch.
    activation: one of ``ACTIVATION_NAMES``.
    init_scale: multiplier of the LeCun-normal weight init.
    dataset: "mnist" or "fashion_mnist".
    data_seed: folded into batch keys (decorrelates data streams).
  """

  image_size: int = base.static_field()
  batch_size: int = base.static_field()
  activation: str = base.dynamic_field()
  init_scale: float = base.dynamic_field()
  dataset: str = base.dynamic_field()
  data_seed: int = base.dynamic_field()

  def __post_init__(self):
    index_of(self.activation, ACTIVATION_NAMES, "activation")
    index_of(self.dataset, IMAGE_DATASETS, "dataset")
    if not self.init_scale > 0:
      raise ValueError(f"init_scale must be positive, got {self.init_scale}")
    if self.image_size not in (8, 16, 28):
      raise ValueError(f"image_size must be 8, 16 or 28, got {self.image_size}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {self.batch_size}")


# ------------------------------------------------------- image families


class ImageTask(base.Task):
  """A task on ``image_data`` arrays: shared on-device batch sampling."""

  def batch(self, key: jax.Array, split: str) -> base.Batch:
    """{"image": float32 [B, S, S, 1] in [0, 1], "label": int32 [B]}."""
    return image_batch(
      self.data,
      key,
      split,
      self.static["batch_size"],
      self.dynamic["dataset"],
      self.dynamic["data_seed"],
    )


class ImageFamily:
  """Shared machinery of the image families (mlp, conv, vae, mlp_ae).

  Subclasses set ``name``, ``spec_type``, ``task_type``, ``MENU``,
  ``MENU_WEIGHTS`` and, for reconstruction tasks, ``REFERENCE_STATS``; specs must have the shared image dynamic fields
  (activation, init_scale, dataset, data_seed) plus ``image_size``.

  Args:
    menu: static configurations (dicts of the spec's static fields); at most
      8, the family's share of the suite's compilation budget.
    weights: relative sampling weights of the menu entries; None gives
      ``MENU_WEIGHTS`` for the default menu and uniform weights otherwise.
    load_images: ``(name, image_size) -> data.ImageData``; defaults to
      ``task_suite.data.load_images`` (tests may pass a fake).
  """

  name: str
  spec_type: type
  task_type: type
  MENU: tuple[dict[str, Any], ...]
  MENU_WEIGHTS: tuple[float, ...] | None = None
  # Keys of ``image_reference_stats`` the family's tasks read (``normalize``).
  REFERENCE_STATS: tuple[str, ...] = ()
  NUM_CLASSES = 10  # both image datasets; checked when the data is loaded

  def __init__(
    self,
    menu: Sequence[Mapping[str, Any]] | None = None,
    weights: Sequence[float] | None = None,
    load_images: Callable[[str, int], Any] | None = None,
  ):
    if menu is None:
      menu, weights = self.MENU, weights or self.MENU_WEIGHTS
    check_menu(menu, weights, self.spec_type.static_names())
    self.menu, self.weights = tuple(menu), weights
    self._load_images = load_images or data.load_images
    self._tasks: dict[Any, base.Task] = {}
    self._data: dict[int, dict[str, jax.Array]] = {}

  def sample(self, key: jax.Array) -> Any:
    """Draws a spec deterministically from ``key``."""
    rng = host_rng(key)
    static = choose_static(rng, self.menu, self.weights)
    return self.spec_type(**static, **sample_image_dynamic(rng))

  def task(self, spec: Any) -> base.Task:
    """The task of ``spec`` (the same object for equal specs)."""
    if not isinstance(spec, self.spec_type):
      raise TypeError(
        f"the {self.name} family builds tasks from "
        f"{self.spec_type.__name__}, got {type(spec).__name__}; use "
        "task_suite.get_task(spec) to dispatch on the spec's family."
      )
    if spec not in self._tasks:
      self._tasks[spec] = self.task_type(
        spec.signature, image_dynamic(spec), self.image_data(spec.image_size)
      )
    return self._tasks[spec]

  def image_data(self, image_size: int) -> dict[str, jax.Array]:
    """``Task.data`` at one image size (one dict shared by all its tasks)."""
    if image_size not in self._data:
      arrays, num_classes = image_data(self._load_images, image_size)
      if num_classes != self.NUM_CLASSES:
        raise ValueError(
          f"expected {self.NUM_CLASSES} classes, got {num_classes}"
        )
      arrays.update(self.extra_data(arrays))
      self._data[image_size] = arrays
    return self._data[image_size]

  def extra_data(self, arrays: Mapping[str, jax.Array]) -> dict[str, Any]:
    """The family's ``REFERENCE_STATS`` of the images (per size)."""
    if not self.REFERENCE_STATS:
      return {}
    stats = image_reference_stats(arrays)
    return {k: stats[k] for k in self.REFERENCE_STATS}


def image_reference_stats(
  arrays: Mapping[str, jax.Array], num_examples: int = 10_000
) -> dict[str, jax.Array]:
  """Per-dataset statistics of the train images, for reconstruction tasks.

  Estimated on the first ``num_examples`` train images (enough for 3
  significant digits, and cheap at 28x28).

  Returns:
    "mean_image": float32 [D, S*S] pixel means in [0, 1];
    "pixel_variance": float32 [D], the mean over pixels of the pixel variance
    (the squared error of predicting the mean image);
    "bernoulli_ref": float32 [D], the mean over images of the summed
    Bernoulli KL between each image and the mean image (the loss of
    predicting the mean image, cross-entropy minus the images' own entropy).
  """
  means, variances, refs = [], [], []
  for name in IMAGE_DATASETS:
    # On the host in numpy: eager jnp ops would each compile once.
    x = np.asarray(arrays[f"{name}/train_x"][:num_examples])
    x = x.reshape(x.shape[0], -1).astype(np.float64) / 255.0  # [N, P]
    m = x.mean(axis=0)
    means.append(m)
    variances.append(((x - m[None]) ** 2).mean())
    # Cross-entropy is linear in the targets, so E[H(x, m)] = H(m) summed.
    refs.append(_entropy(m).sum() - _entropy(x).sum(1).mean())
  return {
    "mean_image": jnp.asarray(np.stack(means), jnp.float32),
    "pixel_variance": jnp.asarray(variances, jnp.float32),
    "bernoulli_ref": jnp.asarray(refs, jnp.float32),
  }


def _entropy(p: np.ndarray) -> np.ndarray:
  q = 1.0 - p
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.nan_to_num(p * np.log(p)) - np.nan_to_num(q * np.log(q))


def bernoulli_entropy(p: jax.Array) -> jax.Array:
  """Elementwise entropy (nats) of Bernoulli(p), 0 at p in {0, 1}."""
  p = jnp.clip(p, 0.0, 1.0)  # 1 + 1 ulp would make log(1 - p) NaN
  return -(
    jax.scipy.special.xlogy(p, p) + jax.scipy.special.xlogy(1 - p, 1 - p)
  )


def logit(p: jax.Array, eps: float = 1e-3) -> jax.Array:
  """Log-odds of ``p`` clipped to [eps, 1 - eps] (finite for 0/1 pixels)."""
  p = jnp.clip(p, eps, 1.0 - eps)
  return jnp.log(p) - jnp.log1p(-p)
