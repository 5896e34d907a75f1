"""Meta-training a part of theta: the estimator perturbs only that part.

``restrict(make, optimizer_fn, cfg, mask)`` runs the estimator ``make``
over the trainable leaves of theta alone (``mask``: a theta-shaped tree of
bools). The frozen leaves stay in the optimizer as constants. Its
meta-gradient is zero on the frozen leaves, so an outer optimizer that
maps a zero gradient to a zero update (Adam, SGD; ``train.py`` also zeroes
their updates) leaves them where they are.

Why not mask the meta-gradient after a full estimate: ES and PES perturb
every meta-parameter, and each perturbation adds its effect on the loss
as noise to every coordinate's estimate. Perturbing only the ``n``
trainable ones divides its variance by up to ``total / n``: 65 weights of a
step-size head (``step_scale="lstm_head"``) against the ~36k of a
hierarchical optimizer.

Which leaves: ``trainable_mask(theta, paths)``. A path names a subtree by
its keys and indices joined with "/": ``"lr_head"``, ``"mlp/1"``,
``"mlp/1/w"``.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

MetaParams = Any


def leaf_paths(theta: MetaParams) -> list[str]:
  """Every leaf's path, ``"mlp/1/w"``-style, in the tree's leaf order."""
  with_paths, _ = jax.tree_util.tree_flatten_with_path(theta)
  return [
    jax.tree_util.keystr(path, simple=True, separator="/")
    for path, _ in with_paths
  ]


def trainable_mask(theta: MetaParams, paths: Sequence[str]) -> MetaParams:
  """A theta-shaped tree of bools: the leaves under any of ``paths``.

  Raises:
    ValueError: a path that names no subtree of theta (with theta's
      top-level entries, to pick from).
  """
  leaves = leaf_paths(theta)
  under = lambda leaf, p: leaf == p or leaf.startswith(p + "/")
  for p in paths:
    if not any(under(leaf, p) for leaf in leaves):
      top = sorted({leaf.split("/")[0] for leaf in leaves})
      raise ValueError(
        f"trainable path {p!r} names no part of theta; its top-level "
        f"entries are {top} (paths join keys and indices with '/', "
        "e.g. 'mlp/1/w')"
      )
  flags = [any(under(leaf, p) for p in paths) for leaf in leaves]
  return jax.tree.unflatten(jax.tree.structure(theta), flags)


def _split(theta, flags):
  leaves, treedef = jax.tree.flatten(theta)
  train = [x for x, f in zip(leaves, flags, strict=True) if f]
  frozen = [x for x, f in zip(leaves, flags, strict=True) if not f]
  return train, frozen, treedef


def _merge(train, frozen, flags, treedef):
  train, frozen = iter(train), iter(frozen)
  return jax.tree.unflatten(
    treedef, [next(train) if f else next(frozen) for f in flags]
  )


def restrict(
  make: Callable[[Callable, Any], Any],
  optimizer_fn: Callable,
  cfg: Any,
  mask: MetaParams,
):
  """The estimator ``make(optimizer_fn, cfg)`` over the leaves ``mask`` marks.

  Returns:
    ``(init, estimate)`` of the ``Estimator`` contract: both take the whole
    theta; the meta-gradient is theta-shaped, zero where ``mask`` is False.
  """
  flags = jax.tree.leaves(mask)

  def bound(theta):
    """``make`` over the trainable leaves, the frozen ones as constants."""
    train, frozen, treedef = _split(theta, flags)
    fn = lambda t: optimizer_fn(_merge(t, frozen, flags, treedef))
    return make(fn, cfg), train, frozen, treedef

  def init(theta, tasks, key):
    est, train, _, _ = bound(theta)
    return est.init(train, tasks, key)

  def estimate(theta, tasks, state, key):
    est, train, frozen, treedef = bound(theta)
    grad, state, metrics = est.estimate(train, tasks, state, key)
    zeros = [jnp.zeros_like(x) for x in frozen]
    return _merge(grad, zeros, flags, treedef), state, metrics

  return init, estimate
