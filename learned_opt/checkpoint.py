"""Saving and loading learned-optimizer weights (theta) with orbax.

A checkpoint is a directory::

  path/
    manifest.json   # format version, lopt.config(), theta leaf paths/shapes/
                    # dtypes, user metadata, sha256 of every weight file
    theta/          # orbax PyTree checkpoint of theta

The manifest lets ``load`` rebuild the optimizer that the weights belong to
(through ``learned_opt.registry``), check that the weights fit it before
reading them, and detect truncated or corrupted files. No pickle anywhere.

Saving is atomic: everything is written to a temporary sibling directory
that is renamed to ``path`` only once complete, so an interrupted save leaves
either no checkpoint or the previous one, never a half-written one.

Example:
  >>> learned_opt.save("ckpt/mlp", lopt, theta, {"outer_step": 1000})
  >>> lopt, theta, metadata = learned_opt.load("ckpt/mlp")
"""

import hashlib
import json
import os
import pathlib
import shutil
from typing import Any
import uuid

import jax
import numpy as np

from learned_opt import base, registry

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_DIR = "theta"


def _orbax():
  # Imported on first use: orbax adds seconds to `import learned_opt`, which
  # most users (and every inner-loop test) never need.
  import orbax.checkpoint as ocp

  return ocp


class CheckpointError(ValueError):
  """A checkpoint that is corrupted or does not fit the requested optimizer."""


def _leaf_specs(tree: Any) -> list[dict[str, Any]]:
  """JSON description of a tree's leaves, in flattening order."""
  return [
    {
      "path": jax.tree_util.keystr(path),
      "shape": list(np.shape(leaf)),
      "dtype": str(np.dtype(jax.numpy.result_type(leaf))),
    }
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  ]


def _abstract_theta(lopt: base.LearnedOptimizer) -> Any:
  # The key is made inside the trace: a concrete jax.random.key would be a
  # host-to-device transfer, refused under jax.transfer_guard("disallow").
  return jax.eval_shape(lambda: lopt.init(jax.random.key(0)))


