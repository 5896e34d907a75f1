"""``--out``: made and checked writable before any compute starts.

A run that trains for minutes and then cannot write its report loses that
work; an output folder that cannot be created or written is refused up
front instead, naming the path and the fix.
"""

import os
import pathlib
import tempfile


def prepare(path: str | os.PathLike) -> pathlib.Path:
  """Creates ``path`` (and parents) if needed and checks it is writable.

  Returns:
    The path.

  Raises:
    ValueError: naming the path and what is wrong with it.
  """
  path = pathlib.Path(path)
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check_"):
      pass
  except OSError as e:
    reason = e.strerror or type(e).__name__
    raise ValueError(
      f"--out {path}: cannot create or write this folder ({reason}); "
      "choose a writable folder"
    ) from None
  return path
