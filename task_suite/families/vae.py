"""MLP variational autoencoders on images (TaskSet's ``vae`` family).

Static fields: encoder widths (the decoder mirrors them), latent size (2-64),
image size and batch size, from a menu of at most 8 configurations. Dynamic
fields: activation, init scale, dataset, data seed.

The loss is the negative ELBO per image with a Bernoulli decoder over the
grey levels, minus the images' own entropy (a constant), so that a perfect
reconstruction costs 0: sum over pixels of KL(Bernoulli(x) || Bernoulli(p))
plus KL(q(z|x) || N(0, I)). ``normalize`` divides it by the cost of
predicting the dataset's mean image; the output bias starts at that mean
image, so a fresh model scores about 1.
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from task_suite import base
from task_suite.families import common, mlp_ae

MENU: tuple[dict[str, Any], ...] = (
  {"hidden": (16,), "latent": 2, "image_size": 8, "batch_size": 128},
  {"hidden": (32,), "latent": 2, "image_size": 8, "batch_size": 64},
  {"hidden": (64,), "latent": 8, "image_size": 8, "batch_size": 64},
  {"hidden": (64, 32), "latent": 4, "image_size": 8, "batch_size": 64},
  {"hidden": (128,), "latent": 16, "image_size": 8, "batch_size": 32},
  {"hidden": (32, 32), "latent": 8, "image_size": 16, "batch_size": 64},
  {"hidden": (128, 64), "latent": 32, "image_size": 16, "batch_size": 32},
  {"hidden": (256,), "latent": 64, "image_size": 28, "batch_size": 32},
)
MENU_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5)
STATS_HEAD_SCALE = 0.1  # of the LeCun-normal std, for the posterior head
_SOFTPLUS_INV_1 = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_INV_1) == 1


@dataclasses.dataclass(frozen=True)
class _VAEShape:
  """VAESpec's own fields (they lead: ``common.ImageSpec``)."""

  hidden: tuple[int, ...] = base.static_field()
  latent: int = base.static_field()


@dataclasses.dataclass(frozen=True)
class VAESpec(common.ImageSpec, _VAEShape):
  """An MLP variational autoencoder.

  Attributes (and ``common.ImageSpec``'s):
    hidden: encoder hidden widths; the decoder mirrors them.
    latent: size of the Gaussian latent.
  """

  family: ClassVar[str] = "vae"

  def __post_init__(self):
    super().__post_init__()
    if any(w < 1 for w in self.hidden) or self.latent < 1:
      raise ValueError(
        f"hidden widths and latent must be positive, got {self.hidden}, "
        f"{self.latent}"
      )


class VAETask(common.ImageTask):
  """Negative ELBO (minus the data entropy) of an MLP VAE."""

  def init(self, key: jax.Array) -> base.Params:
    s, scale = self.static, self.dynamic["init_scale"]
    pixels = s["image_size"] ** 2
    mean_image = self.data["mean_image"][self.dynamic["dataset"]]  # [P]
    params = mlp_ae.autoencoder_init(
      key,
      (pixels, *s["hidden"], 2 * s["latent"]),
      (s["latent"], *reversed(s["hidden"]), pixels),
      scale,
      mean_image,
    )
    # The posterior head starts at a fixed small scale, so q(z|x) starts near
    # the prior (KL near 0) whatever init_scale does to the other layers;
    # scaled like them, the KL alone put fresh losses at 10-100x reference.
    head = f"layer_{len(params['encoder']) - 1}"
    w = params["encoder"][head]["w"]
    params["encoder"][head]["w"] = w * (STATS_HEAD_SCALE / scale)
    return params

  def loss(
    self, params: base.Params, key: jax.Array, batch: base.Batch
  ) -> jax.Array:
    act = self.dynamic["activation"]
    x = batch["image"].reshape(batch["image"].shape[0], -1)  # [B, P]
    stats = common.mlp_apply(params["encoder"], x, act)  # [B, 2 * latent]
    mu, sigma_raw = jnp.split(stats, 2, axis=-1)
    # softplus, not exp: a large raw value cannot overflow the KL to inf/NaN.
    sigma = jax.nn.softplus(sigma_raw + _SOFTPLUS_INV_1) + 1e-4  # 1 at raw 0
    log_sigma = jnp.log(sigma)
    eps = jax.random.normal(key, mu.shape, jnp.float32)
    z = mu + sigma * eps  # reparameterization
    logits = common.mlp_apply(params["decoder"], z, act)  # [B, P]
    recon = optax.sigmoid_binary_cross_entropy(logits, x)
    recon = recon - common.bernoulli_entropy(x)  # >= 0, 0 when p = x
    kl = 0.5 * (mu**2 + sigma**2 - 1.0 - 2.0 * log_sigma)
    return jnp.mean(recon.sum(axis=-1) + kl.sum(axis=-1))

  def normalize(self, loss: jax.Array) -> jax.Array:
    reference = self.data["bernoulli_ref"][self.dynamic["dataset"]]
    return common.cap(loss / reference)


class VAEFamily(common.ImageFamily):
  """Samples ``VAESpec``s from a menu of static configurations.

  Args: see ``common.ImageFamily`` (menu entries set hidden, latent,
  image_size and batch_size).
  """

  name = "vae"
  spec_type = VAESpec
  task_type = VAETask
  MENU = MENU
  MENU_WEIGHTS = MENU_WEIGHTS
  # Mean images and reference losses per dataset (see ``normalize``).
  REFERENCE_STATS = ("mean_image", "bernoulli_ref")
