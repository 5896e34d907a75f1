"""Shipped pretrained learned optimizers, loadable offline and verified.

A shipped checkpoint is a directory ``checkpoints/<name>/`` of the repository
holding ``manifest.json`` and ``weights/``, the latter written by
``learned_opt.checkpoint.save``. The manifest records the architecture, the
meta-training config, the number of outer steps, the suite seed, the
evaluation summary and the sha256 of the weight files, which is checked
before the weights are used.

Example:
  >>> tx = learned_opt.load_pretrained()  # the default shipped optimizer
  >>> state = tx.init(params)
  >>> updates, state = tx.update(grads, state, params, value=loss)
  >>> lopt, theta, manifest = pretrained.load_pretrained_with_info("name")
"""

import datetime
import hashlib
import json
import os
import pathlib
from typing import Any

import optax

from learned_opt import base, checkpoint

DEFAULT_NAME = "hierarchical_width8_cpu"
MANIFEST = "manifest.json"
WEIGHTS = "weights"
REQUIRED_KEYS = ("architecture", "sha256")
_HASH_NOTE = (
  "sha256 over the files under weights/ in sorted relative-path order, "
  "each as its POSIX relative path, a NUL byte, then its bytes"
)


def checkpoints_root() -> pathlib.Path:
  """The repository's ``checkpoints/`` folder (next to this package)."""
  return pathlib.Path(__file__).resolve().parents[1] / "checkpoints"


def available(root: str | os.PathLike | None = None) -> list[str]:
  """Names of the checkpoints under ``root`` (default: the shipped ones)."""
  root = pathlib.Path(root) if root is not None else checkpoints_root()
  if not root.is_dir():
    return []
  return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def weights_sha256(weights_dir: str | os.PathLike) -> str:
  """Hex sha256 of every file under ``weights_dir`` (see ``_HASH_NOTE``)."""
  weights_dir = pathlib.Path(weights_dir)
  files = sorted(p for p in weights_dir.rglob("*") if p.is_file())
  if not files:
    raise FileNotFoundError(f"no weight files under {weights_dir}")
  digest = hashlib.sha256()
  for path in files:
    digest.update(path.relative_to(weights_dir).as_posix().encode())
    digest.update(b"\0")
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()


