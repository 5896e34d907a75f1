"""The tensorflow-datasets route: download, or build offline from files.

With the ``tfds`` extra installed (``pip install .[tfds]``), ``source="tfds"``
(or ``"auto"`` when the canonical files are missing) goes through
tensorflow-datasets: online it downloads as usual; offline it builds from the
same canonical files (see ``prepare_tfds``). tfds's own files go to
``tfds_dir()`` (``$LOPT_TFDS_DIR``, else ``<user cache>/learned_opt/tfds``).
The route also serves other tfds image datasets such as ``cifar10``
(converted to grayscale). This is the only module that imports tensorflow
or tensorflow-datasets, and only when called.
"""

import importlib.util
import os
import pathlib
import socket

import numpy as np

from task_suite.data import files, transforms

TFDS_ENV_VAR = "LOPT_TFDS_DIR"


def tfds_available() -> bool:
  """Whether tensorflow-datasets is installed (without importing it)."""
  return importlib.util.find_spec("tensorflow_datasets") is not None


def tfds_dir() -> pathlib.Path:
  """Default folder for tfds's prepared data, downloads and extractions.

  Never inside ``$LOPT_DATA_DIR``, which is often a shared read-only folder of
  canonical files (and root may write there anyway).

  Returns:
    ``$LOPT_TFDS_DIR`` if set, else ``<user cache>/learned_opt/tfds`` (next to
    the default ``files.data_dir()``).
  """
  if os.environ.get(TFDS_ENV_VAR):
    return pathlib.Path(os.environ[TFDS_ENV_VAR]).expanduser()
  return files.user_cache() / "learned_opt" / "tfds"


def _import_tfds():
  """Imports tensorflow_datasets lazily: importing TF takes seconds."""
  import importlib.resources.abc
  import sys

  if importlib.util.find_spec("tensorflow_datasets") is None:
    raise ImportError(
      "The tfds route needs tensorflow-datasets: install the tfds extra "
      "(`pip install .[tfds]`, or `uv run --extra tfds ...`)."
    )
  # tfds 4.9.10 uses `importlib_resources.abc` in DatasetBuilder.code_path but
  # declares the backport only for Python < 3.9 (tensorflow/datasets#11212);
  # the standard library's module has the same `abc.Traversable`.
  if importlib.util.find_spec("importlib_resources") is None:
    sys.modules.setdefault("importlib_resources", importlib.resources)
  import tensorflow_datasets as tfds

  return tfds


def _verified_manual_dir(
  name: str, manual_dir: pathlib.Path | str | None
) -> pathlib.Path | None:
  """The folder of canonical files to build from (verified), or None."""
  if manual_dir is None:
    folder = files.data_dir() / name
    known = name in files.KNOWN_SHA256
    if folder.is_dir() and not (known and files.missing_files(name, folder)):
      manual_dir = folder
  if manual_dir is not None and name in files.KNOWN_SHA256:
    manual_dir = pathlib.Path(manual_dir)
    missing = files.missing_files(name, manual_dir)
    if missing:
      raise files.DatasetNotFoundError(
        files.missing_message(name, manual_dir, missing)
      )
    sums = files.expected_sha256(name, manual_dir)
    for file_name in files.canonical_files(name):
      files.verify_file(manual_dir / file_name, sums[file_name])
  return pathlib.Path(manual_dir) if manual_dir is not None else None


