"""Host-side metric writers: JSON lines and TensorBoard event files.

Metrics reach the host only here, as the dicts the jitted steps return; there
is no tracing-time side channel. Only process 0 writes (``active=False`` on
the others turns every call into a no-op).

The JSONL file is ``WORKDIR/metrics.jsonl``, one object per line with a
``"step"`` key (the number of outer steps done when it was written). When a
run resumes from a checkpoint of step ``s``, lines of steps ``> s`` (written
after that checkpoint by the killed run) are dropped, so the file reads as
one uninterrupted run; a run that starts from scratch drops every line.
"""

import json
import math
import os
import pathlib
from typing import Any

import numpy as np

JSONL_NAME = "metrics.jsonl"


def _scalar(value: Any) -> float | int | str:
  """A JSON-friendly scalar (non-finite floats as strings, JSON lacks them)."""
  if isinstance(value, str):
    return value
  value = np.asarray(value)
  if value.size != 1:
    raise ValueError(f"metrics must be scalars, got shape {value.shape}")
  value = value.item()
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """All records of a metrics file (empty if it does not exist)."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue  # a line cut short by a kill
  return records


class MetricWriter:
  """Writes scalar metrics to ``metrics.jsonl`` and TensorBoard.

  Args:
    workdir: directory of the run.
    start_step: the step the run (re)starts from; existing records of later
      steps are dropped (a resumed run re-does them), and all records when
      it is 0.
    tensorboard: also write TensorBoard event files into ``workdir``.
    active: whether this process writes at all (only process 0 should).
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    start_step: int = 0,
    *,
    tensorboard: bool = True,
    active: bool = True,
  ):
    self.active = active
    self.path = pathlib.Path(workdir) / JSONL_NAME
    self._file = None
    self._tb = None
    if not active:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    kept = [
      r
      for r in read_jsonl(self.path)
      if start_step > 0 and r.get("step", start_step + 1) <= start_step
    ]
    tmp = self.path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, self.path)  # atomic: a kill here keeps one of the two
    self._file = open(self.path, "a")  # noqa: SIM115 (closed in close())
    if tensorboard:
      import tensorboardX  # noqa: PLC0415 (optional, slow to import)

      self._tb = tensorboardX.SummaryWriter(
        str(pathlib.Path(workdir) / "tensorboard"),
        purge_step=start_step + 1,
      )

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """Writes one record of scalar metrics for ``step``.

    Args:
      step: the outer step.
      metrics: name -> scalar (python, numpy or host-fetched jax values).
    """
    if not self.active:
      return
    record = {"step": int(step)}
    record.update({k: _scalar(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in record.items():
        if name != "step" and isinstance(value, int | float):
          self._tb.add_scalar(name, value, global_step=int(step))

  def flush(self) -> None:
    """Flushes buffered records to disk."""
    if self._file is not None:
      self._file.flush()
      os.fsync(self._file.fileno())
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes the files."""
    if self._file is not None:
      self.flush()
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
