"""Orbax checkpoints of the whole meta-training state, with resume.

A checkpoint holds one pytree (theta, outer-optimizer state, every
estimator state with its inner runs, the step) and the resolved config as
JSON, under ``WORKDIR/checkpoints/<step>``. Orbax writes each checkpoint
into a temporary directory and renames it only once complete, so a failure
or a kill mid-save leaves the previous checkpoint as the latest good one;
leftover temporary directories are removed when the manager is next opened.

Typed PRNG keys are stored as their raw ``uint32`` data and re-wrapped on
restore (``jax.random.key_data`` / ``wrap_key_data``), so any state may hold
keys. Restoring takes a *target* (the freshly initialized state): shapes,
dtypes and shardings come from it, so a run resumed on another device count
is resharded on load.

Every process must call ``save`` and ``restore`` (orbax coordinates the
multi-process writes itself).
"""

import os
from typing import Any
from unittest import mock

import jax
import orbax.checkpoint as ocp

import learned_opt

STATE = "state"
CONFIG = "config"


class RestoreError(ValueError):
  """A checkpoint does not fit the state this code builds for its run."""


def make_manager(
  directory: str | os.PathLike, keep: int
) -> ocp.CheckpointManager:
  """Opens (or creates) the checkpoint directory of a run.

  Args:
    directory: where the step directories live.
    keep: number of most recent checkpoints kept.

  Returns:
    An orbax ``CheckpointManager`` (close it with ``manager.close()``).
  """
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    create=True,
    cleanup_tmp_directories=True,
    # Synchronous: the outer step donates its input buffers, so the arrays
    # must be fully written before the next step reuses them.
    enable_async_checkpointing=False,
  )
  # Handlers named up front, so that a freshly opened manager can read a
  # checkpoint's metadata before restoring it (``_layout_mismatch``).
  handlers = {
    STATE: ocp.StandardCheckpointHandler(),
    CONFIG: ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(
    os.path.abspath(directory), options=options, item_handlers=handlers
  )


def latest_step(manager: ocp.CheckpointManager) -> int | None:
  """The step of the newest complete checkpoint, or None."""
  manager.reload()
  return manager.latest_step()


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
    x.dtype, jax.dtypes.prng_key
  )


def _keys_to_data(tree: Any) -> Any:
  return jax.tree.map(
    lambda x: jax.random.key_data(x) if _is_key(x) else x, tree
  )


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: Any,
  config: dict[str, Any],
) -> None:
  """Saves ``state`` and ``config`` as checkpoint ``step`` (blocking).

  Args:
    manager: from ``make_manager``.
    step: the outer step the state is at.
    state: pytree of ``jax.Array``s (typed keys allowed).
    config: JSON-compatible resolved configuration.
  """
  manager.save(
    step,
    args=ocp.args.Composite(
      **{
        STATE: ocp.args.StandardSave(_keys_to_data(state)),
        CONFIG: ocp.args.JsonSave(config),
      }
    ),
    force=True,
  )
  manager.wait_until_finished()


def _layout_mismatch(
  manager: ocp.CheckpointManager, step: int, target: Any
) -> str | None:
  """How the stored state's leaves differ from ``target``'s, or None."""
  try:
    stored = ocp.tree.to_flat_dict(manager.item_metadata(step)[STATE].tree)
  except Exception:  # unreadable metadata: left to the restore to report
    return None
  wanted = ocp.tree.to_flat_dict(target)
  name = lambda path: "/".join(path)
  if stored.keys() != wanted.keys():
    extra = sorted(map(name, stored.keys() - wanted.keys()))
    missing = sorted(map(name, wanted.keys() - stored.keys()))
    return (
      f"stored leaves not in this state: {extra[:3]}; leaves of this state "
      f"not stored: {missing[:3]}"
    )
  for path, leaf in wanted.items():
    shape = tuple(getattr(stored[path], "shape", None) or ())
    if shape != tuple(leaf.shape):
      return (
        f"{name(path)} is stored with shape {shape}, this code builds "
        f"{tuple(leaf.shape)}"
      )
  return None


def restore(
  manager: ocp.CheckpointManager, target: Any, step: int | None = None
) -> tuple[Any, dict[str, Any]]:
  """Restores a checkpoint into the structure, dtypes and shardings of target.

  Args:
    manager: from ``make_manager``.
    target: a state like the one saved (concrete arrays or
      ``jax.ShapeDtypeStruct``s with shardings).
    step: which checkpoint (default: the latest).

  Returns:
    ``(state, config)``: the restored state and the config saved with it.

  Raises:
    FileNotFoundError: if there is no checkpoint.
    RestoreError: if the stored state does not fit ``target`` (another
      structure or shapes, e.g. written by another version of this code).
  """
  if step is None:
    step = latest_step(manager)
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")

  def abstract(x):
    return jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=getattr(x, "sharding", None)
    )

  abstract_target = jax.tree.map(abstract, _keys_to_data(target))

  def refused(reason) -> RestoreError:
    return RestoreError(
      f"checkpoint {step} in {manager.directory} does not fit the state "
      f"this code builds for the run ({reason}). A run written by another "
      "version of this code can hold a state of another layout: resume it "
      "with that version, or start again in a new --workdir."
    )

  # Checked before reading: a restore that fails midway leaves orbax's
  # in-flight reads behind, and its error does not say what to do.
  mismatch = _layout_mismatch(manager, step, abstract_target)
  if mismatch:
    raise refused(mismatch)
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        **{
          STATE: ocp.args.StandardRestore(abstract_target),
          CONFIG: ocp.args.JsonRestore(),
        }
      ),
    )
  except (ValueError, KeyError, TypeError) as e:
    raise refused(e) from e
  state = jax.tree.map(
    lambda t, x: (
      jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
      if _is_key(t)
      else x
    ),
    target,
    restored[STATE],
  )
  return state, dict(restored[CONFIG])


def export_theta(
  path: str | os.PathLike,
  lopt: learned_opt.LearnedOptimizer,
  theta: Any,
  metadata: dict[str, Any],
) -> None:
  """Exports theta as a ``learned_opt`` checkpoint (call on one process).

  Args:
    path: the checkpoint directory (replaced atomically).
    lopt: the learned optimizer.
    theta: host (numpy) meta-parameters.
    metadata: JSON metadata stored with them.
  """
  if jax.process_count() == 1:
    learned_opt.save(path, lopt, theta, metadata)
    return
  # learned_opt.save's orbax checkpointer waits at barriers for every
  # process, but only process 0 exports (the others are already in the next
  # outer step's collectives): seen as a single-process save it skips them.
  with mock.patch.object(jax, "process_count", lambda: 1):
    learned_opt.save(path, lopt, theta, metadata)
