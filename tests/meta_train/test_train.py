"""The outer loop: guarded outer steps, metrics, a whole run that learns.

The fast end-to-end tests meta-train a one-parameter learned optimizer (a
learned learning rate) so that compiling the loop takes seconds; the slow
test meta-trains ``MLPLOpt`` on quadratics with the tiny config through the
``lopt meta-train`` command, as a user would.
"""

import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

import learned_opt
from meta_train import checkpointing, map_budget, train
from meta_train import config as config_lib
from meta_train import metrics as metrics_lib

# ---------------------------------------------------------- outer step


def _fake_estimate(theta, tasks, est_state, key):
  """Stand-in estimator: the gradient and meta-loss come from ``tasks``."""
  del theta, key
  metrics = {"meta_loss": tasks["loss"], "inner_steps": jnp.float32(1.0)}
  return tasks["grad"], est_state + 1, metrics


@pytest.fixture(scope="module")
def jitted_outer_step():
  def step(outer_tx, clip_norm, state, tasks):
    return train.group_step(
      _fake_estimate, outer_tx, clip_norm, jax.random.key(0), state, tasks, 0
    )

  return jax.jit(step, static_argnums=(0, 1))


def _state(theta):
  return train.OuterState(
    theta, optax.sgd(1.0).init(theta), jnp.zeros([4]), 3, 0
  )


def test_nonfinite_meta_gradient_never_reaches_theta(jitted_outer_step):
  theta = {"w": jnp.array([1.0, 2.0])}
  sgd = optax.with_extra_args_support(optax.sgd(0.5))
  for bad in (jnp.nan, jnp.inf):
    tasks = {"grad": {"w": jnp.array([bad, 1.0])}, "loss": jnp.float32(1.0)}
    (new_theta, _, est, step, skipped), m = jitted_outer_step(
      sgd, 0.0, _state(theta), tasks
    )
    test_utils.assert_trees_equal(new_theta, theta)
    assert int(skipped) == 1 and bool(m["skipped"])
    assert int(step) == 4  # the step still counts (the streams move on)
    np.testing.assert_array_equal(est, np.ones(4))  # inner runs carry on
  # A NaN meta-loss (no finite instance) is skipped too.
  tasks = {"grad": {"w": jnp.ones(2)}, "loss": jnp.float32(jnp.nan)}
  (new_theta, *_, skipped), _ = jitted_outer_step(
    sgd, 0.0, _state(theta), tasks
  )
  test_utils.assert_trees_equal(new_theta, theta)
  assert int(skipped) == 1


def test_outer_step_clips_and_passes_meta_loss_as_value(jitted_outer_step):
  def value_scaled_sgd():
    # An "optimizer" whose step is -value * grad: it shows what it was given.
    def update(updates, state, params=None, *, value=None, **extra):
      del params, extra
      return jax.tree.map(lambda g: -value * g, updates), state

    return optax.GradientTransformationExtraArgs(
      lambda p: optax.EmptyState(), update
    )

  theta = {"w": jnp.array([1.0, 2.0])}
  grad = {"w": jnp.array([3.0, 4.0])}  # norm 5
  tasks = {"grad": grad, "loss": jnp.float32(0.5)}
  state = train.OuterState(theta, optax.EmptyState(), jnp.zeros([4]), 0, 0)
  (new_theta, *_, skipped), m = jitted_outer_step(
    value_scaled_sgd(), 1.0, state, tasks
  )
  # Clipped to norm 1 -> (0.6, 0.8), times value 0.5.
  np.testing.assert_allclose(new_theta["w"], [1.0 - 0.3, 2.0 - 0.4], rtol=1e-6)
  np.testing.assert_allclose(m["grad_norm"], 5.0, rtol=1e-6)
  assert int(skipped) == 0


# -------------------------------------------------------------- metrics


