"""MLP autoencoders on images (TaskSet's ``mlp_ae`` family).

Static fields: encoder widths (the decoder mirrors them; the last width is
the code size), image size and batch size, from a menu of at most 8
configurations. Dynamic fields: activation, init scale, dataset, data seed.
The loss is the mean squared error of sigmoid outputs; ``normalize`` divides
it by the error of predicting the dataset's mean image, and the output bias
starts at that mean image, so a fresh model scores about 1.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from task_suite import base
from task_suite.families import common

MENU: tuple[dict[str, Any], ...] = (
  {"hidden": (16,), "image_size": 8, "batch_size": 128},
  {"hidden": (32,), "image_size": 8, "batch_size": 64},
  {"hidden": (128,), "image_size": 8, "batch_size": 64},
  {"hidden": (64, 16), "image_size": 8, "batch_size": 64},
  {"hidden": (32, 32, 8), "image_size": 8, "batch_size": 128},
  {"hidden": (64, 32, 16), "image_size": 16, "batch_size": 64},
  {"hidden": (128, 32), "image_size": 16, "batch_size": 32},
  {"hidden": (256, 64), "image_size": 28, "batch_size": 32},
)
MENU_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class _MLPAEShape:
  """MLPAESpec's own fields (they lead: ``common.ImageSpec``)."""

  hidden: tuple[int, ...] = base.static_field()


@dataclasses.dataclass(frozen=True)
class MLPAESpec(common.ImageSpec, _MLPAEShape):
  """An MLP autoencoder.

  Attributes (and ``common.ImageSpec``'s):
    hidden: encoder widths, e.g. ``(64, 16)`` (code size 16); the decoder
      mirrors them.
  """

  family: ClassVar[str] = "mlp_ae"

  def __post_init__(self):
    super().__post_init__()
    if not self.hidden or any(w < 1 for w in self.hidden):
      raise ValueError(
        f"hidden needs at least one positive width, got {self.hidden}"
      )


def autoencoder_init(
  key: jax.Array,
  encoder_sizes: tuple[int, ...],
  decoder_sizes: tuple[int, ...],
  scale: jax.Array,
  mean_image: jax.Array,
) -> dict[str, Any]:
  """Encoder and decoder layers; the output bias is the mean image's logit."""
  enc_shapes = common.mlp_shapes(encoder_sizes)
  normals = common.normal_draws(
    key, enc_shapes + common.mlp_shapes(decoder_sizes)
  )
  decoder = common.mlp_params(normals[len(enc_shapes) :], scale)
  last = f"layer_{len(decoder) - 1}"
  decoder[last] = {**decoder[last], "b": common.logit(mean_image)}
  return {
    "encoder": common.mlp_params(normals[: len(enc_shapes)], scale),
    "decoder": decoder,
  }


class MLPAETask(common.ImageTask):
  """Mean squared reconstruction error of an MLP autoencoder."""

  def init(self, key: jax.Array) -> base.Params:
    s, scale = self.static, self.dynamic["init_scale"]
    pixels = s["image_size"] ** 2
    mean_image = self.data["mean_image"][self.dynamic["dataset"]]  # [P]
    return autoencoder_init(
      key,
      (pixels, *s["hidden"]),
      (*reversed(s["hidden"]), pixels),
      scale,
      mean_image,
    )

  def loss(
    self, params: base.Params, key: jax.Array, batch: base.Batch
  ) -> jax.Array:
    del key  # deterministic model
    act = self.dynamic["activation"]
    x = batch["image"].reshape(batch["image"].shape[0], -1)  # [B, P]
    code = common.activation(act, common.mlp_apply(params["encoder"], x, act))
    recon = jax.nn.sigmoid(common.mlp_apply(params["decoder"], code, act))
    return jnp.mean((recon - x) ** 2)

  def normalize(self, loss: jax.Array) -> jax.Array:
    reference = self.data["pixel_variance"][self.dynamic["dataset"]]
    return common.cap(loss / reference)


class MLPAEFamily(common.ImageFamily):
  """Samples ``MLPAESpec``s from a menu of static configurations.

  Args: see ``common.ImageFamily`` (menu entries set hidden, image_size and
  batch_size).
  """

  name = "mlp_ae"
  spec_type = MLPAESpec
  task_type = MLPAETask
  MENU = MENU
  MENU_WEIGHTS = MENU_WEIGHTS
  # Mean images and reference errors per dataset (see ``normalize``).
  REFERENCE_STATS = ("mean_image", "pixel_variance")
