"""Canonical dataset files: where they live, their formats and checksums.

Datasets are read from their canonical files (idx ``.gz`` for images,
``input.txt`` for text) in ``data_dir()/<name>/`` and verified against their
sha256 (the folder's ``SHA256SUMS`` if present, else ``KNOWN_SHA256``):

  * ``$LOPT_DATA_DIR/<name>/`` when ``LOPT_DATA_DIR`` is set (CI and the tests
    point it at ``../shared/data``);
  * else ``$XDG_CACHE_HOME/learned_opt/data/<name>/`` (``~/.cache/...``).
"""

import gzip
import hashlib
import os
import pathlib

import numpy as np

ENV_VAR = "LOPT_DATA_DIR"
IMAGE_DATASETS = ("mnist", "fashion_mnist")
TEXT_DATASETS = ("tiny_shakespeare",)
IDX_FILES = {
  "train_x": "train-images-idx3-ubyte.gz",
  "train_y": "train-labels-idx1-ubyte.gz",
  "test_x": "t10k-images-idx3-ubyte.gz",
  "test_y": "t10k-labels-idx1-ubyte.gz",
}
TEXT_FILE = "input.txt"

# Same values as ../shared/data/*/SHA256SUMS and tfds 4.9.10's checksums.tsv;
# used when a dataset folder has no SHA256SUMS file.
KNOWN_SHA256 = {
  "mnist": {
    "train-images-idx3-ubyte.gz": (
      "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
      "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
      "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
      "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
  },
  "fashion_mnist": {
    "train-images-idx3-ubyte.gz": (
      "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
    ),
    "train-labels-idx1-ubyte.gz": (
      "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
    ),
    "t10k-images-idx3-ubyte.gz": (
      "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
    ),
    "t10k-labels-idx1-ubyte.gz": (
      "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
    ),
  },
  "tiny_shakespeare": {
    "input.txt": (
      "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    ),
  },
}


class DatasetNotFoundError(FileNotFoundError):
  """A dataset's canonical files are not where the loader looked."""


class ChecksumError(ValueError):
  """A dataset file's sha256 differs from the expected one."""


# ------------------------------------------------------------ locations


def data_dir() -> pathlib.Path:
  """The root folder holding one sub-folder of canonical files per dataset.

  Returns:
    ``$LOPT_DATA_DIR`` if set, else ``<user cache>/learned_opt/data`` where the
    user cache is ``$XDG_CACHE_HOME`` or ``~/.cache``.
  """
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser()
  return user_cache() / "learned_opt" / "data"


def user_cache() -> pathlib.Path:
  cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(cache).expanduser()


def missing_message(name: str, folder: pathlib.Path, missing: list[str]):
  return (
    f"Dataset {name!r} not found: looked for {', '.join(missing)} in "
    f"{folder} (data_dir() = {folder.parent}, from ${ENV_VAR} if set, else "
    "the user cache directory). Fix: set "
    f"{ENV_VAR} to a folder that has a {name}/ sub-folder with the canonical "
    "files (e.g. export "
    f"{ENV_VAR}=/path/to/shared/data), or install the tfds extra "
    "(`pip install .[tfds]`, or `uv run --extra tfds ...`) so that "
    'source="auto" or "tfds" downloads it through tensorflow-datasets.'
  )


def canonical_files(name: str) -> list[str]:
  if name in IMAGE_DATASETS:
    return list(IDX_FILES.values())
  if name in TEXT_DATASETS:
    return [TEXT_FILE]
  raise ValueError(
    f"No canonical files known for dataset {name!r}; known: "
    f"{IMAGE_DATASETS + TEXT_DATASETS}. Other datasets load through "
    'source="tfds".'
  )


def missing_files(name: str, folder: pathlib.Path) -> list[str]:
  return [f for f in canonical_files(name) if not (folder / f).is_file()]


# ------------------------------------------------------------ checksums


def sha256_file(path: pathlib.Path) -> str:
  """Returns the hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def expected_sha256(name: str, folder: pathlib.Path) -> dict[str, str]:
  """Expected sums: the folder's SHA256SUMS if present, else the built-in.

  Args:
    name: dataset name.
    folder: the dataset folder.

  Returns:
    Map from file name to hex sha256, for the canonical files.
  """
  sums = dict(KNOWN_SHA256.get(name, {}))
  sums_file = folder / "SHA256SUMS"
  if sums_file.is_file():
    for line in sums_file.read_text().splitlines():
      parts = line.split()
      if len(parts) == 2:
        sums[parts[1].lstrip("*")] = parts[0].lower()
  return sums


def verify_file(path: pathlib.Path, expected: str) -> None:
  """Raises ChecksumError unless the file's sha256 is ``expected``.

  Args:
    path: the file to check.
    expected: hex sha256.

  Raises:
    ChecksumError: the sums differ; the message names the file, both sums and
      the fix.
  """
  actual = sha256_file(path)
  if actual != expected:
    raise ChecksumError(
      f"Checksum mismatch for {path}: expected sha256 {expected}, got "
      f"{actual}. The file is corrupted or not the canonical one; it was not "
      "used. Fix: delete it and fetch it again (copy the canonical file, or "
      'use source="tfds" with the tfds extra installed to download it).'
    )


def verified_folder(name: str, known: tuple[str, ...]) -> pathlib.Path:
  """The folder of a dataset in ``known``, its files present and verified."""
  if name not in known:
    raise ValueError(f"Unknown dataset {name!r}; known: {known}")
  folder = data_dir() / name
  missing = missing_files(name, folder)
  if missing:
    raise DatasetNotFoundError(missing_message(name, folder, missing))
  sums = expected_sha256(name, folder)
  for file_name in canonical_files(name):
    verify_file(folder / file_name, sums[file_name])
  return folder


# ------------------------------------------------------------ raw readers


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> np.ndarray:
  with gzip.open(path, "rb") as f:
    raw = f.read()
  header = np.frombuffer(raw, ">i4", count=1 + ndim)
  if int(header[0]) != magic:
    raise ValueError(
      f"{path} is not an idx file with magic {magic} (got {int(header[0])})."
    )
  shape = tuple(int(d) for d in header[1:])
  return np.frombuffer(raw, np.uint8, offset=4 * (1 + ndim)).reshape(shape)


def read_idx_images(path: pathlib.Path | str) -> np.ndarray:
  """Reads a gzipped idx3 image file into uint8 [N, rows, cols] on the host."""
  return _read_idx(pathlib.Path(path), 2051, 3)


def read_idx_labels(path: pathlib.Path | str) -> np.ndarray:
  """Reads a gzipped idx1 label file into uint8 [N] on the host."""
  return _read_idx(pathlib.Path(path), 2049, 1)


def load_raw_images(name: str) -> dict[str, np.ndarray]:
  """Reads and verifies a dataset's canonical idx files (no split, no resize).

  Args:
    name: "mnist" or "fashion_mnist".

  Returns:
    Host arrays "train_x", "test_x": uint8 [N, 28, 28, 1] (N = 60000, 10000)
    and "train_y", "test_y": uint8 [N], in the files' order.

  Raises:
    ValueError: ``name`` is not one of ``IMAGE_DATASETS``.
    DatasetNotFoundError, ChecksumError: a file is missing or corrupted.
  """
  folder = verified_folder(name, IMAGE_DATASETS)
  out = {}
  for key, file_name in IDX_FILES.items():
    if key.endswith("_x"):
      out[key] = read_idx_images(folder / file_name)[..., None]
    else:
      out[key] = read_idx_labels(folder / file_name)
  return out


def load_raw_text(name: str = "tiny_shakespeare") -> str:
  """Reads and verifies a text dataset's ``input.txt``.

  Args:
    name: "tiny_shakespeare".

  Returns:
    The whole text.

  Raises:
    ValueError, DatasetNotFoundError, ChecksumError: as ``load_raw_images``.
  """
  folder = verified_folder(name, TEXT_DATASETS)
  return (folder / TEXT_FILE).read_text(encoding="utf-8")
