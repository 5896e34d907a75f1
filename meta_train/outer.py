"""The guarded outer step: estimate, clip, update; never a non-finite theta.

``make_outer_step(estimate, tx, clip_norm)`` is the one outer step of the
project: meta-training (``train.py``) and self-training
(``self_training/self_train.py``) both run it. The caller jits it.

Example:
  >>> step = outer.make_outer_step(estimate, optax.adam(1e-3), clip_norm=30.)
  >>> theta, opt_state, est_state, metrics = step(
  ...     theta, opt_state, est_state, key)
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from meta_train import unroll

MetaParams = Any
# (theta, est_state, key) -> (meta_grad, est_state, metrics with "meta_loss")
EstimateFn = Callable[[MetaParams, Any, jax.Array], tuple[Any, Any, dict]]


def make_outer_step(
  estimate: EstimateFn,
  tx: optax.GradientTransformationExtraArgs,
  clip_norm: float,
) -> Callable:
  """One outer step: ``(theta, opt_state, est_state, key) -> (..., metrics)``.

  The meta-gradient is clipped to global norm ``clip_norm`` (0: none) and
  ``tx`` gets the meta-loss as ``value`` (a learned outer optimizer reads
  it). A non-finite meta-gradient norm, meta-loss or new theta never reaches
  theta: theta and the outer-optimizer state are kept, ``metrics["skipped"]``
  is True. The estimator state advances either way (its own guards reset
  the inner runs that went non-finite).

  Args:
    estimate: ``(theta, est_state, key) -> (grad, est_state, metrics)``;
      ``metrics["meta_loss"]`` is the scalar meta-loss.
    tx: the outer optimizer (any optax transform, a learned one included).
    clip_norm: global-norm clip of the meta-gradient (0: no clipping).

  Returns:
    The pure step function; its metrics are the estimator's plus
    ``grad_norm`` and ``skipped``.
  """

  def step(theta, opt_state, est_state, key):
    grad, est_state, metrics = estimate(theta, est_state, key)
    grad_norm = optax.tree.norm(grad)
    if clip_norm:
      grad = optax.tree.scale(jnp.minimum(1.0, clip_norm / grad_norm), grad)
    meta_loss = metrics["meta_loss"]
    updates, new_opt_state = tx.update(grad, opt_state, theta, value=meta_loss)
    new_theta = optax.apply_updates(theta, updates)
    ok = jnp.isfinite(grad_norm) & jnp.isfinite(meta_loss)
    ok &= unroll.tree_finite(new_theta)
    keep = lambda new, old: jax.tree.map(
      lambda a, b: jnp.where(ok, a, b), new, old
    )
    metrics = dict(metrics, grad_norm=grad_norm, skipped=~ok)
    return (
      keep(new_theta, theta),
      keep(new_opt_state, opt_state),
      est_state,
      metrics,
    )

  return step
