"""Real datasets: MNIST, Fashion-MNIST and tiny Shakespeare, loaded once.

This is the only module of the project that touches files, tensorflow or
tensorflow-datasets. Datasets are read from their canonical files (idx ``.gz``
for images, ``input.txt`` for text) in ``data_dir()/<name>/``, verified
against their sha256, optionally downsampled on the host, and moved to the
device once per process; tasks then sample batches on-device inside ``jit``.

Where the files live:
  * ``$LOPT_DATA_DIR/<name>/`` when ``LOPT_DATA_DIR`` is set (CI and the tests
    point it at ``../shared/data``);
  * else ``$XDG_CACHE_HOME/learned_opt/data/<name>/`` (``~/.cache/...``).

With the ``tfds`` extra installed (``pip install .[tfds]``), ``source="tfds"``
(or ``"auto"`` when the files are missing) goes through tensorflow-datasets:
online it downloads as usual; offline it builds from the same canonical files
(see ``prepare_tfds``). tfds's own files go to ``tfds_dir()``
(``$LOPT_TFDS_DIR``, else ``<user cache>/learned_opt/tfds``). That route also
serves other tfds image datasets such as ``cifar10`` (converted to grayscale,
area-resized to the requested size).

Example:
  >>> data = load_images("mnist", image_size=16)
  >>> data.arrays["train_x"].shape, data.num_classes
  ((50000, 16, 16, 1), 10)
"""

import functools
import gzip
import hashlib
import os
import pathlib
import socket
from typing import NamedTuple

import jax
import numpy as np

ENV_VAR = "LOPT_DATA_DIR"
TFDS_ENV_VAR = "LOPT_TFDS_DIR"
IMAGE_DATASETS = ("mnist", "fashion_mnist")
TEXT_DATASETS = ("tiny_shakespeare",)
IMAGE_SIZES = (8, 16, 28)
SOURCES = ("auto", "files", "tfds")
NUM_VALID_IMAGES = 10_000  # held out from the end of the canonical train file

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


class ImageData(NamedTuple):
  """An image classification dataset on the device.

  Attributes:
    arrays: "train_x", "valid_x", "test_x": uint8 [N, S, S, 1] images;
      "train_y", "valid_y", "test_y": int32 [N] labels.
    num_classes: number of label classes.
  """

  arrays: dict[str, jax.Array]
  num_classes: int


class TextData(NamedTuple):
  """A character-level text dataset on the device.

  Attributes:
    arrays: "train", "valid", "test": int32 [N] token ids.
    vocab: the characters; index = token id (sorted unique characters of the
      whole text, so ids agree across splits).
  """

  arrays: dict[str, jax.Array]
  vocab: str


# ------------------------------------------------------------ locations


def data_dir() -> pathlib.Path:
  """The root folder holding one sub-folder of canonical files per dataset.

  Returns:
    ``$LOPT_DATA_DIR`` if set, else ``<user cache>/learned_opt/data`` where the
    user cache is ``$XDG_CACHE_HOME`` or ``~/.cache``.
  """
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser()
  return _user_cache() / "learned_opt" / "data"


def _user_cache() -> pathlib.Path:
  cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(cache).expanduser()


def _missing_message(name: str, folder: pathlib.Path, missing: list[str]):
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


def _canonical_files(name: str) -> list[str]:
  if name in IMAGE_DATASETS:
    return list(IDX_FILES.values())
  if name in TEXT_DATASETS:
    return [TEXT_FILE]
  raise ValueError(
    f"No canonical files known for dataset {name!r}; known: "
    f"{IMAGE_DATASETS + TEXT_DATASETS}. Other datasets load through "
    'source="tfds".'
  )


def _missing_files(name: str, folder: pathlib.Path) -> list[str]:
  return [f for f in _canonical_files(name) if not (folder / f).is_file()]


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


def _verified_folder(name: str) -> pathlib.Path:
  folder = data_dir() / name
  missing = _missing_files(name, folder)
  if missing:
    raise DatasetNotFoundError(_missing_message(name, folder, missing))
  sums = expected_sha256(name, folder)
  for file_name in _canonical_files(name):
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
    DatasetNotFoundError: a file is missing.
    ChecksumError: a file is corrupted.
  """
  if name not in IMAGE_DATASETS:
    raise ValueError(f"Unknown image dataset {name!r}; known: {IMAGE_DATASETS}")
  folder = _verified_folder(name)
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
    DatasetNotFoundError: the file is missing.
    ChecksumError: the file is corrupted.
  """
  if name not in TEXT_DATASETS:
    raise ValueError(f"Unknown text dataset {name!r}; known: {TEXT_DATASETS}")
  folder = _verified_folder(name)
  return (folder / TEXT_FILE).read_text(encoding="utf-8")


