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

Orbax does not notice every damaged file (a flipped byte in an array can
restore as a wrong value), so each committed checkpoint gets the sha256 of
its files (``CHECKSUMS``, written by process 0 once orbax has committed it).
``restore_latest`` verifies them and, if the newest checkpoint is damaged,
resumes from the newest valid one with a warning naming both; the damaged
ones are moved to ``WORKDIR/damaged_checkpoints/``. If none is valid it
raises ``RestoreError`` and moves nothing.
"""

import json
import logging
import os
import pathlib
import shutil
import time
from typing import Any

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

import learned_opt
from learned_opt import checkpoint as lopt_checkpoint

STATE = "state"
CONFIG = "config"
CHECKSUMS = "lopt_sha256.json"  # in each step directory
DAMAGED = "damaged_checkpoints"  # beside the checkpoint directory


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
  if jax.process_index() == 0:
    directory = step_directory(manager, step)
    tmp = directory / f".{CHECKSUMS}.tmp"
    tmp.write_text(json.dumps(_file_hashes(directory), indent=1))
    tmp.replace(directory / CHECKSUMS)


def step_directory(manager: ocp.CheckpointManager, step: int) -> pathlib.Path:
  """The directory of checkpoint ``step``."""
  return pathlib.Path(manager.directory) / str(step)


def _file_hashes(directory: pathlib.Path) -> dict[str, str]:
  hashes = lopt_checkpoint._file_hashes(directory)  # noqa: SLF001
  hashes.pop(CHECKSUMS, None)
  return hashes


def verify(manager: ocp.CheckpointManager, step: int) -> str | None:
  """What is wrong with checkpoint ``step``'s files, or None if intact.

  A checkpoint without checksums (killed between orbax's commit and their
  write, or written before they existed) counts as intact here; orbax still
  checks what it can when restoring it.
  """
  directory = step_directory(manager, step)
  try:
    want = json.loads((directory / CHECKSUMS).read_text())
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    return f"unreadable {CHECKSUMS}: {e}"
  have = _file_hashes(directory)
  for name in sorted(want.keys() | have.keys()):
    if name not in have:
      return f"file {name} is missing"
    if name not in want:
      return f"file {name} was not in the checkpoint when it was written"
    if want[name] != have[name]:
      return f"file {name} was changed or truncated (sha256 mismatch)"
  return None


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


def _as_stored(manager: ocp.CheckpointManager, step: int, abstract: Any):
  """``abstract``'s leaves in the containers of the stored tree.

  A state's NamedTuples may have gained fields that hold None (no leaves,
  e.g. an optimizer state's ``param_scale`` when unused): orbax compares
  containers key by key and would refuse a checkpoint written before them,
  although every leaf fits (``_layout_mismatch`` checked that).
  """
  try:
    stored = manager.item_metadata(step)[STATE].tree
  except Exception:  # noqa: BLE001 (unreadable metadata: the restore reports)
    return abstract
  wanted = ocp.tree.to_flat_dict(abstract)
  flat = {path: wanted[path] for path in ocp.tree.to_flat_dict(stored)}
  return ocp.tree.from_flat_dict(flat, target=stored)


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
          STATE: ocp.args.StandardRestore(
            _as_stored(manager, step, abstract_target)
          ),
          CONFIG: ocp.args.JsonRestore(),
        }
      ),
    )
  except (ValueError, KeyError, TypeError) as e:
    raise refused(e) from e
  flat = ocp.tree.to_flat_dict(restored[STATE])
  leaves = [flat[path] for path in ocp.tree.to_flat_dict(abstract_target)]
  state = jax.tree.map(
    lambda t, x: (
      jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
      if _is_key(t)
      else x
    ),
    target,
    jax.tree.unflatten(jax.tree.structure(target), leaves),
  )
  return state, dict(restored[CONFIG])


def restore_latest(
  manager: ocp.CheckpointManager, target: Any
) -> tuple[Any, dict[str, Any], int]:
  """Restores the newest valid checkpoint (see the module docstring).

  Args:
    manager: from ``make_manager``.
    target: as for ``restore``.

  Returns:
    ``(state, config, step)``.

  Raises:
    FileNotFoundError: if there is no checkpoint.
    RestoreError: if no checkpoint is valid (nothing is moved or deleted),
      or if the newest intact one stores a state of another layout.
  """
  manager.reload()
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  damaged = []
  for step in steps:
    reason = verify(manager, step)
    if reason is None:
      try:
        state, config = restore(manager, target, step)
      except RestoreError:
        raise  # intact files of another layout: not a damage
      except Exception as e:  # noqa: BLE001 (any other failed read: damaged)
        reason = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    if reason is None:
      break
    damaged.append((step, reason))
  else:
    listed = "; ".join(f"checkpoint {s}: {r}" for s, r in damaged)
    raise RestoreError(
      f"no valid checkpoint in {manager.directory} ({listed}). Nothing was "
      "moved or deleted: restore the files from a copy, or start again in a "
      "new --workdir."
    )
  if damaged:
    _set_aside(manager, [s for s, _ in damaged])
    for bad, reason in damaged:
      logging.warning(
        "checkpoint %d in %s is damaged (%s); resuming from checkpoint %d, "
        "the newest valid one. The damaged one was moved to %s.",
        bad, manager.directory, reason, step,
        pathlib.Path(manager.directory).parent / DAMAGED,
      )  # fmt: skip
  return state, config, step


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves damaged checkpoints out of the way of the run's next saves."""
  if jax.process_count() > 1:  # every process is done reading them
    multihost_utils.sync_global_devices("lopt_damaged_checkpoints_read")
  if jax.process_index() == 0:
    aside = pathlib.Path(manager.directory).parent / DAMAGED
    aside.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for step in steps:
      shutil.move(step_directory(manager, step), aside / f"{step}-{stamp}")
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("lopt_damaged_checkpoints_moved")
  manager.reload()


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
  # Only this process writes (the others are already in the next outer
  # step's collectives), so no barrier may wait for them.
  learned_opt.save(path, lopt, theta, metadata, this_process_only=True)