def save_pretrained(
  directory: str | os.PathLike,
  lopt: base.LearnedOptimizer,
  theta: base.MetaParams,
  *,
  config: dict[str, Any] | None = None,
  outer_steps: int | None = None,
  suite_seed: int | None = None,
  evaluation: dict[str, Any] | None = None,
  notes: str = "",
) -> dict[str, Any]:
  """Writes a shippable checkpoint: weights plus a manifest with their hash.

  Args:
    directory: the new checkpoint folder, e.g. ``checkpoints/<name>``.
    lopt: the learned optimizer (its architecture goes in the manifest).
    theta: its trained meta-parameters.
    config: the meta-training config (JSON-compatible).
    outer_steps: outer steps of meta-training behind ``theta``.
    suite_seed: seed of the task suite it was meta-trained on.
    evaluation: the evaluation summary (e.g. win rates from
      ``lopt evaluate``).
    notes: free text (how it was chosen, caveats).

  Returns:
    The manifest written.

  Raises:
    FileExistsError: if ``directory/weights`` already exists.
  """
  directory = pathlib.Path(directory)
  weights = directory / WEIGHTS
  if weights.exists() or (directory / MANIFEST).exists():
    raise FileExistsError(
      f"{weights} exists; pick a new checkpoint name or delete it first"
    )
  directory.mkdir(parents=True, exist_ok=True)
  checkpoint.save(weights, lopt, theta, {"name": directory.name})
  manifest = {
    "name": directory.name,
    "architecture": lopt.config(),
    "num_meta_params": lopt.num_meta_params(),
    "config": config or {},
    "outer_steps": outer_steps,
    "suite_seed": suite_seed,
    "evaluation": evaluation or {},
    "notes": notes,
    "created": datetime.datetime.now(datetime.UTC).isoformat(
      timespec="seconds"
    ),
    "sha256": weights_sha256(weights),
    "sha256_of": _HASH_NOTE,
  }
  with open(directory / MANIFEST, "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  return manifest


def is_pretrained_dir(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a pretrained checkpoint (manifest + ``weights/``).

  A plain ``learned_opt.save`` checkpoint (its own manifest next to
  ``theta/``) is not.
  """
  path = pathlib.Path(path)
  return (path / MANIFEST).is_file() and not (
    path / checkpoint.WEIGHTS_DIR
  ).is_dir()


def resolve(
  name_or_path: str | os.PathLike, root: str | os.PathLike | None = None
) -> pathlib.Path:
  """The checkpoint directory of a name under ``root`` or of a path.

  Raises:
    FileNotFoundError: if it is neither; the message lists the names under
      ``root``.
  """
  if is_pretrained_dir(name_or_path):
    return pathlib.Path(name_or_path)
  root = pathlib.Path(root) if root is not None else checkpoints_root()
  name = str(name_or_path)
  if "/" not in name and is_pretrained_dir(root / name):
    return root / name
  raise FileNotFoundError(
    f"no pretrained optimizer {name!r}: it is neither a name under {root} "
    f"(available: {', '.join(available(root)) or 'none'}) nor a directory "
    f"with a {MANIFEST} and {WEIGHTS}/. Pass one of the available names, or "
    "the path of a checkpoint written by "
    "learned_opt.pretrained.save_pretrained."
  )


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
  """Reads and checks ``directory/manifest.json``.

  Raises:
    CheckpointError: if it is not valid JSON or lacks required keys.
  """
  path = pathlib.Path(directory) / MANIFEST
  try:
    manifest = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise checkpoint.CheckpointError(
      f"corrupted checkpoint manifest {path}: {e}. Restore the file (e.g. "
      "`git checkout -- checkpoints/`)."
    ) from None
  if not isinstance(manifest, dict):
    raise checkpoint.CheckpointError(
      f"corrupted checkpoint manifest {path}: not a JSON object"
    )
  missing = [k for k in REQUIRED_KEYS if k not in manifest]
  if missing:
    raise checkpoint.CheckpointError(
      f"checkpoint manifest {path} lacks keys {missing}; restore the file or "
      "write the checkpoint again with save_pretrained."
    )
  return manifest


def verify(directory: str | os.PathLike) -> dict[str, Any]:
  """Checks the weights against the manifest's sha256; returns the manifest.

  Raises:
    CheckpointError: if the weights are missing or their hash differs.
  """
  directory = pathlib.Path(directory)
  manifest = read_manifest(directory)
  weights = directory / WEIGHTS
  if not weights.is_dir():
    raise checkpoint.CheckpointError(
      f"checkpoint {directory} has a manifest but no {WEIGHTS}/ folder; "
      "restore the checkpoint's files."
    )
  actual = weights_sha256(weights)
  if actual != manifest["sha256"]:
    raise checkpoint.CheckpointError(
      f"checkpoint {directory} is corrupted: the weights' sha256 is {actual} "
      f"but its manifest says {manifest['sha256']}. Restore the files (e.g. "
      "`git checkout -- checkpoints/` or download them again)."
    )
  return manifest


def _check_architecture(lopt, recorded: dict, directory) -> None:
  """The rebuilt optimizer must have every setting the manifest records.

  Settings added to the class after the checkpoint was written (with
  defaults) are not in the manifest and are accepted.
  """
  config = json.loads(json.dumps(lopt.config()))
  kwargs = recorded.get("kwargs", {})
  differ = [
    k for k in kwargs if config["kwargs"].get(k, "<unset>") != kwargs[k]
  ]
  if config["architecture"] != recorded.get("architecture") or differ:
    raise checkpoint.CheckpointError(
      f"checkpoint {directory}: the weights are of {config} but the manifest "
      f"says {recorded} (differing: {differ or 'architecture'}); the files "
      "do not belong together. Restore the checkpoint's files."
    )


def load_pretrained_with_info(
  name_or_path: str | os.PathLike = DEFAULT_NAME,
  *,
  root: str | os.PathLike | None = None,
) -> tuple[base.LearnedOptimizer, base.MetaParams, dict[str, Any]]:
  """Loads a verified checkpoint: the optimizer, its theta and the manifest.

  Args:
    name_or_path: a name under ``root``, or a checkpoint directory.
    root: where named checkpoints live (default: the shipped
      ``checkpoints/``).

  Returns:
    ``(lopt, theta, manifest)``.

  Raises:
    FileNotFoundError: for an unknown name (lists the available ones).
    CheckpointError: (a ValueError) for a corrupted checkpoint.
  """
  directory = resolve(name_or_path, root)
  manifest = verify(directory)
  lopt, theta, _ = checkpoint.load(directory / WEIGHTS)
  _check_architecture(lopt, manifest["architecture"], directory)
  return lopt, theta, manifest


def load_any(
  name_or_path: str | os.PathLike,
  *,
  root: str | os.PathLike | None = None,
) -> tuple[base.LearnedOptimizer, base.MetaParams, dict[str, Any]]:
  """A shipped name, a pretrained directory or a ``learned_opt.save`` one.

  ``root`` is where shipped names live (default: the shipped
  ``checkpoints/``). To also accept baseline names, use
  ``meta_train.evaluation.resolve``.

  Returns:
    ``(lopt, theta, info)``: ``info`` is the pretrained manifest, or the
    metadata saved with a ``learned_opt.save`` checkpoint (e.g. a
    meta-training run's ``WORKDIR/theta``).

  Raises:
    FileNotFoundError: if it is none of those (lists the shipped names).
    CheckpointError: (a ValueError) for a corrupted checkpoint.
  """
  path = pathlib.Path(name_or_path).expanduser()
  if (path / checkpoint.MANIFEST_NAME).is_file() and (
    path / checkpoint.WEIGHTS_DIR
  ).is_dir():
    lopt, theta, metadata = checkpoint.load(path)
    return lopt, theta, dict(metadata or {})
  return load_pretrained_with_info(
    path if path.is_dir() else name_or_path, root=root
  )


def load_pretrained(
  name: str | os.PathLike = DEFAULT_NAME,
  *,
  root: str | os.PathLike | None = None,
  num_steps: int | None = None,
) -> optax.GradientTransformationExtraArgs:
  """A shipped learned optimizer, ready to use through optax.

  Args:
    name: a shipped checkpoint name (``available()``) or a directory.
    root: where named checkpoints live (default: the shipped
      ``checkpoints/``).
    num_steps: the run's total number of steps, here or as
      ``update(..., num_steps=N)``. An optimizer with progress features
      (``hierarchical_small_cpu_init_rms_adaptive``) needs it; the default
      uses it to anneal its steps over the last quarter of the run (give
      it: without it, it does not anneal); the others ignore it.

  Returns:
    The optax transform; pass the training loss as ``value`` to ``update``.

  Raises:
    FileNotFoundError: for an unknown name (lists the available ones).
    CheckpointError: (a ValueError) for a corrupted checkpoint.
  """
  lopt, theta, _ = load_pretrained_with_info(name, root=root)
  if num_steps is None:
    return lopt.optimizer(theta)
  return lopt.optimizer(theta, num_steps=num_steps)
