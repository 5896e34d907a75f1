"""The small state that carries a meta-training campaign from leg to leg.

A workdir's orbax checkpoints hold everything, including every estimator's
inner runs (parameters and optimizer states of the whole population: tens of
MB for the 16 groups of ``configs/scale_aware.py``). A campaign commits only
``WORKDIR/leg_state.npz``: theta, the outer optimizer's state, the step and
the count of skipped steps (0.4 MB for 36k meta-parameters), written beside
every checkpoint. A workdir that has this file but no checkpoint resumes
from it with fresh inner runs: the next leg continues theta's trajectory
and the outer optimizer's moments, but not bit-exactly (the inner runs
restart, staggered as at any start).

The file is a plain ``.npz`` (no pickle): one array per leaf, named by its
path in the state (``theta['mlp'][0]['w']``, ...), checked leaf by leaf
against the state this code builds.
"""

import pathlib
from typing import Any

import jax
import numpy as np

FILENAME = "leg_state.npz"
# The fields of train.OuterState that a leg carries over.
FIELDS = ("theta", "opt_state", "step", "num_skipped")


class LegStateError(ValueError):
  """A leg state does not fit the state this code and config build."""


def _named_leaves(state) -> dict[str, Any]:
  tree = {f: getattr(state, f) for f in FIELDS}
  return {
    jax.tree_util.keystr(path): leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def save(path: pathlib.Path, state) -> None:
  """Writes ``state``'s carried fields (host arrays) to ``path``, atomically.

  Args:
    path: the ``.npz`` file to write.
    state: an ``OuterState`` (or anything with ``FIELDS``) of numpy arrays.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    np.savez(f, **{k: np.asarray(v) for k, v in _named_leaves(state).items()})
  tmp.replace(path)


def load_into(path: pathlib.Path, fresh) -> dict[str, Any]:
  """The carried fields of ``fresh`` with the values stored at ``path``.

  Args:
    path: a file written by ``save``.
    fresh: the state this code builds (arrays or ShapeDtypeStructs).

  Returns:
    ``{field: subtree}`` for ``FIELDS``, numpy arrays in ``fresh``'s layout.

  Raises:
    LegStateError: naming the leaves that are missing, extra or of
      another shape or dtype.
  """
  with np.load(path, allow_pickle=False) as stored:
    stored = {k: stored[k] for k in stored.files}
  expected = _named_leaves(fresh)
  problems = [f"missing {k}" for k in expected if k not in stored]
  problems += [f"unexpected {k}" for k in stored if k not in expected]
  for k, leaf in expected.items():
    if k in stored and (
      stored[k].shape != leaf.shape or stored[k].dtype != leaf.dtype
    ):
      problems.append(
        f"{k}: stored {stored[k].dtype}{list(stored[k].shape)}, this run "
        f"{leaf.dtype}{list(leaf.shape)}"
      )
  if problems:
    raise LegStateError(
      f"{path} does not fit this run's state ({'; '.join(problems[:5])}). "
      "Continue the campaign with the config and code it was written with, "
      "or start the leg from theta alone (--config.lopt.init_from)."
    )
  out = {}
  for f in FIELDS:
    sub = getattr(fresh, f)
    paths = jax.tree_util.tree_leaves_with_path({f: sub})
    leaves = [stored[jax.tree_util.keystr(p)] for p, _ in paths]
    out[f] = jax.tree.unflatten(jax.tree.structure(sub), leaves)
  return out