def test_metric_writer_jsonl_tensorboard_and_resume(tmp_path):
  with metrics_lib.MetricWriter(tmp_path, tensorboard=True) as w:
    for step in (1, 2, 3):
      w.write(step, {"meta_loss": np.float32(step), "bad": float("nan")})
  records = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2, 3]
  assert records[0]["bad"] == "nan" and records[2]["meta_loss"] == 3.0
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  # A run resumed from the checkpoint of step 2 redoes step 3 and on.
  with metrics_lib.MetricWriter(tmp_path, 2, tensorboard=False) as w:
    w.write(3, {"meta_loss": 7.0})
  records = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["meta_loss"]) for r in records] == [
    (1, 1.0),
    (2, 2.0),
    (3, 7.0),
  ]
  # A run that starts from scratch starts a fresh file.
  with metrics_lib.MetricWriter(tmp_path, 0, tensorboard=False) as w:
    w.write(1, {"meta_loss": 5.0})
  records = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["meta_loss"]) for r in records] == [(1, 5.0)]
  # Non-zero processes write nothing.
  with metrics_lib.MetricWriter(tmp_path / "p1", active=False) as w:
    w.write(1, {"x": 1.0})
  assert not (tmp_path / "p1").exists()
  with pytest.raises(ValueError, match="scalars"):
    with metrics_lib.MetricWriter(tmp_path / "v", tensorboard=False) as w:
      w.write(1, {"x": np.ones(3)})


# --------------------------------------------- whole runs, learned lr


@dataclasses.dataclass(frozen=True)
class LearnedLR(learned_opt.LearnedOptimizer):
  """SGD whose log learning rate is theta: a 1-parameter learned optimizer."""

  architecture: ClassVar[str] = "test_learned_lr"
  init_log_lr: float = -6.0

  def init(self, key):
    del key
    return {"log_lr": jnp.asarray(self.init_log_lr, jnp.float32)}

  def optimizer(self, theta):
    def update(grads, state, params=None, *, value=None, **extra):
      del params, value, extra
      lr = jnp.exp(theta["log_lr"])
      return jax.tree.map(lambda g: -lr * g, grads), state

    return optax.GradientTransformationExtraArgs(
      lambda params: optax.EmptyState(), update
    )


def lr_config(num_steps=30, checkpoint_every=10):
  """Quadratics of dimension 2; 4 ES pairs; a learned learning rate."""
  from configs import tiny

  c = tiny.get_config()
  c.update_from_flattened_dict(
    {
      "suite.max_params": 2,
      "suite.max_groups": 1,
      "suite.num_specs": 8,
      "estimator.num_pairs": 4,
      "estimator.unroll_length": 5,
      "estimator.min_horizon": 20,
      "estimator.max_horizon": 60,
      "estimator.std": 0.05,
      "outer.num_steps": num_steps,
      "outer.learning_rate": 0.2,
      "eval.every": 10,
      "eval.num_eval_tasks": 2,
      "eval.num_steps": 30,
      "checkpoint.every": checkpoint_every,
      "log.every": 5,
      "log.progress": False,
    }
  )
  return c


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("lr_run")
  return workdir, train.run(lr_config(), workdir, lopt=LearnedLR())


def test_run_learns_and_writes_its_outputs(lr_run):
  workdir, result = lr_run
  assert result.step == 30
  # The learned step size grows from exp(-6) towards the stable range.
  assert float(result.theta["log_lr"]) > -6.0 + 1.0
  records = metrics_lib.read_jsonl(workdir / "metrics.jsonl")
  evals = [r for r in records if "eval/final_loss" in r]
  assert [r["step"] for r in evals] == [0, 10, 20, 30]
  assert evals[-1]["eval/final_loss"] < 0.9 * evals[0]["eval/final_loss"]
  train_records = [r for r in records if "meta_loss" in r]
  assert [r["step"] for r in train_records] == list(range(5, 31, 5))
  assert all(r["num_skipped"] == 0 for r in train_records)
  assert all(r["inner_steps"] == 2 * 4 * 5 for r in train_records)
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["estimator"]["num_pairs"] == 4
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
  assert steps == [20, 30]  # every 10, the last 2 kept
  manifest = json.loads((workdir / "theta" / "manifest.json").read_text())
  assert manifest["metadata"]["meta_train_step"] == 30
  # Every evaluated theta is kept, with its evaluation, to choose from later.
  kept = sorted(p.name for p in (workdir / "eval_thetas").iterdir())
  assert kept == [f"step_{s:07d}" for s in (0, 10, 20, 30)]
  for r in evals:
    path = workdir / "eval_thetas" / f"step_{r['step']:07d}"
    metadata = json.loads((path / "manifest.json").read_text())["metadata"]
    assert metadata["meta_train_step"] == r["step"]
    assert metadata["eval"]["eval/final_loss"] == r["eval/final_loss"]


