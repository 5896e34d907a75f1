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

from meta_train import config as config_lib

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


# The config sections that make a run what it is (outer.num_steps may grow).
RUN_IDENTITY = ("seed", "lopt", "suite", "estimator")


def check_same_run(has_state: bool, workdir: pathlib.Path, cfg) -> None:
  """Refuses to resume a workdir that holds a different run (reads only).

  A workdir holds a run once it has a state (a checkpoint, or a campaign's
  leg state): ``config.json`` is written with each checkpoint, so a start
  that failed before its first checkpoint leaves nothing that could refuse
  the next one.
  """
  path = workdir / "config.json"
  if not has_state or not path.exists():
    return
  current = config_lib.to_dict(cfg)
  saved = json.loads(path.read_text())
  try:  # Fields added since the run started take their defaults.
    saved = config_lib.to_dict(config_lib.from_config(saved))
  except config_lib.ConfigError:
    pass  # compared as saved; a difference is reported below
  changed = [k for k in RUN_IDENTITY if saved.get(k) != current[k]]
  if changed:
    raise config_lib.ConfigError(
      f"{workdir} holds a run with a different config."
      f"{', config.'.join(changed)} (saved: "
      f"{ {k: saved.get(k) for k in changed} }); resume it with the same "
      "values or use a new --workdir."
    )


def write_config(workdir: pathlib.Path, cfg) -> None:
  """Writes ``WORKDIR/config.json`` atomically (process 0)."""
  path = workdir / "config.json"
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(config_lib.to_dict(cfg), indent=2))
  tmp.replace(path)
