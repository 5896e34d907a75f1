"""Stops a run cleanly before compiling would exhaust the process's memory maps.

Why this exists: on Linux the kernel caps the memory maps of a process at
``vm.max_map_count`` (65,530 by default), and XLA's CPU backend takes about
three maps (code, read-only data, data) for every kernel it compiles and
keeps them while the program lives. A meta-training run compiles one outer
step per signature group, on its first use, and its evaluation. When a
compile needs a map past the cap, LLVM logs ``Cannot allocate memory`` and
the process aborts: no Python exception, nothing to catch, and the steps
since the last checkpoint are lost. Measured on the 2-core CPU: the outer
steps of the width-8 campaign's 33 signature groups (<= 11k parameters)
left its process holding 61,750 maps, and the compile of its in-run
evaluation (2,862 more) crossed the default cap at step 12,000
(``campaigns/scale_width8/README.md``).

So the loop asks ``MapBudget.check`` before each program it may compile. A
compile of a kind already seen is expected to take at most 1.25x the most
maps that kind took before in this process; a kind not yet seen, at most
15% of the cap. If that could cross the cap, ``check`` raises
``MapLimitError`` (the loop checkpoints first), whose message names the
fixes. A process that re-runs the same command starts with no maps held, so
resuming also works, for a while.

Where the count is unknown (not Linux), nothing is checked.
"""

from collections.abc import Callable
import dataclasses
import pathlib

# A compile of a kind not yet measured in this process is assumed to take
# up to this fraction of the cap. Measured: the width-8 campaign's in-run
# evaluation (4 tasks) took 2,862 maps, one of its outer steps about 1,900
# on average, both under 5% of the default cap.
FIRST_COMPILE_FRACTION = 0.15
# Measured compiles of one kind vary (groups differ in size); this covers it.
GROWTH_MARGIN = 1.25


class MapLimitError(RuntimeError):
  """A compile could exceed ``vm.max_map_count``; the run stopped before it."""


def read_maps() -> tuple[int, int] | None:
  """``(maps this process holds, vm.max_map_count)``, or None if unknown."""
  try:
    limit = int(pathlib.Path("/proc/sys/vm/max_map_count").read_text())
    with open("/proc/self/maps", "rb") as f:
      in_use = sum(1 for _ in f)
  except (OSError, ValueError):
    return None
  return in_use, limit


@dataclasses.dataclass
class MapBudget:
  """The memory-map headroom of this process, checked before each compile.

  Attributes:
    read: ``() -> (in use, limit)``, or None where unknown; the kernel's
      counts (``read_maps``) unless a test substitutes its own.
    largest: the most maps one compile of each kind took, so far.
  """

  read: Callable[[], tuple[int, int] | None] = read_maps
  largest: dict[str, int] = dataclasses.field(default_factory=dict)

  def check(self, kind: str, what: str) -> int | None:
    """Raises unless compiling ``what`` (of ``kind``) surely fits.

    Args:
      kind: the kind of program (programs of one kind take similar maps).
      what: the program, for the message, e.g. "signature group 7".

    Returns:
      The maps in use now (pass it to ``measured``), or None if unknown.

    Raises:
      MapLimitError: naming the counts and the fixes.
    """
    counts = self.read()
    if counts is None:
      return None
    in_use, limit = counts
    if kind in self.largest:
      need = int(GROWTH_MARGIN * self.largest[kind])
    else:
      need = int(FIRST_COMPILE_FRACTION * limit)
    if in_use + need > limit:
      raise MapLimitError(
        f"stopped before compiling {what}: this process holds {in_use} "
        f"memory maps of the kernel's limit vm.max_map_count={limit}, and "
        f"the compile may need about {need} more (XLA's CPU compiler takes "
        "about 3 per kernel; crossing the limit aborts the process). The "
        "run is checkpointed: re-run the same command to resume. To go on "
        "without stopping, raise the limit (sudo sysctl -w "
        "vm.max_map_count=262144), or train on fewer signature groups "
        "(--config.suite.max_groups)."
      )
    return in_use

  def measured(self, kind: str, before: int | None) -> None:
    """Records the maps taken since ``check`` returned ``before``."""
    if before is None:
      return
    counts = self.read()
    if counts is not None:
      taken = max(counts[0] - before, 0)
      self.largest[kind] = max(self.largest.get(kind, 0), taken)
