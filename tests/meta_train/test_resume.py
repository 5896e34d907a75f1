"""Checkpoints survive failures; a killed run resumes bit-exactly."""

import functools
import os
import pathlib
import random
import signal
import subprocess
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import test_utils

import learned_opt
from meta_train import checkpointing
from meta_train import metrics as metrics_lib


class _State(NamedTuple):
  theta: dict
  keys: jax.Array  # typed PRNG keys
  step: jax.Array


def _state(seed: int) -> _State:
  return _State(
    theta={"w": jnp.arange(6.0).reshape(2, 3) * seed},
    keys=jax.random.split(jax.random.key(seed), 4),
    step=jnp.asarray(seed, jnp.int32),
  )


def test_failed_save_never_corrupts_the_latest_checkpoint(
  tmp_path, monkeypatch
):
  manager = checkpointing.make_manager(tmp_path, keep=3)
  checkpointing.save(manager, 1, _state(1), {"seed": 1})

  def disk_full(*args, **kwargs):
    raise OSError("disk full")

  # The config item fails while the state item is being (or was) written.
  with monkeypatch.context() as m:
    m.setattr(ocp.handlers.JsonCheckpointHandler, "save", disk_full)
    m.setattr(ocp.handlers.JsonCheckpointHandler, "async_save", disk_full)
    with pytest.raises(OSError, match="disk full"):
      checkpointing.save(manager, 2, _state(2), {"seed": 2})
  assert checkpointing.latest_step(manager) == 1
  state, config = checkpointing.restore(manager, _state(0))
  test_utils.assert_trees_equal(state.theta, _state(1).theta)
  assert jnp.array_equal(
    jax.random.key_data(state.keys), jax.random.key_data(_state(1).keys)
  )
  assert int(state.step) == 1 and config == {"seed": 1}
  manager.close()

  # A restarted run sees step 1 as the latest and can save step 2 again.
  manager = checkpointing.make_manager(tmp_path, keep=3)
  assert checkpointing.latest_step(manager) == 1
  checkpointing.save(manager, 2, _state(2), {"seed": 2})
  state, _ = checkpointing.restore(manager, _state(0))
  assert int(state.step) == 2
  manager.close()


def test_restore_without_checkpoint_raises(tmp_path):
  manager = checkpointing.make_manager(tmp_path, keep=1)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    checkpointing.restore(manager, _state(0))
  manager.close()


def test_restore_into_another_layout_names_the_fix(tmp_path):
  # E.g. a workdir written before the optimizers' accumulators became flat:
  # the same config now builds inner states of other shapes.
  manager = checkpointing.make_manager(tmp_path, keep=1)
  checkpointing.save(manager, 1, _state(1), {"seed": 1})
  manager.close()
  # Reopened, as a resumed run does.
  manager = checkpointing.make_manager(tmp_path, keep=1)
  other = _state(0)._replace(theta={"w": jnp.zeros((6,))})
  with pytest.raises(
    checkpointing.RestoreError,
    match=r"theta/w is stored with shape \(2, 3\), this code builds \(6,\)"
    r".*new --workdir",
  ):
    checkpointing.restore(manager, other)
  renamed = _state(0)._replace(theta={"v": jnp.zeros((2, 3))})
  with pytest.raises(checkpointing.RestoreError, match="theta/w.*theta/v"):
    checkpointing.restore(manager, renamed)
  # The checkpoint itself is untouched and still restores.
  state, _ = checkpointing.restore(manager, _state(0))
  test_utils.assert_trees_equal(state.theta, _state(1).theta)
  manager.close()


def _meta_train_cmd(workdir: pathlib.Path, *overrides: str) -> list[str]:
  return test_utils.meta_train_cmd(
    workdir,
    "--config.outer.num_steps=40",
    "--config.eval.every=0",
    "--config.log.every=1",
    "--config.log.progress=false",
    *overrides,
  )