def test_resumed_run_is_bit_identical(lr_run, tmp_path):
  workdir, uninterrupted = lr_run
  # A run killed after its step-20 checkpoint leaves this behind.
  killed = tmp_path / "killed"
  shutil.copytree(workdir / "checkpoints" / "20", killed / "checkpoints" / "20")
  shutil.copy(workdir / "config.json", killed / "config.json")
  cd = lr_config()
  cd.eval.every = 0  # evaluation does not touch the state; skip its compile
  resumed = train.run(cd, killed, lopt=LearnedLR())
  assert resumed.step == 30
  test_utils.assert_trees_equal(resumed.theta, uninterrupted.theta)
  test_utils.assert_trees_equal(
    jax.device_get(resumed.state.est_states),
    jax.device_get(uninterrupted.state.est_states),
  )
  records = metrics_lib.read_jsonl(killed / "metrics.jsonl")
  assert [r["step"] for r in records if "meta_loss" in r] == [25, 30]
  # Re-running a finished run computes nothing and returns the same theta.
  again = train.run(cd, killed, lopt=LearnedLR())
  assert again.step == 30
  test_utils.assert_trees_equal(again.theta, uninterrupted.theta)


def test_run_saved_before_a_field_existed_resumes(lr_run, tmp_path):
  workdir, uninterrupted = lr_run
  old = tmp_path / "old"
  shutil.copytree(workdir / "checkpoints" / "30", old / "checkpoints" / "30")
  saved = json.loads((workdir / "config.json").read_text())
  del saved["lopt"]["init_from"]  # as written before init_from existed
  (old / "config.json").write_text(json.dumps(saved))
  cd = lr_config()
  cd.eval.every = 0
  resumed = train.run(cd, old, lopt=LearnedLR())
  assert resumed.step == 30
  test_utils.assert_trees_equal(resumed.theta, uninterrupted.theta)


def test_workdir_of_another_run_is_refused(lr_run):
  workdir, _ = lr_run
  cd = lr_config()
  cd.estimator.std = 0.1
  with pytest.raises(ValueError, match=r"different config\.estimator"):
    train.run(cd, workdir, lopt=LearnedLR())


def test_failed_start_writes_nothing_and_stale_config_does_not_refuse(
  lr_run, tmp_path
):
  # A typo found during setup leaves no trace in the workdir.
  cd = lr_config(num_steps=20)
  cd.lopt.init_from = "nope"
  with pytest.raises(ValueError, match=r"config\.lopt\.init_from"):
    train.run(cd, tmp_path / "typo", lopt=LearnedLR())
  assert not (tmp_path / "typo").exists()
  # A config.json without a checkpoint (left by a failed start of older
  # code) holds no run: the fixed command is not refused as "different".
  workdir, _ = lr_run
  fixed = tmp_path / "fixed"
  fixed.mkdir()
  saved = json.loads((workdir / "config.json").read_text())
  saved["lopt"]["init_from"] = "nope"
  (fixed / "config.json").write_text(json.dumps(saved))
  cd = lr_config(num_steps=1)
  cd.eval.every = 0
  assert train.run(cd, fixed, lopt=LearnedLR()).step == 1
  # Replaced with the first checkpoint.
  assert json.loads((fixed / "config.json").read_text())["lopt"] == (
    saved["lopt"] | {"init_from": ""}
  )


def test_unknown_family_is_a_config_error_naming_the_valid_ones(tmp_path):
  cd = lr_config()
  cd.suite.families = ("quadratic", "nope")
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config\.suite\.families: unknown family 'nope'; valid families: "
    r"mlp, .*quadratic",
  ):
    train.run(cd, tmp_path / "w", lopt=LearnedLR())
  assert not (tmp_path / "w").exists()


