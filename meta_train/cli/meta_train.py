"""Meta-trains a learned optimizer (resumes if the workdir holds a run).

Usage:
  lopt meta-train --config configs/NAME.py[:ARG] --workdir DIR \\
      [--config.x.y=value ...] [--num_local_processes=N]

``--config.x.y=value`` overrides any field of the config (the
ml_collections config_flags convention, parsed by ``meta_train.config``:
see there why not by config_flags itself); a wrong or unknown field or a
value of the wrong type fails before any compute.
Re-running the same command on the same ``--workdir`` resumes from the
latest checkpoint.

On a CPU-only machine the process makes one JAX device per core (as many as
divide ``config.estimator.num_pairs``; ``--config.mesh.cpu_devices=N`` picks
another count, 1 turns it off) and shards the population over them, each
device single-threaded. XLA:CPU's intra-op threading is poor on the small ops
of meta-training: on 2 cores this is ~2x faster than one device using both
(bench/meta_throughput.py, part "cpu_layout").

``--num_local_processes=N`` instead runs N processes joined by
``jax.distributed`` on this machine, each pinned to its share of the cores
(~1.65x on 2 cores): the way to test a multi-host setup on one machine.
"""

import os
import signal
import socket
import subprocess
import sys
from typing import Any

from meta_train import config as config_lib

_PROG = "lopt meta-train"
_USAGE = (
  f"usage: {_PROG} --config configs/NAME.py[:ARG] --workdir DIR "
  "[--config.x.y=VALUE ...] [--num_local_processes=N]"
)
_INTERRUPTED = f"{_PROG}: interrupted; resume with the same command"
# Set by the --num_local_processes launcher in its processes' environment:
# it holds the workdir's lock for them.
_LAUNCHER_HOLDS_LOCK = "LOPT_LAUNCHER_HOLDS_WORKDIR_LOCK"


def parse_args(argv: list[str]) -> dict[str, Any]:
  """Parses the command line into config, workdir and process count.

  Raises:
    config_lib.UsageError: with a message naming the bad argument.
  """
  cd, values = config_lib.parse_command_line(
    argv, _USAGE, required=("workdir",), optional=("num_local_processes",)
  )
  try:
    num = int(values.get("num_local_processes", 1))
  except ValueError:
    raise config_lib.UsageError(
      "--num_local_processes: not an integer: "
      f"{values['num_local_processes']!r}"
    ) from None
  return {
    "config": cd,
    "workdir": values["workdir"],
    "num_local_processes": num,
  }


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def local_process_env(
  index: int, num: int, port: int, cores: list[int]
) -> dict[str, str]:
  """Environment of local process ``index`` of ``num`` (one core share each).

  Args:
    index: the process id.
    num: the number of processes.
    port: the coordinator's port on localhost.
    cores: the cores of this process (its XLA threads are limited to them).

  Returns:
    The environment for the subprocess.
  """
  env = dict(os.environ)
  env.update(
    JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
    JAX_NUM_PROCESSES=str(num),
    JAX_PROCESS_ID=str(index),
    JAX_PLATFORMS=env.get("JAX_PLATFORMS", "cpu"),
  )
  env[_LAUNCHER_HOLDS_LOCK] = str(os.getpid())
  if len(cores) == 1:
    # One core: XLA's intra-op thread pool only adds synchronization.
    xla = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{xla} --xla_cpu_multi_thread_eigen=false".strip()
  return env


