"""The exclusive lock of a meta-training workdir (``WORKDIR/lock``).

Two runs on one workdir would truncate each other's ``metrics.jsonl`` and
race their checkpoint writes, so a run holds ``fcntl.flock`` on
``WORKDIR/lock`` for its whole life. The kernel releases the lock when the
holder's process dies, however it dies, so there is no stale lock to clean
up; the file itself stays and records the last holder's pid and host for
the message a refused run prints.

In a multi-process run one process holds the lock for all of them: the
``--num_local_processes`` launcher, or process 0 (``train.run``).
"""

from collections.abc import Iterator
import contextlib
import fcntl
import json
import os
import pathlib
import socket
import time

LOCK_NAME = "lock"


class WorkdirLockedError(RuntimeError):
  """Another process holds the workdir's lock."""


def _holder(fd: int) -> str:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    info = json.loads(os.read(fd, 4096).decode() or "{}")
    return f"pid {info['pid']} on host {info['host']} (since {info['since']})"
  except (OSError, ValueError, KeyError):
    return "a process that has not yet written its pid"


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Holds the exclusive lock of ``workdir`` (created if missing).

  Args:
    workdir: the run's directory.

  Yields:
    The lock file's path.

  Raises:
    WorkdirLockedError: naming the holder (pid and host), if another
      process holds the lock.
  """
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / LOCK_NAME
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirLockedError(
        f"{workdir} is in use by another meta-training run: "
        f"{_holder(fd)}. Wait for it to finish or stop it, or use another "
        "--workdir."
      ) from None
    info = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    yield path
  finally:
    os.close(fd)  # releases the lock