def _finished_steps(workdir: pathlib.Path) -> list[int]:
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _run(cmd, env, timeout=900):
  proc = subprocess.run(
    cmd,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


def _without_timings(records):
  return [
    {
      k: v
      for k, v in r.items()
      if not k.startswith("time/") and "per_s" not in k
    }
    for r in records
  ]


def _assert_matches_reference(workdir, reference, steps: int) -> None:
  """The final theta and every logged step equal the uninterrupted run's."""
  _, ref_theta, ref_meta = learned_opt.load(reference / "theta")
  _, theta, meta = learned_opt.load(workdir / "theta")
  assert meta["meta_train_step"] == ref_meta["meta_train_step"] == steps
  test_utils.assert_trees_equal(theta, ref_theta)
  assert _without_timings(
    metrics_lib.read_jsonl(workdir / "metrics.jsonl")
  ) == _without_timings(metrics_lib.read_jsonl(reference / "metrics.jsonl"))


def _kill_after(cmd, env, workdir, step: int, moment) -> bool:
  """Runs ``cmd`` until a checkpoint after ``step``, ``moment()``, SIGKILL.

  Returns:
    What ``moment()`` returned.
  """
  proc = subprocess.Popen(
    cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
  )
  try:
    deadline = time.monotonic() + 900
    while max(_finished_steps(workdir), default=-1) <= step:
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      assert time.monotonic() < deadline, "no checkpoint appeared"
      time.sleep(0.005)
    result = moment()
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
    proc.stderr.close()
  return result


def _writing(workdir: pathlib.Path) -> bool:
  """Whether a checkpoint is being written (orbax's temporary directory)."""
  directory = workdir / "checkpoints"
  try:
    return any("tmp" in p.name for p in directory.iterdir())
  except FileNotFoundError:
    return False


@pytest.mark.slow
def test_killed_at_random_moments_resumes_bit_identically(
  tmp_path, subprocess_env
):
  """SIGKILL at 3 seeded random moments, one of them mid-checkpoint-write.

  The first kill comes mid-write; the others after a random delay past a
  finished checkpoint (or mid-write again, with probability 0.3), so both
  a torn checkpoint and a kill between steps are resumed from.
  """
  steps = "--config.outer.num_steps=60"
  reference = tmp_path / "reference"
  _run(
    _meta_train_cmd(reference, steps, "--config.checkpoint.every=1000"),
    subprocess_env(),
  )
  workdir = tmp_path / "killed"
  cmd = _meta_train_cmd(workdir, steps, "--config.checkpoint.every=1")
  rng, env = random.Random(18), subprocess_env()

  def wait_for_a_write() -> bool:
    deadline = time.monotonic() + 60
    while not _writing(workdir) and time.monotonic() < deadline:
      pass  # busy-wait: a write takes milliseconds
    return _writing(workdir)

  kills, mid_write, last = 0, 0, -1
  while kills < 3:
    # Let it make progress past the last kill, then pick the moment:
    # while a checkpoint is being written, or after a random delay.
    if kills == 0 or rng.random() < 0.3:
      mid_write += _kill_after(cmd, env, workdir, last, wait_for_a_write)
    else:
      delay = functools.partial(time.sleep, rng.uniform(0.0, 0.3))
      _kill_after(cmd, env, workdir, last, delay)
    kills += 1
    last = max(_finished_steps(workdir), default=-1)
    assert last < 60, "finished before the kills were done; lengthen it"
  assert mid_write >= 1
  _run(cmd, subprocess_env())  # the same command resumes, once more
  _assert_matches_reference(workdir, reference, 60)


# What the launcher test needs is two processes and a signal, not a task
# mix: one 2-d quadratic signature and a small population compile fastest.
_ONE_CHEAP_SIGNATURE = (
  "--config.suite.max_params=2",
  "--config.suite.max_groups=1",
  "--config.suite.num_specs=8",
  "--config.estimator.num_pairs=4",
  "--config.estimator.unroll_length=5",
  "--config.lopt.kwargs.hidden_size=4",
)


@pytest.mark.slow
def test_sigterm_to_two_process_launcher_saves_and_stops(
  tmp_path, subprocess_env
):
  """Both workers save the same agreed step, stop, and the run resumes."""
  workdir = tmp_path / "run"
  cmd = _meta_train_cmd(
    workdir,
    "--config.outer.num_steps=100000",
    "--config.checkpoint.every=100000",
    "--num_local_processes=2",
    *_ONE_CHEAP_SIGNATURE,
  )
  proc = subprocess.Popen(
    cmd,
    env=subprocess_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  metrics = workdir / "metrics.jsonl"
  try:
    deadline = time.monotonic() + 900
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      assert time.monotonic() < deadline, "the run did not start"
      time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=50)  # the launcher's limit is 60 s
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 130, stderr[-3000:]
  assert "interrupted; resume with the same command" in stderr
  # No periodic checkpoint was due: this one is the preemption save.
  saved = _finished_steps(workdir)
  assert len(saved) == 1 and saved[0] >= 3, saved
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  _run(
    _meta_train_cmd(
      workdir,
      f"--config.outer.num_steps={saved[0] + 2}",
      "--config.checkpoint.every=100000",
      "--num_local_processes=2",
      *_ONE_CHEAP_SIGNATURE,
    ),
    subprocess_env(),
  )
  _, theta, meta = learned_opt.load(workdir / "theta")
  assert meta["meta_train_step"] == saved[0] + 2
  test_utils.assert_tree_all_finite(theta)


# Written by the code before the meta_train split (commit 5a5aa2d, with the
# old field names suite/estimator/eval.num_tasks in config.json):
#   python -m meta_train.main --config configs/tiny.py:smoke --workdir W \
#     --config.outer.num_steps=N --config.estimator.num_tasks=2 \
#     --config.suite.num_tasks=8 --config.mesh.cpu_devices=1 \
#     --config.mesh.num_devices=1 --config.log.tensorboard=false \
#     --config.log.progress=false --config.checkpoint.keep=1 \
#     --config.lopt.kwargs.hidden_size=4
# with N=2 (data/old_workdir_step2: config.json and the step-2 checkpoint)
# and N=4 (data/old_theta_step4: the theta it exported at step 4).
OLD_DATA = pathlib.Path(__file__).resolve().parent / "data"


def test_workdir_of_the_old_code_resumes(tmp_path):
  import shutil

  from configs import tiny
  from meta_train import train

  def resume(num_steps):
    workdir = tmp_path / f"run{num_steps}"
    shutil.copytree(OLD_DATA / "old_workdir_step2", workdir)
    cd = tiny.get_config("smoke")
    cd.outer.num_steps = num_steps
    cd.estimator.num_pairs = 2
    cd.suite.num_specs = 8
    cd.mesh.num_devices = 1
    cd.log.tensorboard = False
    cd.log.progress = False
    cd.checkpoint.keep = 1
    cd.lopt.kwargs.hidden_size = 4
    return train.run(cd, workdir), workdir

  result, workdir = resume(4)
  assert result.step == 4
  # It resumed at step 2 (the old checkpoint), not from scratch: only the
  # steps after it were logged by this run.
  steps = [r["step"] for r in metrics_lib.read_jsonl(workdir / "metrics.jsonl")]
  assert steps == [3, 4]
  # And it continued as the old code did: bit for bit on the CPU that wrote
  # the data, but XLA rounds differently on others (measured on another
  # x86 CPU: 5e-4 at most, where the two steps moved theta by up to 1.4e-2;
  # ES magnifies a loss's last bits by 1/std). So the resumed theta must be
  # far closer to the old code's than to where the two steps started.
  _, old_theta, _ = learned_opt.load(OLD_DATA / "old_theta_step4")
  at_step2 = resume(2)[0].theta

  def largest_difference(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(np.subtract(x, y)))) for x, y in pairs)

  assert jax.tree.structure(result.theta) == jax.tree.structure(old_theta)
  moved = largest_difference(at_step2, old_theta)
  assert moved > 1e-3  # the two steps did move it
  assert largest_difference(result.theta, old_theta) < 0.1 * moved