def prepare_tfds(
  name: str,
  *,
  tfds_data_dir: pathlib.Path | str | None = None,
  manual_dir: pathlib.Path | str | None = None,
  max_examples_per_split: int | None = None,
):
  """Builds a tfds dataset, offline from canonical files when they are there.

  tfds 4.9.10 looks for each file of a dataset's url checksums (e.g.
  ``train-images-idx3-ubyte.gz``) as ``manual_dir/<file name>`` before
  downloading, and validates its size and sha256 as for a download; so a
  folder of canonical files builds the dataset without network. The
  extraction goes to ``<tfds_data_dir>/extracted/<name>``: mnist and
  fashion_mnist extract to the same file names (``GZIP.<file>``) and would
  silently reuse each other's extraction in a shared folder.

  Args:
    name: a tfds dataset name, e.g. "fashion_mnist", "cifar10".
    tfds_data_dir: where tfds keeps prepared data; default ``tfds_dir()``.
    manual_dir: folder of canonical files (sha256-verified first when their
      sums are known); default ``files.data_dir()/<name>`` when it exists and has
      all canonical files, else None (tfds downloads).
    max_examples_per_split: tfds's debugging cap on each generated split
      (keeps the first examples of each file); None for the full dataset.
      A capped build needs its own ``tfds_data_dir``.

  Returns:
    The prepared ``tfds.core.DatasetBuilder``.

  Raises:
    ImportError: tensorflow-datasets is not installed.
    files.DatasetNotFoundError: there are no local files and the download failed.
  """
  tfds = _import_tfds()
  root = pathlib.Path(tfds_data_dir) if tfds_data_dir else tfds_dir()
  manual_dir = _verified_manual_dir(name, manual_dir)
  builder = tfds.builder(name, data_dir=str(root / "data"))
  config = tfds.download.DownloadConfig(
    manual_dir=str(manual_dir) if manual_dir else None,
    extract_dir=str(root / "extracted" / name),
    max_examples_per_split=max_examples_per_split,
    # Asking GCS for a prepared copy needs network; local files do not.
    try_download_gcs=manual_dir is None,
  )
  if manual_dir is None and not builder.is_prepared() and not _online():
    # Offline, tfds retries its downloads for minutes before failing.
    raise files.DatasetNotFoundError(
      f"tensorflow-datasets cannot download {name!r}: no network. "
      + files.missing_message(
        name, files.data_dir() / name, ["its canonical files"]
      )
    )
  try:
    builder.download_and_prepare(
      download_dir=str(root / "downloads"), download_config=config
    )
  except Exception as e:
    if manual_dir is not None:
      raise
    folder = files.data_dir() / name
    raise files.DatasetNotFoundError(
      f"tensorflow-datasets could not download {name!r} ({e!r}). "
      + files.missing_message(name, folder, ["its canonical files"])
    ) from e
  return builder


def _online(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
  """Whether tfds's download host is reachable (a DNS lookup and a connect)."""
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
  except OSError:
    return False
  return True


def read_tfds_split(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a prepared image split into host arrays (tfds's stored order).

  Args:
    builder: a prepared tfds builder of an image classification dataset.
    split: a tfds split name, e.g. "train", "test".

  Returns:
    uint8 [N, H, W, 1] images (RGB is converted to grayscale with the
    ITU-R 601 luma weights, so every dataset has the same channel count) and
    int32 [N] labels.
  """
  tfds = _import_tfds()
  dataset = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
  batch = tfds.as_numpy(dataset)
  x, y = np.asarray(batch["image"]), np.asarray(batch["label"])
  if x.ndim != 4 or x.dtype != np.uint8:
    raise ValueError(
      f"{builder.name!r} is not a fixed-size uint8 image dataset: images are "
      f"{x.dtype} {x.shape[1:]}."
    )
  if x.shape[-1] == 3:
    luma = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    x = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
  return x, y.astype(np.int32)


def load_tfds_images(name: str) -> tuple[dict[str, np.ndarray], int]:
  """Loads an image classification dataset through tensorflow-datasets.

  Splits: the dataset's own "validation" split when it has one, else the last
  ``transforms.NUM_VALID_IMAGES`` (at most a fifth) of tfds's train split, which tfds
  stores in its own deterministic (shuffled) order: the same images as the
  direct loader's splits only as a whole, not split by split.

  Args:
    name: a tfds image classification dataset, e.g. "mnist", "cifar10".

  Returns:
    Host arrays "{train,valid,test}_{x,y}" (uint8 [N, H, W, 1], int32 [N])
    at the dataset's native size, and the number of classes.
  """
  builder = prepare_tfds(name)
  num_classes = int(builder.info.features["label"].num_classes)
  raw = {}
  for split in ("train", "validation", "test"):
    if split in builder.info.splits:
      x, y = read_tfds_split(builder, split)
      raw[f"{split}_x"], raw[f"{split}_y"] = x, y
  if "validation_x" in raw:
    raw["valid_x"], raw["valid_y"] = (
      raw.pop("validation_x"),
      raw.pop("validation_y"),
    )
    return raw, num_classes
  num_valid = min(transforms.NUM_VALID_IMAGES, raw["train_x"].shape[0] // 5)
  return transforms.split_images(raw, num_valid), num_classes


def load_tfds_text(name: str) -> dict[str, str]:
  """Loads a one-document-per-split text dataset (tiny_shakespeare) via tfds.

  Args:
    name: "tiny_shakespeare".

  Returns:
    The text of "train", "valid" and "test".
  """
  tfds = _import_tfds()
  builder = prepare_tfds(name)
  out = {}
  for split, tfds_split in (
    ("train", "train"),
    ("valid", "validation"),
    ("test", "test"),
  ):
    batch = tfds.as_numpy(builder.as_dataset(split=tfds_split, batch_size=-1))
    out[split] = b"".join(batch["text"].tolist()).decode("utf-8")
  return out