# ------------------------------------------------------------ host transforms


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] overlap fractions of output cells with input pixels."""
  edges = np.arange(n_out + 1) * (n_in / n_out)
  lo, hi = edges[:-1, None], edges[1:, None]
  pix = np.arange(n_in)[None, :]
  overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0, None)
  return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
  """Area-averages uint8 [N, H, W, C] images to [N, size, size, C], uint8.

  Area averaging (each output pixel is the mean of the input area it covers,
  like OpenCV's INTER_AREA) is the antialiased downsampling for non-integer
  factors such as 28 -> 16; it is separable, so it is two batched matmuls.

  Args:
    x: uint8 [N, H, W, C] images.
    size: output height and width.

  Returns:
    uint8 [N, size, size, C], rounded to nearest.
  """
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x
  rows, cols = _area_weights(h, size), _area_weights(w, size)
  y = np.moveaxis(x, -1, 1).astype(np.float32) @ cols.T  # [N, C, H, size]
  y = rows @ y  # [N, C, size, size]
  return np.clip(np.rint(np.moveaxis(y, 1, -1)), 0, 255).astype(np.uint8)


def split_text(text: str) -> dict[str, str]:
  """Splits 90/5/5 by characters, exactly like tfds ``tiny_shakespeare``."""
  a = int(len(text) * 0.9)
  b = a + int((len(text) - a) * 0.5)
  return {"train": text[:a], "valid": text[a:b], "test": text[b:]}


def _split_images(
  raw: dict[str, np.ndarray], num_valid: int = NUM_VALID_IMAGES
) -> dict[str, np.ndarray]:
  n_train = raw["train_x"].shape[0] - num_valid
  return {
    "train_x": raw["train_x"][:n_train],
    "train_y": raw["train_y"][:n_train],
    "valid_x": raw["train_x"][n_train:],
    "valid_y": raw["train_y"][n_train:],
    "test_x": raw["test_x"],
    "test_y": raw["test_y"],
  }


# ------------------------------------------------------------ public loaders


def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")


def _use_files(name: str, source: str, known: tuple[str, ...]) -> bool:
  """Decides the route; raises the missing-data error when none works."""
  _check_source(source)
  if source == "tfds":
    return False
  if name not in known:
    if source == "files":
      raise ValueError(
        f"No canonical files for {name!r} (file datasets: {known}); use "
        'source="tfds" for other tensorflow-datasets datasets.'
      )
    return False
  folder = data_dir() / name
  missing = _missing_files(name, folder)
  if not missing:
    return True
  if source == "auto" and _tfds_available():
    return False
  raise DatasetNotFoundError(_missing_message(name, folder, missing))


def _cache_root() -> str:
  return f"{data_dir()}|{tfds_dir()}"


def _tfds_available() -> bool:
  import importlib.util

  return importlib.util.find_spec("tensorflow_datasets") is not None


@functools.lru_cache(maxsize=4)
def _host_images(
  name: str, source: str, root: str
) -> tuple[dict[str, np.ndarray], int]:
  del root  # only part of the cache key: other folders, another cache entry
  if _use_files(name, source, IMAGE_DATASETS):
    return _split_images(load_raw_images(name)), 10
  return load_tfds_images(name)


@functools.lru_cache(maxsize=16)
def _device_images(
  name: str, image_size: int, source: str, root: str
) -> ImageData:
  host, num_classes = _host_images(name, source, root)
  arrays = {}
  for key, value in host.items():
    if key.endswith("_x"):
      value = resize_images(value, image_size)
    else:
      value = value.astype(np.int32)
    arrays[key] = jax.device_put(value)
  return ImageData(arrays=arrays, num_classes=num_classes)


def load_images(
  name: str, image_size: int = 28, *, source: str = "auto"
) -> ImageData:
  """Loads an image classification dataset onto the device (once per process).

  Splits: train = the first 50000 examples of the canonical train file, valid
  = its last 10000, test = the canonical test file (10000).

  Args:
    name: "mnist" or "fashion_mnist" (with source "tfds": any tfds image
      classification dataset, e.g. "cifar10", converted to grayscale).
    image_size: 8, 16 or 28; smaller sizes are area-averaged on the host.
    source: "files" (canonical files in ``data_dir()/<name>/``), "tfds", or
      "auto" (files when present, else tfds when installed).

  Returns:
    ImageData with uint8 [N, S, S, 1] images and int32 [N] labels on device.

  Raises:
    DatasetNotFoundError: the files are missing and tfds cannot be used.
    ChecksumError: a file is corrupted.
    ValueError: an unknown name, size or source.
  """
  if image_size not in IMAGE_SIZES:
    raise ValueError(
      f"image_size must be one of {IMAGE_SIZES}, got {image_size}"
    )
  _check_source(source)
  return _device_images(name, int(image_size), source, _cache_root())


@functools.lru_cache(maxsize=4)
def _device_text(name: str, source: str, root: str) -> TextData:
  del root  # only part of the cache key: other folders, another cache entry
  if _use_files(name, source, TEXT_DATASETS):
    splits = split_text(load_raw_text(name))
  else:
    splits = load_tfds_text(name)
  vocab = "".join(sorted(set("".join(splits.values()))))
  table = np.full(max(map(ord, vocab)) + 1, -1, np.int32)
  table[[ord(ch) for ch in vocab]] = np.arange(len(vocab), dtype=np.int32)
  arrays = {}
  for split, text in splits.items():
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    arrays[split] = jax.device_put(table[codes])
  return TextData(arrays=arrays, vocab=vocab)


def load_text(
  name: str = "tiny_shakespeare", *, source: str = "auto"
) -> TextData:
  """Loads a character-level text dataset onto the device (once per process).

  Args:
    name: "tiny_shakespeare".
    source: "files", "tfds" or "auto" (files when present, else tfds).

  Returns:
    TextData with int32 [N] token ids per split ("train", "valid", "test",
    90/5/5 by characters) and the vocabulary.

  Raises:
    DatasetNotFoundError: the file is missing and tfds cannot be used.
    ChecksumError: the file is corrupted.
  """
  _check_source(source)
  return _device_text(name, source, _cache_root())


# ------------------------------------------------------------ tfds route


def tfds_dir() -> pathlib.Path:
  """Default folder for tfds's prepared data, downloads and extractions.

  Never inside ``$LOPT_DATA_DIR``, which is often a shared read-only folder of
  canonical files (and root may write there anyway).

  Returns:
    ``$LOPT_TFDS_DIR`` if set, else ``<user cache>/learned_opt/tfds`` (next to
    the default ``data_dir()``).
  """
  if os.environ.get(TFDS_ENV_VAR):
    return pathlib.Path(os.environ[TFDS_ENV_VAR]).expanduser()
  return _user_cache() / "learned_opt" / "tfds"


def _import_tfds():
  """Imports tensorflow_datasets lazily: importing TF takes seconds."""
  import importlib.resources.abc
  import importlib.util
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
      sums are known); default ``data_dir()/<name>`` when it exists and has
      all canonical files, else None (tfds downloads).
    max_examples_per_split: tfds's debugging cap on each generated split
      (keeps the first examples of each file); None for the full dataset.
      A capped build needs its own ``tfds_data_dir``.

  Returns:
    The prepared ``tfds.core.DatasetBuilder``.

  Raises:
    ImportError: tensorflow-datasets is not installed.
    DatasetNotFoundError: there are no local files and the download failed.
  """
  tfds = _import_tfds()
  root = pathlib.Path(tfds_data_dir) if tfds_data_dir else tfds_dir()
  if manual_dir is None:
    folder = data_dir() / name
    known = name in KNOWN_SHA256
    if folder.is_dir() and not (known and _missing_files(name, folder)):
      manual_dir = folder
  if manual_dir is not None and name in KNOWN_SHA256:
    manual_dir = pathlib.Path(manual_dir)
    missing = _missing_files(name, manual_dir)
    if missing:
      raise DatasetNotFoundError(_missing_message(name, manual_dir, missing))
    sums = expected_sha256(name, manual_dir)
    for file_name in _canonical_files(name):
      verify_file(manual_dir / file_name, sums[file_name])
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
    raise DatasetNotFoundError(
      f"tensorflow-datasets cannot download {name!r}: no network. "
      + _missing_message(name, data_dir() / name, ["its canonical files"])
    )
  try:
    builder.download_and_prepare(
      download_dir=str(root / "downloads"), download_config=config
    )
  except Exception as e:
    if manual_dir is not None:
      raise
    folder = data_dir() / name
    raise DatasetNotFoundError(
      f"tensorflow-datasets could not download {name!r} ({e!r}). "
      + _missing_message(name, folder, ["its canonical files"])
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
  ``NUM_VALID_IMAGES`` (at most a fifth) of tfds's train split, which tfds
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
  num_valid = min(NUM_VALID_IMAGES, raw["train_x"].shape[0] // 5)
  return _split_images(raw, num_valid), num_classes


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
