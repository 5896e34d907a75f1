"""Host-side transforms of raw datasets: resizing and splitting."""

import numpy as np

NUM_VALID_IMAGES = 10_000  # held out from the end of the canonical train file


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


def split_images(
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
