"""Tests of meta_train/evaluation/ (rollout, report, resolve) and the `lopt evaluate` CLI.

Three test-function tasks (one static signature) x 2 seeds, 12 steps. The
CLI runs once to T and once to 2T with a randomly initialised MLPLOpt
checkpoint; both runs share the three compiled run programs (learned, Adam
grid, SGD-momentum grid), and the unit tests reuse them where they can.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

import learned_opt
from learned_opt import pretrained
from meta_train import map_budget
from meta_train.cli import evaluate as evaluate_cli
from meta_train.evaluation import report, resolve, rollout
import task_suite
from task_suite.families import test_functions

STEPS = 12
VALID_EVERY = 4
SEEDS = 2
NUM_TASKS = 3
CLI_ARGS = [
  "--families",
  "test_functions",
  "--num-tasks",
  str(NUM_TASKS),
  "--steps",
  str(STEPS),
  "--valid-every",
  str(VALID_EVERY),
  "--seeds",
  str(SEEDS),
]
CONFIG = rollout.RolloutConfig(
  num_steps=STEPS, valid_every=VALID_EVERY, num_eval_batches=4
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("checkpoints")
  lopt = learned_opt.MLPLOpt()
  pretrained.save_pretrained(
    root / "random_mlp", lopt, lopt.init(jax.random.key(0)), outer_steps=0
  )
  return root


def _cli(argv):
  """``lopt evaluate`` keeping its programs for the tests below (however
  many memory maps this test process already holds)."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(evaluate_cli, "RELEASE_FRACTION", 1.0)
    assert evaluate_cli.main(argv) == 0


@pytest.fixture(scope="module")
def run_t(checkpoints, tmp_path_factory):
  out = tmp_path_factory.mktemp("eval_t")
  argv = ["--optimizer", str(checkpoints / "random_mlp"), "--out", str(out)]
  _cli(argv + CLI_ARGS)
  return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def run_2t(checkpoints, run_t, tmp_path_factory):
  del run_t  # run after it, so that the compilation count is meaningful
  out = tmp_path_factory.mktemp("eval_2t")
  argv = ["--optimizer", "random_mlp", "--out", str(out)]
  argv += ["--checkpoints-root", str(checkpoints), "--horizon-multiple", "2"]
  _cli(argv + CLI_ARGS)
  return out, json.loads((out / "report.json").read_text())


ARM_IDS = [report.CANDIDATE] + [a.id for a in evaluate_cli.ARMS]


def _values(data, arm, metric, h=0):
  return [t["arms"][arm]["metrics"][h][metric] for t in data["tasks"]]


