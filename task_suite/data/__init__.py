"""Real datasets: MNIST, Fashion-MNIST and tiny Shakespeare, loaded once.

This package is the only part of the project that touches dataset files,
tensorflow or tensorflow-datasets. Its modules:

  * ``files``: where the canonical files live (``data_dir()``), their
    formats (idx, text) and sha256 checksums;
  * ``transforms``: host-side resizing and train/valid/test splits;
  * ``cache``: ``load_images`` / ``load_text``, which pick a route, move the
    arrays to the device once per process and cache them;
  * ``tfds_route``: the tensorflow-datasets route (download, or build offline
    from the canonical files).

The names below are the public API; ``task_suite.data.X`` keeps working for
each of them.

Example:
  >>> images = load_images("mnist", image_size=16)
  >>> images.arrays["train_x"].shape, images.num_classes
  ((50000, 16, 16, 1), 10)
"""

from task_suite.data.cache import (
  IMAGE_SIZES,
  SOURCES,
  ImageData,
  TextData,
  load_images,
  load_text,
)
from task_suite.data.files import (
  ENV_VAR,
  IDX_FILES,
  IMAGE_DATASETS,
  KNOWN_SHA256,
  TEXT_DATASETS,
  TEXT_FILE,
  ChecksumError,
  DatasetNotFoundError,
  data_dir,
  expected_sha256,
  load_raw_images,
  load_raw_text,
  read_idx_images,
  read_idx_labels,
  sha256_file,
  verify_file,
)
from task_suite.data.tfds_route import (
  TFDS_ENV_VAR,
  load_tfds_images,
  load_tfds_text,
  prepare_tfds,
  read_tfds_split,
  tfds_dir,
)
from task_suite.data.transforms import (
  NUM_VALID_IMAGES,
  resize_images,
  split_text,
)

__all__ = [
  "ENV_VAR",
  "IDX_FILES",
  "IMAGE_DATASETS",
  "IMAGE_SIZES",
  "KNOWN_SHA256",
  "NUM_VALID_IMAGES",
  "SOURCES",
  "TEXT_DATASETS",
  "TEXT_FILE",
  "TFDS_ENV_VAR",
  "ChecksumError",
  "DatasetNotFoundError",
  "ImageData",
  "TextData",
  "data_dir",
  "expected_sha256",
  "load_images",
  "load_raw_images",
  "load_raw_text",
  "load_text",
  "load_tfds_images",
  "load_tfds_text",
  "prepare_tfds",
  "read_idx_images",
  "read_idx_labels",
  "read_tfds_split",
  "resize_images",
  "sha256_file",
  "split_text",
  "tfds_dir",
  "verify_file",
]