def test_run_checks_and_never_changes_process_settings(tmp_path):
  assert jax.config.jax_threefry_partitionable
  try:
    jax.config.update("jax_threefry_partitionable", False)
    with pytest.raises(
      RuntimeError,
      match=r"jax_threefry_partitionable=True.*"
      r"jax\.config\.update\('jax_threefry_partitionable', True\)",
    ):
      train.run(lr_config(), tmp_path / "w", lopt=LearnedLR())
    assert not jax.config.jax_threefry_partitionable  # left as it was
  finally:
    jax.config.update("jax_threefry_partitionable", True)
  assert not (tmp_path / "w").exists()


def _largest_array_file(directory: pathlib.Path) -> pathlib.Path:
  """The biggest of the files that hold array data (orbax's ``d/``)."""
  return max(
    (p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"),
    key=lambda p: p.stat().st_size,
  )


def _tree_bytes(directory: pathlib.Path) -> dict:
  return {
    p.relative_to(directory): p.read_bytes()
    for p in directory.rglob("*")
    if p.is_file()
  }


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_valid(
  lr_run, tmp_path, caplog, damage
):
  workdir, _ = lr_run
  run = tmp_path / "run"
  shutil.copytree(workdir / "checkpoints", run / "checkpoints")
  shutil.copy(workdir / "config.json", run / "config.json")
  victim = _largest_array_file(run / "checkpoints" / "30")
  data = bytearray(victim.read_bytes())
  if damage == "flip":
    data[len(data) // 2] ^= 0x01
  else:
    data = data[: len(data) // 2]
  victim.write_bytes(bytes(data))
  cd = lr_config(num_steps=20)  # stop at the restored step: no compile
  cd.eval.every = 0
  with caplog.at_level("WARNING"):
    result = train.run(cd, run, lopt=LearnedLR())
  assert result.step == 20
  manager = checkpointing.make_manager(workdir / "checkpoints", keep=2)
  intact, _ = checkpointing.restore(manager, result.state, step=20)
  manager.close()
  test_utils.assert_trees_equal(result.theta, jax.device_get(intact.theta))
  assert re.search(
    r"checkpoint 30 .* is damaged .*resuming from checkpoint 20", caplog.text
  )
  # Moved aside, not deleted; the run's next save of step 30 is not blocked.
  assert [p.name.split("-")[0] for p in (run / "damaged_checkpoints").iterdir()]
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["20"]


def test_no_valid_checkpoint_fails_clearly_and_deletes_nothing(
  lr_run, tmp_path
):
  workdir, _ = lr_run
  run = tmp_path / "run"
  shutil.copytree(workdir / "checkpoints", run / "checkpoints")
  shutil.copy(workdir / "config.json", run / "config.json")
  for step in ("20", "30"):
    victim = _largest_array_file(run / "checkpoints" / step)
    victim.write_bytes(victim.read_bytes()[:-7])
  before = _tree_bytes(run)
  cd = lr_config()
  cd.eval.every = 0
  with pytest.raises(
    checkpointing.RestoreError,
    match=r"no valid checkpoint .*checkpoint 30: file .* truncated.*"
    r"checkpoint 20: file .*Nothing was moved or deleted",
  ):
    train.run(cd, run, lopt=LearnedLR())
  after = _tree_bytes(run)
  assert before.items() <= after.items()  # every file kept, unchanged


# ------------------------------------------------- MLPLOpt, tiny config


@pytest.mark.slow
def test_tiny_config_meta_training_learns(tmp_path, subprocess_env):
  """200 outer steps of ES: the held-out loss falls to < 1/2 of its start."""
  workdir = tmp_path / "tiny"
  cmd = test_utils.meta_train_cmd(workdir, "--config.log.progress=false")
  proc = subprocess.run(
    cmd, env=subprocess_env(), capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = metrics_lib.read_jsonl(workdir / "metrics.jsonl")
  evals = {
    r["step"]: r["eval/final_loss"] for r in records if "eval/" in str(r)
  }
  assert sorted(evals) == [0, 50, 100, 150, 200]
  # Margin: the mean normalized final loss of the held-out quadratics must at
  # least halve (measured here: 0.89 -> 0.03).
  assert evals[200] < 0.5 * evals[0], evals
  assert all(r["num_skipped"] == 0 for r in records if "num_skipped" in r), (
    "no step should need the non-finite guard on quadratics"
  )
  lopt, theta, metadata = learned_opt.load(workdir / "theta")
  assert isinstance(lopt, learned_opt.MLPLOpt) and lopt.hidden_size == 16
  assert metadata["meta_train_step"] == 200
  test_utils.assert_tree_all_finite(theta)


def test_a_leg_state_carries_theta_outer_state_and_step(lr_run, tmp_path):
  # The campaign's small state: a workdir holding only leg_state.npz starts
  # at its step with its theta and outer optimizer state (fresh inner runs).
  from meta_train import leg_state

  workdir, result = lr_run
  saved = np.load(workdir / leg_state.FILENAME)
  np.testing.assert_array_equal(saved["['step']"], 30)
  np.testing.assert_array_equal(
    saved["['theta']['log_lr']"], result.theta["log_lr"]
  )
  assert (workdir / leg_state.FILENAME).stat().st_size < 10_000
  leg = tmp_path / "next_leg"
  leg.mkdir()
  shutil.copy(workdir / leg_state.FILENAME, leg / leg_state.FILENAME)
  start = jax.eval_shape(lambda: result.state)
  carried = leg_state.load_into(leg / leg_state.FILENAME, start)
  test_utils.assert_trees_equal(
    carried["opt_state"], jax.device_get(result.state.opt_state)
  )
  nxt = train.run(lr_config(num_steps=32), leg, lopt=LearnedLR())
  assert nxt.step == 32
  records = metrics_lib.read_jsonl(leg / "metrics.jsonl")
  steps = [r["step"] for r in records if "meta_loss" in r]
  assert steps and min(steps) > 30  # it went on from step 30
  # Another optimizer's state does not fit: refused, naming the leaves.
  with pytest.raises(leg_state.LegStateError, match="log_lr"):
    leg_state.load_into(
      leg / leg_state.FILENAME, start._replace(theta={"other": np.zeros(2)})
    )


def test_run_stops_checkpointed_before_a_compile_that_could_exhaust_maps(
  tmp_path,
):
  # Two signature groups, each compiled on its first use. The kernel's
  # counts are substituted: 1,000 more maps at each reading, under a limit
  # of 4,000. The first group's compile fits (1,000 + 15% of the limit);
  # before the second, 3,000 + 1.25 x the 1,000 the first took does not.
  readings = iter(range(1000, 10**6, 1000))
  budget = map_budget.MapBudget(read=lambda: (next(readings), 4000))
  cd = lr_config(num_steps=20, checkpoint_every=50)
  cd.suite.max_params = 8  # quadratics of dimension 8 and 2
  cd.suite.max_groups = 2
  cd.eval.every = 0
  workdir = tmp_path / "run"
  with pytest.raises(map_budget.MapLimitError, match="max_map_count=4000"):
    train.run(cd, workdir, lopt=LearnedLR(), budget=budget)
  # The steps done before the stop are checkpointed, none after it.
  saved = [int(p.name) for p in (workdir / "checkpoints").iterdir()]
  assert len(saved) == 1 and 0 < saved[0] < 20
  records = metrics_lib.read_jsonl(workdir / "metrics.jsonl")
  assert len({r["group"] for r in records if "meta_loss" in r}) <= 1
  # That checkpoint is the run's state to resume from (resuming itself is
  # tested above), and theta is exported as of the same step.
  manager = checkpointing.make_manager(workdir / "checkpoints", 3)
  assert checkpointing.latest_step(manager) == saved[0]
  manager.close()
  manifest = json.loads((workdir / "theta" / "manifest.json").read_text())
  assert manifest["metadata"]["meta_train_step"] == saved[0]
