"""Tests of task_suite.data on the real files in ../shared/data."""

import gzip
import hashlib
import pathlib
import shutil
import socket

import numpy as np
import pytest

from task_suite import data

MNIST_TRAIN_COUNTS = [
  5923,
  6742,
  5958,
  6131,
  5842,
  5421,
  5918,
  6265,
  5851,
  5949,
]


def _labels_by_gzip(path: pathlib.Path) -> np.ndarray:
  """Parses an idx1 label file independently of the module under test."""
  raw = gzip.open(path).read()
  assert int.from_bytes(raw[:4], "big") == 2049
  n = int.from_bytes(raw[4:8], "big")
  labels = np.frombuffer(raw, np.uint8, offset=8)
  assert labels.size == n
  return labels


def test_data_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
  assert data.data_dir() == tmp_path
  monkeypatch.delenv("LOPT_DATA_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  assert data.data_dir() == tmp_path / "cache" / "learned_opt" / "data"


def test_raw_mnist_counts_and_histogram():
  raw = data.load_raw_images("mnist")
  assert raw["train_x"].shape == (60000, 28, 28, 1)
  assert raw["test_x"].shape == (10000, 28, 28, 1)
  assert raw["train_x"].dtype == np.uint8
  assert np.bincount(raw["train_y"]).tolist() == MNIST_TRAIN_COUNTS
  folder = data.data_dir() / "mnist"
  expected_test = _labels_by_gzip(folder / "t10k-labels-idx1-ubyte.gz")
  np.testing.assert_array_equal(raw["test_y"], expected_test)
  assert np.bincount(raw["test_y"]).sum() == 10000
  # Pixels span the full range and background dominates, as in MNIST.
  assert raw["train_x"].max() == 255 and np.median(raw["train_x"]) == 0


@pytest.mark.parametrize("size", [28, 16, 8])
def test_load_images_shapes_and_splits(size):
  d = data.load_images("mnist", size)
  assert d.num_classes == 10
  expected_n = {"train": 50000, "valid": 10000, "test": 10000}
  for split, n in expected_n.items():
    x, y = d.arrays[f"{split}_x"], d.arrays[f"{split}_y"]
    assert x.shape == (n, size, size, 1) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int32
  raw = data.load_raw_images("mnist")
  # Valid is the tail of the canonical train file.
  np.testing.assert_array_equal(d.arrays["valid_y"], raw["train_y"][50000:])
  if size == 28:
    np.testing.assert_array_equal(d.arrays["valid_x"], raw["train_x"][50000:])
  else:
    # Area averaging keeps the mean intensity (up to rounding).
    x = np.asarray(d.arrays["test_x"], np.float64)
    assert abs(x.mean() - raw["test_x"].mean()) < 0.5
  assert data.load_images("mnist", size) is d  # loaded once per process


def test_resize_is_area_average():
  x = np.arange(4 * 4, dtype=np.uint8).reshape(1, 4, 4, 1) * 10
  y = data.resize_images(x, 2)
  expected = x[0, :, :, 0].reshape(2, 2, 2, 2).mean(axis=(1, 3))
  np.testing.assert_array_equal(y[0, :, :, 0], np.rint(expected))


def test_text_splits_and_vocab():
  text = (data.data_dir() / "tiny_shakespeare" / "input.txt").read_text()
  d = data.load_text("tiny_shakespeare")
  sizes = {k: v.shape[0] for k, v in d.arrays.items()}
  assert sizes == {"train": 1_003_854, "valid": 55_770, "test": 55_770}
  assert d.vocab == "".join(sorted(set(text))) and len(d.vocab) == 65
  ids = np.concatenate([np.asarray(d.arrays[k]) for k in sizes])
  assert ids.dtype == np.int32
  assert "".join(np.asarray(list(d.vocab))[ids]) == text


def _copy_dataset(src_name: str, root: pathlib.Path) -> pathlib.Path:
  dst = root / src_name
  shutil.copytree(data.data_dir() / src_name, dst)
  for path in dst.iterdir():
    path.chmod(0o644)  # the shared copy is read-only
  return dst


@pytest.mark.parametrize("with_sums_file", [True, False])
def test_corrupted_copy_raises_checksum_error(
  tmp_path, monkeypatch, with_sums_file
):
  folder = _copy_dataset("mnist", tmp_path)
  if not with_sums_file:
    (folder / "SHA256SUMS").unlink()
  path = folder / "t10k-labels-idx1-ubyte.gz"
  blob = bytearray(path.read_bytes())
  blob[-3] ^= 0xFF
  path.write_bytes(bytes(blob))
  actual = hashlib.sha256(bytes(blob)).hexdigest()
  monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
  with pytest.raises(data.ChecksumError) as info:
    data.load_images("mnist", 8, source="files")
  message = str(info.value)
  assert str(path) in message and actual in message
  assert data.KNOWN_SHA256["mnist"][path.name] in message
  assert "delete" in message


def test_missing_directory_raises_documented_message(tmp_path, monkeypatch):
  root = tmp_path / "nowhere"
  monkeypatch.setenv("LOPT_DATA_DIR", str(root))
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load_images("fashion_mnist", source="files")
  message = str(info.value)
  assert str(root / "fashion_mnist") in message
  assert "LOPT_DATA_DIR" in message and "pip install .[tfds]" in message
  with pytest.raises(data.DatasetNotFoundError, match="LOPT_DATA_DIR"):
    data.load_text(source="files")


def test_bad_arguments_are_rejected():
  with pytest.raises(ValueError, match="image_size"):
    data.load_images("mnist", 12)
  with pytest.raises(ValueError, match="source"):
    data.load_images("mnist", source="web")
  with pytest.raises(ValueError, match="tfds"):
    data.load_images("cifar10", source="files")


# ------------------------------------------------------------ tfds route


def _sorted_examples(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Rows of (label, pixels) in lexicographic order: a multiset of examples."""
  rows = np.concatenate(
    [np.asarray(y, np.uint8)[:, None], np.reshape(x, (x.shape[0], -1))], axis=1
  )
  # One opaque bytes item per row sorts by memcmp, far faster than lexsort.
  return np.sort(np.ascontiguousarray(rows).view(f"V{rows.shape[1]}")[:, 0])


@pytest.fixture(scope="module")
def tfds_fashion(tmp_path_factory):
  """fashion_mnist built by tfds from the canonical files, without network.

  tfds's debugging cap of 10000 examples per split keeps the whole test split
  and the first 10000 training examples, at ~2/7 of the full build's time.
  """
  pytest.importorskip("tensorflow_datasets")  # the optional `tfds` extra
  root = tmp_path_factory.mktemp("tfds")
  manual_dir = data.data_dir() / "fashion_mnist"

  def no_network(*args, **kwargs):
    raise OSError(f"network access during an offline build: {args}")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(socket.socket, "connect", no_network)
    patch.setattr(socket, "create_connection", no_network)
    builder = data.prepare_tfds(
      "fashion_mnist",
      tfds_data_dir=root,
      manual_dir=manual_dir,
      max_examples_per_split=10000,
    )
  return root, builder


def test_tfds_builds_fashion_mnist_offline_like_direct_loader(tfds_fashion):
  root, builder = tfds_fashion
  raw = data.load_raw_images("fashion_mnist")
  test_x, test_y = data.read_tfds_split(builder, "test")
  assert test_x.shape == (10000, 28, 28, 1) and test_x.dtype == np.uint8
  assert test_y.dtype == np.int32
  # tfds stores its own shuffled order, so compare as multisets.
  assert not np.array_equal(test_y, raw["test_y"])
  np.testing.assert_array_equal(
    _sorted_examples(test_x, test_y),
    _sorted_examples(raw["test_x"], raw["test_y"]),
  )
  train_x, train_y = data.read_tfds_split(builder, "train")
  np.testing.assert_array_equal(
    _sorted_examples(train_x, train_y),
    _sorted_examples(raw["train_x"][:10000], raw["train_y"][:10000]),
  )
  # Extracted into a folder of its own, where mnist cannot collide with it.
  extracted = root / "extracted" / "fashion_mnist"
  assert (extracted / "GZIP.t10k-images-idx3-ubyte.gz").is_file()


def test_auto_falls_back_to_tfds(tfds_fashion, monkeypatch, tmp_path):
  root, _ = tfds_fashion
  direct = data.load_images("fashion_mnist", 16, source="files")
  # No canonical files here: "auto" takes the tfds route, which finds the
  # build prepared by the fixture (so no download).
  monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
  monkeypatch.setenv("LOPT_TFDS_DIR", str(root))
  d = data.load_images("fashion_mnist", 16, source="auto")
  assert d.num_classes == 10
  # The capped build has 10000 train examples; a fifth is held out.
  assert d.arrays["train_x"].shape == (8000, 16, 16, 1)
  assert d.arrays["valid_x"].shape == (2000, 16, 16, 1)
  assert d.arrays["test_y"].shape == (10000,)
  assert d.arrays["test_y"].dtype == np.int32
  np.testing.assert_array_equal(
    _sorted_examples(np.asarray(d.arrays["test_x"]), d.arrays["test_y"]),
    _sorted_examples(
      np.asarray(direct.arrays["test_x"]), direct.arrays["test_y"]
    ),
  )


def test_load_text_through_tfds(tmp_path, monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  monkeypatch.setenv("LOPT_TFDS_DIR", str(tmp_path))
  via_tfds = data.load_text(source="tfds")
  direct = data.load_text(source="files")
  assert via_tfds.vocab == direct.vocab
  for split in ("train", "valid", "test"):
    np.testing.assert_array_equal(via_tfds.arrays[split], direct.arrays[split])
  assert (tmp_path / "data" / "tiny_shakespeare").is_dir()


def test_tfds_checks_canonical_files_first(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  folder = _copy_dataset("mnist", tmp_path / "manual")
  path = folder / "train-labels-idx1-ubyte.gz"
  blob = bytearray(path.read_bytes())
  blob[100] ^= 0xFF
  path.write_bytes(bytes(blob))
  with pytest.raises(data.ChecksumError, match="train-labels"):
    data.prepare_tfds(
      "mnist", tfds_data_dir=tmp_path / "tfds", manual_dir=folder
    )