def launch_local_processes(argv: list[str], num: int) -> int:
  """Runs ``num`` copies of this command joined by ``jax.distributed``.

  Each copy is pinned to a disjoint share of the cores (``taskset``-style
  affinity). If one fails, the others are stopped.

  Args:
    argv: the command's arguments without ``--num_local_processes``.
    num: number of processes.

  Returns:
    0 if all succeeded, else the first non-zero exit status.
  """
  from meta_train import mesh  # noqa: PLC0415 (imports jax)

  cores = mesh.usable_cores()
  pin = getattr(os, "sched_setaffinity", None)  # None: the OS places them
  if num > len(cores):
    print(
      f"{_PROG}: --num_local_processes={num} exceeds the {len(cores)} "
      "available cores",
      file=sys.stderr,
    )
    return 2
  port = _free_port()
  procs = []
  # SIGTERM to the launcher must reach the workers (through the finally
  # below): killed outright, it would leave them running without it.
  _terminate_with_interrupt()
  for i in range(num):
    mine = cores[i::num]
    procs.append(
      subprocess.Popen(
        [sys.executable, "-m", "meta_train.cli.meta_train", *argv],
        env=local_process_env(i, num, port, mine),
        preexec_fn=(lambda mine=mine: pin(0, mine)) if pin else None,
      )
    )
  status = 0
  try:
    for p in procs:
      rc = p.wait()
      if rc and not status:
        status = rc
        for q in procs:  # the others would wait for the dead one forever
          if q.poll() is None:
            q.terminate()
  finally:
    for p in procs:  # e.g. after Ctrl-C: let them checkpoint, then insist
      if p.poll() is None:
        p.terminate()
    for p in procs:
      try:
        p.wait(timeout=60)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
  return status


def _without_flag(argv: list[str], name: str) -> list[str]:
  """``argv`` without ``--name=v`` / ``--name v``."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
    elif a in (f"--{name}", f"-{name}"):
      skip = True
    elif not a.lstrip("-").startswith(f"{name}="):
      out.append(a)
  return out


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt  # lets train.run checkpoint on its way out


def _terminate_with_interrupt() -> None:
  """Makes SIGTERM raise KeyboardInterrupt (unless someone else handles it)."""
  try:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
      signal.signal(signal.SIGTERM, _raise_interrupt)
  except ValueError:  # not the main thread: keep the default
    pass


def main(argv: list[str]) -> int:
  """Entry point of ``lopt meta-train``; returns the exit status."""
  if any(a in ("-h", "--help", "-help") for a in argv):
    print(__doc__)
    return 0
  try:
    opts = parse_args(argv)
    cfg = config_lib.from_config(opts["config"])
  except (config_lib.UsageError, config_lib.ConfigError) as e:
    print(f"{_PROG}: {e}", file=sys.stderr)
    return 2
  if opts["num_local_processes"] > 1:
    from meta_train import workdir as workdir_lib  # noqa: PLC0415

    try:
      # The launcher holds the workdir's lock for its processes.
      with workdir_lib.lock(opts["workdir"]):
        return launch_local_processes(
          _without_flag(argv, "num_local_processes"),
          opts["num_local_processes"],
        )
    except workdir_lib.WorkdirLockedError as e:
      print(f"{_PROG}: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt:
      print(_INTERRUPTED, file=sys.stderr)
      return 130

  # jax/estimators: slow imports, not needed for --help or bad configs.
  import jax  # noqa: PLC0415

  import meta_train  # noqa: PLC0415
  from meta_train import checkpointing, map_budget, train  # noqa: PLC0415
  from meta_train import workdir as workdir_lib  # noqa: PLC0415

  # The process-wide settings the run needs, set here, at the entry.
  for name, value in train.REQUIRED_JAX_CONFIG.items():
    jax.config.update(name, value)
  meta_train.use_cpu_layout(cfg)
  _terminate_with_interrupt()
  try:
    train.run(
      opts["config"],
      opts["workdir"],
      lock_workdir=not os.environ.get(_LAUNCHER_HOLDS_LOCK),
    )
  except config_lib.ConfigError as e:
    print(f"{_PROG}: bad config: {e}", file=sys.stderr)
    return 2
  except checkpointing.RestoreError as e:
    print(f"{_PROG}: cannot resume: {e}", file=sys.stderr)
    return 2
  except workdir_lib.WorkdirLockedError as e:
    print(f"{_PROG}: {e}", file=sys.stderr)
    return 2
  except map_budget.MapLimitError as e:
    print(f"{_PROG}: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(_INTERRUPTED, file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":  # the --num_local_processes workers
  from meta_train import cli  # noqa: PLC0415

  sys.exit(cli.run_guarded(_PROG, main, sys.argv[1:]))