def _file_hashes(directory: pathlib.Path) -> dict[str, str]:
  """sha256 of every file below ``directory``, keyed by relative path."""
  hashes = {}
  for file in sorted(p for p in directory.rglob("*") if p.is_file()):
    digest = hashlib.sha256()
    with open(file, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    hashes[file.relative_to(directory).as_posix()] = digest.hexdigest()
  return hashes


def _normalized(config: dict[str, Any]) -> Any:
  """``config`` as it reads back from JSON (tuples become lists)."""
  return json.loads(json.dumps(config))


def _check_fits(lopt: base.LearnedOptimizer, leaves, where: str) -> None:
  """Raises if ``leaves`` (specs) are not the shapes ``lopt.init`` makes."""
  expected = _leaf_specs(_abstract_theta(lopt))
  if leaves == expected:
    return
  got = {leaf["path"]: leaf for leaf in leaves}
  want = {leaf["path"]: leaf for leaf in expected}
  problems = [
    f"{p}: {got.get(p, 'missing')} vs expected {want.get(p, 'none')}"
    for p in sorted(set(got) | set(want))
    if got.get(p) != want.get(p)
  ]
  raise CheckpointError(
    f"{where}: theta does not fit {lopt!r} ({len(problems)} leaves differ, "
    f"e.g. {'; '.join(problems[:3])}). Pass the optimizer (with the sizes) "
    "that theta was made for."
  )


def _check_finite(theta: Any, path: pathlib.Path) -> None:
  """Raises if a leaf of ``theta`` (host arrays) holds NaN or inf."""
  bad = [
    jax.tree_util.keystr(p)
    for p, leaf in jax.tree_util.tree_leaves_with_path(theta)
    if not np.all(np.isfinite(leaf))
  ]
  if bad:
    # A diverged theta is never a usable optimizer, and writing it would
    # replace a good checkpoint at the same path.
    raise CheckpointError(
      f"save: theta has NaN or inf values (in {', '.join(bad[:3])}"
      f"{', ...' if len(bad) > 3 else ''}); nothing was written to {path}. "
      "Save the last finite theta instead."
    )


def save(
  path: str | os.PathLike,
  lopt: base.LearnedOptimizer,
  theta: base.MetaParams,
  metadata: dict[str, Any] | None = None,
  *,
  this_process_only: bool = False,
) -> pathlib.Path:
  """Writes ``theta`` and ``lopt``'s architecture to the directory ``path``.

  An existing checkpoint at ``path`` is replaced, but only once the new one
  is completely written.

  Args:
    path: the checkpoint directory (created, parents included).
    lopt: the optimizer ``theta`` belongs to.
    theta: its meta-parameters (must match ``lopt.init``'s shapes).
    metadata: JSON-serializable extra information (training step, losses,
      ...), returned by ``load``.
    this_process_only: in a multi-process JAX run, write from this process
      alone, without waiting for the others at orbax's barriers (default:
      every process calls ``save`` and process 0 writes).

  Returns:
    The absolute checkpoint path.

  Raises:
    TypeError: if ``lopt`` is not a ``LearnedOptimizer``.
    CheckpointError: (a ``ValueError``) if theta does not fit ``lopt`` or
      holds NaN or inf values.
    ValueError: if metadata is not JSON data.
    FileExistsError: if ``path`` exists and is not a checkpoint.
  """
  path = pathlib.Path(path).absolute()
  if not isinstance(lopt, base.LearnedOptimizer):
    raise TypeError(
      f"save needs a LearnedOptimizer as lopt, got {type(lopt).__name__}."
    )
  _check_fits(lopt, _leaf_specs(theta), "save")
  theta = jax.device_get(theta)
  _check_finite(theta, path)
  try:
    manifest_text = json.dumps(
      {
        "format_version": FORMAT_VERSION,
        "config": lopt.config(),
        "theta": _leaf_specs(theta),
        "metadata": metadata,
      }
    )
  except TypeError as e:
    raise ValueError(
      f"save: metadata must be JSON data (dicts, lists, str, numbers, bools, "
      f"None): {e}. Convert arrays with float(x) or x.tolist()."
    ) from e
  if path.exists() and not (path / MANIFEST_NAME).is_file():
    raise FileExistsError(
      f"save: {path} exists and is not a learned_opt checkpoint; refusing "
      "to replace it. Choose a new path or remove it yourself."
    )
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
  try:
    # Closed on exit: an unclosed checkpointer's asyncio resources were
    # finalized later, during unrelated code, with "Event loop is closed".
    with _checkpointer(this_process_only) as checkpointer:
      checkpointer.save(tmp / WEIGHTS_DIR, theta)
    manifest = json.loads(manifest_text)
    manifest["files"] = _file_hashes(tmp / WEIGHTS_DIR)
    with open(tmp / MANIFEST_NAME, "w") as f:
      json.dump(manifest, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    _replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path


def _checkpointer(this_process_only: bool):
  ocp = _orbax()
  if not this_process_only or jax.process_count() == 1:
    return ocp.PyTreeCheckpointer()
  me = jax.process_index()
  options = ocp.options.MultiprocessingOptions(
    primary_host=me, active_processes={me}
  )
  return ocp.Checkpointer(
    ocp.PyTreeCheckpointHandler(multiprocessing_options=options),
    multiprocessing_options=options,
  )


def _replace(tmp: pathlib.Path, path: pathlib.Path) -> None:
  """Renames ``tmp`` to ``path``, replacing an old checkpoint there."""
  if not path.exists():
    os.rename(tmp, path)
    return
  # POSIX cannot rename a directory over a non-empty one: move the old one
  # aside first, and put it back if the second rename fails.
  old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
  os.rename(path, old)
  try:
    os.rename(tmp, path)
  except BaseException:
    os.rename(old, path)
    raise
  shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
  """The parsed manifest of the checkpoint at ``path``.

  Args:
    path: a checkpoint directory written by ``save``.

  Returns:
    The manifest: ``format_version``, ``config``, ``theta``, ``metadata``,
    ``files``.

  Raises:
    FileNotFoundError: if there is nothing at ``path``.
    CheckpointError: if ``path`` is not a readable checkpoint.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(
      f"no checkpoint at {path}: the path does not exist. Check it, or "
      "write one with learned_opt.save(path, lopt, theta)."
    )
  manifest_path = path / MANIFEST_NAME
  if not manifest_path.is_file():
    raise CheckpointError(
      f"{path} is not a learned_opt checkpoint (no {MANIFEST_NAME}); pass "
      "the directory that learned_opt.save wrote."
    )
  try:
    manifest = json.loads(manifest_path.read_text())
    absent = [
      k
      for k in ("format_version", "config", "theta", "files")
      if k not in manifest
    ]
    if absent:
      raise KeyError(f"no {', '.join(absent)}")
    version = manifest["format_version"]
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
      f"the manifest {manifest_path} is corrupted or truncated ({e!r}); "
      "re-save the checkpoint or restore it from a copy."
    ) from e
  if not isinstance(version, int) or version > FORMAT_VERSION:
    raise CheckpointError(
      f"{path} has checkpoint format {version!r}, newer than this code "
      f"reads ({FORMAT_VERSION}); update the learned_opt package."
    )
  return manifest


def _verify_files(path: pathlib.Path, manifest: dict[str, Any]) -> None:
  expected = manifest["files"]
  actual = _file_hashes(path / WEIGHTS_DIR)
  missing = sorted(set(expected) - set(actual))
  changed = sorted(
    f for f in expected if f in actual and actual[f] != expected[f]
  )
  if missing or changed:
    raise CheckpointError(
      f"the weights of checkpoint {path} are corrupted or truncated "
      f"(missing files: {missing or 'none'}; sha256 mismatch: "
      f"{changed or 'none'}). Re-save the checkpoint or restore it from a "
      "copy; nothing was loaded."
    )


def _resolve_lopt(manifest, lopt, path) -> base.LearnedOptimizer:
  """The optimizer to load into: rebuilt, or ``lopt`` checked against it."""
  config = manifest["config"]
  if lopt is None:
    try:
      return registry.from_config(config)
    except (ValueError, KeyError) as e:
      raise CheckpointError(
        f"cannot rebuild the optimizer of {path}: {e}"
      ) from e
  saved = config.get("architecture")
  if lopt.architecture != saved:
    raise CheckpointError(
      f"{path} holds a {saved!r} optimizer but lopt is a "
      f"{lopt.architecture!r} one ({type(lopt).__name__}). Call "
      "learned_opt.load(path) without lopt= to rebuild the saved one."
    )
  ours = _normalized(lopt.config())["kwargs"]
  theirs = config.get("kwargs", {})
  diff = sorted(
    f"{k}: saved {theirs.get(k, 'unset')}, lopt has {ours.get(k, 'unset')}"
    for k in set(ours) | set(theirs)
    if ours.get(k) != theirs.get(k)
  )
  if diff:
    raise CheckpointError(
      f"{path} was saved with other {saved!r} settings ({'; '.join(diff)}). "
      "Call learned_opt.load(path) without lopt= to rebuild the saved one, "
      "or pass an optimizer with the saved settings."
    )
  return lopt


def load(
  path: str | os.PathLike, lopt: base.LearnedOptimizer | None = None
) -> tuple[base.LearnedOptimizer, base.MetaParams, dict[str, Any] | None]:
  """Reads a checkpoint written by ``save``, verifying it first.

  Args:
    path: the checkpoint directory.
    lopt: optional optimizer to load into; it must have the saved
      architecture and settings. By default the saved one is rebuilt.

  Returns:
    ``(lopt, theta, metadata)``, theta bit-identical to what was saved.

  Raises:
    FileNotFoundError: if there is nothing at ``path``.
    CheckpointError: (a ``ValueError``) if the checkpoint is corrupted or
      truncated, of an unknown architecture, or does not fit ``lopt``.
  """
  # orbax refuses relative paths.
  path = pathlib.Path(path).absolute()
  manifest = read_manifest(path)
  _verify_files(path, manifest)
  lopt = _resolve_lopt(manifest, lopt, path)
  _check_fits(lopt, manifest["theta"], f"load({str(path)!r})")
  target = _abstract_theta(lopt)
  ocp = _orbax()
  restore_args = jax.tree.map(
    lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target
  )
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      theta = checkpointer.restore(
        path / WEIGHTS_DIR,
        args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args),
      )
  except Exception as e:  # orbax/tensorstore raise many kinds
    raise CheckpointError(
      f"orbax could not read the weights of {path} ({type(e).__name__}: "
      f"{e}). The checkpoint is damaged; re-save it or restore a copy."
    ) from e
  if _leaf_specs(theta) != manifest["theta"]:
    raise CheckpointError(
      f"the weights read from {path} do not have the shapes its manifest "
      "lists; the checkpoint is damaged. Re-save it or restore a copy."
    )
  theta = jax.device_put(theta)  # explicit: fine under a transfer guard
  return lopt, theta, manifest.get("metadata")


def load_theta(
  path: str | os.PathLike, lopt: base.LearnedOptimizer
) -> base.MetaParams:
  """Only the weights of ``load(path, lopt)``, checked to fit ``lopt``.

  Args:
    path: the checkpoint directory.
    lopt: the optimizer the weights must fit.

  Returns:
    theta.

  Raises:
    FileNotFoundError, CheckpointError: as ``load``.
  """
  return load(path, lopt)[1]
