"""Datasets on the device, loaded once per process (cached per folder).

``load_images`` and ``load_text`` pick a route (canonical files, or
tensorflow-datasets), apply the host transforms (resizing, splits, token
ids) and move the arrays to the device once; tasks then sample batches
on-device inside ``jit``. The caches are keyed by the data folders too, so
pointing ``LOPT_DATA_DIR`` elsewhere loads afresh.
"""

import functools
from typing import NamedTuple

import jax
import numpy as np

from task_suite.data import files, tfds_route, transforms

IMAGE_SIZES = (8, 16, 28)
SOURCES = ("auto", "files", "tfds")


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
  folder = files.data_dir() / name
  missing = files.missing_files(name, folder)
  if not missing:
    return True
  if source == "auto" and tfds_route.tfds_available():
    return False
  raise files.DatasetNotFoundError(files.missing_message(name, folder, missing))


def _cache_root() -> str:
  return f"{files.data_dir()}|{tfds_route.tfds_dir()}"


@functools.lru_cache(maxsize=4)
def _host_images(
  name: str, source: str, root: str
) -> tuple[dict[str, np.ndarray], int]:
  del root  # only part of the cache key: other folders, another cache entry
  if _use_files(name, source, files.IMAGE_DATASETS):
    return transforms.split_images(files.load_raw_images(name)), 10
  return tfds_route.load_tfds_images(name)


@functools.lru_cache(maxsize=16)
def _device_images(
  name: str, image_size: int, source: str, root: str
) -> ImageData:
  host, num_classes = _host_images(name, source, root)
  arrays = {}
  for key, value in host.items():
    if key.endswith("_x"):
      value = transforms.resize_images(value, image_size)
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
    source: "files" (canonical files in ``files.data_dir()/<name>/``), "tfds", or
      "auto" (files when present, else tfds when installed).

  Returns:
    ImageData with uint8 [N, S, S, 1] images and int32 [N] labels on device.

  Raises:
    files.DatasetNotFoundError: the files are missing and tfds cannot be used.
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
  if _use_files(name, source, files.TEXT_DATASETS):
    splits = transforms.split_text(files.load_raw_text(name))
  else:
    splits = tfds_route.load_tfds_text(name)
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
    files.DatasetNotFoundError: the file is missing and tfds cannot be used.
    ChecksumError: the file is corrupted.
  """
  _check_source(source)
  return _device_text(name, source, _cache_root())