def test_cli_writes_report_files(run_t):
  out, data = run_t
  for name in ("report.json", "report.md", "curves.png", "scatter.png"):
    assert (out / name).stat().st_size > 0, name
  for name in ("curves.png", "scatter.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert set(data) >= {"meta", "candidate", "arms", "tasks", "horizons"}
  assert data["meta"]["num_tasks"] == NUM_TASKS
  assert len(data["tasks"]) == NUM_TASKS
  assert {t["family"] for t in data["tasks"]} == {"test_functions"}
  md = (out / "report.md").read_text()
  assert "| Adam tuned |" in md and "### Per family" in md
  # One signature: the 3 tasks share one program that runs the candidate and
  # every baseline grid.
  assert data["meta"]["signatures"] == 1
  assert data["meta"]["compilations"] == 1


def test_cli_curves_have_one_value_per_step(run_t):
  _, data = run_t
  for task in data["tasks"]:
    assert set(task["arms"]) == set(ARM_IDS)
    for arm in ARM_IDS:
      curves = task["arms"][arm]["curves"]
      assert np.shape(curves["train_loss"]) == (SEEDS, STEPS)
      assert np.shape(curves["valid_loss"]) == (SEEDS, STEPS // VALID_EVERY)
      assert np.shape(curves["final_train"]) == (SEEDS, 1)
      # The final valid loss is the last checkpoint's.
      np.testing.assert_allclose(
        np.asarray(curves["final_valid"])[:, 0],
        np.asarray(curves["valid_loss"])[:, -1],
      )
    # The same keys give every optimizer the same initial parameters.
    first = [task["arms"][a]["curves"]["train_loss"][0][0] for a in ARM_IDS]
    np.testing.assert_allclose(first, first[0], rtol=1e-6)


def test_cli_adam_arms_are_rows_of_the_adam_grid(run_t):
  # (Tuned <= default holds by construction; what can go wrong is which
  # row each arm reports.)
  _, data = run_t
  for task in data["tasks"]:
    lrs = task["grids"]["adam"]["values"]
    assert task["arms"]["adam_default"]["hparam"] == 1e-3
    assert len(lrs) >= 7 and min(lrs) == 1e-4 and max(lrs) == 1e-1
    # Tuned = the grid value with the lowest seed-mean final train loss.
    finals = np.asarray(task["grids"]["adam"]["final_train"], float)
    per_lr = report.seed_mean(finals[..., 0])  # [G]
    assert task["arms"]["adam_tuned"]["hparam"] == lrs[np.argmin(per_lr)]
    # Each arm's reported final loss is its own row's (rounded in the JSON).
    for arm in ("adam_default", "adam_tuned"):
      row = lrs.index(task["arms"][arm]["hparam"])
      got = task["arms"][arm]["metrics"][0]["final_train"]
      want = per_lr[row]
      got = np.inf if got is None else got  # JSON: None for inf/NaN
      np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=arm)


def test_cli_win_rates_match_per_task_numbers(run_t):
  _, data = run_t
  overall = data["horizons"][0]["overall"]
  for arm in evaluate_cli.ARMS:
    for metric in report.METRICS:
      cand = _values(data, report.CANDIDATE, metric)
      base = _values(data, arm.id, metric)
      expected = np.mean(
        [1.0 if c < b else 0.5 if c == b else 0.0 for c, b in zip(cand, base)]
      )
      got = overall[arm.id][metric]
      assert 0.0 <= got["win_rate"] <= 1.0
      assert got["win_rate"] == pytest.approx(expected)
      ratios = [c / b for c, b in zip(cand, base)]
      assert got["median_ratio"] == pytest.approx(np.median(ratios), rel=1e-4)
      family = data["horizons"][0]["per_family"]["test_functions"]
      assert family["num_tasks"] == NUM_TASKS
      assert family[arm.id][metric]["win_rate"] == got["win_rate"]


def test_cli_horizon_multiple_reports_both_horizons(run_t, run_2t):
  out, data = run_2t
  _, data_t = run_t
  assert [h["step"] for h in data["horizons"]] == [STEPS, 2 * STEPS]
  # Running on to 2T reused the programs compiled for the run to T.
  assert data["meta"]["compilations"] == 0
  for task, task_t in zip(data["tasks"], data_t["tasks"]):
    assert task["name"] == task_t["name"]
    for arm in ARM_IDS:
      entry = task["arms"][arm]
      assert np.shape(entry["curves"]["train_loss"]) == (SEEDS, 2 * STEPS)
      assert len(entry["metrics"]) == 2
      # The first T steps are the run to T, bit for bit.
      assert entry["metrics"][0] == task_t["arms"][arm]["metrics"][0]
      at_t, at_2t = (m["final_train"] for m in entry["metrics"])
      # (JSON values are rounded to 6 digits: compare with that in mind.)
      assert entry["drift"] == (at_2t > at_t) or at_2t == at_t
  for arm in ARM_IDS:
    drifted = [t["name"] for t in data["tasks"] if t["arms"][arm]["drift"]]
    assert data["drift"][arm]["upward_drift"] == drifted
    over_10pct = data["drift"][arm]["upward_drift_over_10pct"]
    assert set(over_10pct) <= set(drifted)
  md = (out / "report.md").read_text()
  assert f"step {STEPS}" in md and f"step {2 * STEPS}" in md
  assert f"loss({2 * STEPS}) > loss({STEPS})" in md


def test_diverged_runs_are_recorded_and_do_not_leak(checkpoints, run_t):
  _, data = run_t
  name = data["tasks"][0]["name"]
  task = task_suite.get_task(name)
  keys = rollout.seed_keys(evaluate_cli._task_key(0, name), SEEDS)
  candidate = evaluate_cli.resolve_optimizer(str(checkpoints / "random_mlp"))
  lrs = (1e-3, 1e-2, 1e4, 1e8, 1e12, 1e16, 1e20)
  grids = {"adam": evaluate_cli.ADAM_LRS, "momentum": lrs}
  groups = evaluate_cli.make_groups(candidate, grids)
  before = rollout.compilation_count()
  _, adam, sgdm = rollout.run_groups(groups, task, keys, CONFIG)
  assert rollout.compilation_count() == before  # the CLI's program
  sgdm = rollout.RolloutResult(*(np.asarray(x) for x in sgdm))
  finite = np.isfinite(sgdm.final_train[..., 0]).all(axis=-1)  # [G]
  assert finite[0] and not finite[-1]
  # The diverging runs share the program, not the numbers: Adam's runs are
  # those of the CLI's run.
  np.testing.assert_allclose(
    np.asarray(adam.final_train),
    np.asarray(data["tasks"][0]["grids"]["adam"]["final_train"], float),
    rtol=1e-5,
  )
  grid = report.Grid(lrs, sgdm)
  run, lr = report.select(grid_record(grid), report.Arm("t", "t", "sgd"))
  assert np.isfinite(run.final_train).all() and lr in lrs[:2]
  assert report.seed_mean(sgdm.final_train[-1, :, 0]) == np.inf


def grid_record(grid: report.Grid) -> report.TaskRecord:
  candidate = rollout.RolloutResult(*(x[0] for x in grid.result))
  return report.TaskRecord("t", "f", candidate, {"sgd": grid})


@dataclasses.dataclass(frozen=True)
class _StepOnValid:
  """Steps (SGD, lr 0.1) only when given a validation loss."""

  def __call__(self, hparams):
    del hparams

    def update(
      grads, state, params=None, *, value=None, valid_value=None, **extra
    ):
      del params, extra
      assert value is not None
      on = jnp.isfinite(valid_value).astype(jnp.float32)
      return jax.tree.map(lambda g: -0.1 * on * g, grads), state

    return optax.GradientTransformationExtraArgs(
      lambda p: optax.EmptyState(), update
    )


def test_valid_value_is_passed_every_valid_every_steps():
  spec = test_functions.TestFunctionSpec(
    function="booth", x0=3.0, y0=-2.0, noise_std=0.0
  )
  task = task_suite.get_task(spec)
  keys = rollout.seed_keys(jax.random.key(0), 1)
  config = dataclasses.replace(CONFIG, horizon_multiple=2)
  result = rollout.run_seeds(_StepOnValid(), task, None, keys, config)
  losses = np.asarray(result.train_loss[0])
  assert losses.shape == (2 * STEPS,)
  moved = np.flatnonzero(losses[1:] != losses[:-1])
  # Checkpoints after steps 4, 8, ..., 20 feed the steps that follow them.
  np.testing.assert_array_equal(
    moved, np.arange(VALID_EVERY, 2 * STEPS, VALID_EVERY)
  )
  assert result.valid_loss.shape == (1, 2 * STEPS // VALID_EVERY)
  assert result.final_train.shape == (1, 2)


@dataclasses.dataclass(frozen=True)
class _Frozen:
  """Never moves the parameters."""

  def __call__(self, hparams):
    del hparams
    return optax.GradientTransformationExtraArgs(
      lambda p: optax.EmptyState(),
      lambda g, s, p=None, **extra: (jax.tree.map(jnp.zeros_like, g), s),
    )


def test_final_losses_at_t_and_2t_are_on_the_same_batches():
  # A noisy regression whose loss depends on the batch: with parameters
  # that never move, the final train and test losses at T and 2T must be
  # equal (so a rise between them is a drift, not the batches), while the
  # validation loss, on fresh batches at each checkpoint, varies.
  task = task_suite.get_task(
    "regression(input_dim=4,hidden=8,output_dim=2,batch_size=8;"
    "activation=tanh,teacher_seed=1,noise_std=0.5,init_scale=1.0)"
  )
  keys = rollout.seed_keys(jax.random.key(0), 2)
  config = dataclasses.replace(CONFIG, horizon_multiple=2)
  result = rollout.run_seeds(_Frozen(), task, None, keys, config)
  train, test = np.asarray(result.final_train), np.asarray(result.final_test)
  np.testing.assert_array_equal(train[:, 0], train[:, 1])
  np.testing.assert_array_equal(test[:, 0], test[:, 1])
  valid = np.asarray(result.valid_loss)  # [seeds, checkpoints]
  assert len(np.unique(valid[0])) == valid.shape[1]
  # The seeds' fixed batches differ, as their fresh ones do.
  assert train[0, 0] != train[1, 0]


def test_report_treats_divergence_as_a_loss():
  nan, inf = float("nan"), float("inf")
  assert report.seed_mean(np.array([1.0, nan])) == inf
  assert report.seed_mean(np.array([1.0, 3.0])) == 2.0
  assert report._win(1.0, inf) == 1.0
  assert report._win(inf, 1.0) == 0.0
  assert report._win(inf, inf) == 0.5
  assert report._ratio(inf, inf) == 1.0
  assert report._ratio(1.0, inf) == 0.0
  assert report._ratio(inf, 2.0) == inf
  assert report._ratio(1.0, 2.0) == 0.5
  assert report.to_json({"a": np.array([1.0, nan, inf])}) == {
    "a": [1.0, None, None]
  }


def test_huge_finite_losses_average_without_overflow():
  # A diverging float32 run can stay finite near the float32 limit, where
  # a float32 mean overflows (inf, with a numpy warning).
  huge = np.full([2, 8], 3e38, np.float32)
  run = rollout.RolloutResult(
    huge, huge[:, :2], huge[:, :1], huge[:, :1], huge[:, :1]
  )
  with np.errstate(over="raise"):
    metrics = report._metrics(run, 0, 8)
  assert metrics["mean_train"] == pytest.approx(3e38, rel=1e-6)


def test_config_and_cli_errors(capsys):
  with pytest.raises(
    ValueError, match=r"^RolloutConfig\.valid_every must .* divide num_steps"
  ):
    rollout.RolloutConfig(num_steps=10, valid_every=3)
  assert rollout.RolloutConfig(num_steps=1000).chunk == 100
  assert rollout.RolloutConfig(num_steps=7).chunk == 1
  argv = ["--optimizer", "no_such_optimizer", "--out", "/nonexistent"]
  assert evaluate_cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "no_such_optimizer" in err and "adam" in err
  argv = ["--optimizer", "adam", "--out", "/x", "--adam-lrs", "0.01,0.1"]
  assert evaluate_cli.main(argv) == 2
  assert "--adam-lrs must include 0.001" in capsys.readouterr().err


def test_resolve_names_directories_and_baselines(checkpoints, tmp_path):
  # A baseline: its factory ignores hparams and uses the defaults.
  adam = resolve.resolve("adam")
  assert adam.factory == resolve.BaselineFactory("adam", hparam=None)
  assert adam.lopt is None and adam.theta is None
  # A shipped name (under root) and its directory: the manifest's name.
  by_name = resolve.resolve("random_mlp", root=checkpoints)
  by_dir = resolve.resolve(checkpoints / "random_mlp")
  assert by_name.label == by_dir.label == "random_mlp"
  test_utils.assert_trees_equal(by_name.theta, by_dir.theta)
  assert by_name.factory == resolve.LearnedFactory(by_name.lopt)
  # A learned_opt.save directory (e.g. a run's WORKDIR/theta): its name.
  learned_opt.save(tmp_path / "theta", by_name.lopt, by_name.theta)
  saved = resolve.resolve(tmp_path / "theta")
  assert saved.label == "theta"
  test_utils.assert_trees_equal(saved.theta, by_name.theta)
  # Unknown names list both kinds; a learned optimizer's source refuses
  # baseline names.
  with pytest.raises(FileNotFoundError, match="random_mlp.*baseline.*adam"):
    resolve.resolve("nope", root=checkpoints)
  with pytest.raises(FileNotFoundError) as e:
    resolve.resolve("adam", root=checkpoints, learned_only=True)
  assert "baseline" not in str(e.value)


def test_a_crowded_process_drops_the_compiled_programs(run_t):
  # Last in this module: it drops the programs the tests above share.
  del run_t  # compiled the CLI's program
  held = rollout.compilation_count()
  assert held >= 1
  assert not evaluate_cli.release_if_crowded(lambda: (100, 65_530))
  assert not evaluate_cli.release_if_crowded(lambda: None)  # not Linux
  assert rollout.compilation_count() == held
  before = map_budget.read_maps()
  assert evaluate_cli.release_if_crowded(lambda: (40_000, 65_530))
  assert rollout.compilation_count() == 0
  if before is not None:  # Linux: the programs' kernel maps went with them
    assert map_budget.read_maps()[0] < before[0]
