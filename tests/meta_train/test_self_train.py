"""Tests of meta_train/self_train*.py: the self-training task and the CLI.

Everything runs on the ``smoke`` config of ``configs/self_train.py``. The
one-step test builds its outer optimizers exactly as the CLI does (same
grids, seeds and learned-optimizer architecture), so the CLI test reuses
its compilations. XLA's optimizations are switched off for this module:
compilation, not compute, is what these tests spend their time on.
"""

import importlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import self_train as self_train_config
from learned_opt import checkpoint, mlp_lopt
from meta_train import components
from meta_train import config as meta_config
from meta_train.cli import self_train as self_train_cli
from meta_train.self_training import report as self_train_report
from meta_train.self_training import self_train as st
from meta_train.self_training import task as stt
import task_suite
from task_suite import base as task_base

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "self_train.py")
CFG = st.from_config_dict(self_train_config.get_config("smoke"))
# The learned outer optimizer: what the CLI test's checkpoint holds.
OUTER_LOPT = mlp_lopt.MLPLOpt()


# A few dozen steps of tiny models: compilation is all the time spent.
pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def task():
  return stt.FAMILY.task(CFG.spec)


def _finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# ------------------------------------------------------- family and spec


def test_family_samples_seeds_of_one_signature():
  family = stt.SelfTrainFamily([CFG.spec])
  a = family.sample(jax.random.key(0))
  b = family.sample(jax.random.key(1))
  assert a.signature == b.signature == CFG.spec.signature
  assert a.seed != b.seed
  assert family.task(a) is family.task(a)
  # Different seeds: other inner problems, same static signature.
  qa = family.task(a).dynamic["inner"]["seed"]
  qb = family.task(b).dynamic["inner"]["seed"]
  assert qa.shape == (CFG.spec.num_inner_specs,)
  assert not np.array_equal(np.asarray(qa), np.asarray(qb))
  stacked = task_base.stack_tasks([family.task(a), family.task(b)])
  assert stacked.dynamic["seed"].shape == (2,)


@pytest.mark.parametrize("config_name", ["self_train", "self_train_mlp"])
def test_the_configs_tasks_are_held_out_from_meta_training(config_name):
  module = importlib.import_module(f"configs.{config_name}")
  spec = st.from_config_dict(module.get_config()).spec
  # Meta-training samples the family with the configs' statics ...
  assert spec.signature in {p.signature for p in stt.PRESETS}
  drawn = task_suite.sample_suite(
    300, seed=0, split="train", weights={"self_train": 1.0}
  )
  assert {s.signature for s in drawn} == {p.signature for p in stt.PRESETS}
  # ... and never the configs' own tasks: their names are test-split.
  assert task_suite.split_of(spec) == "test"
  assert spec not in drawn
  # The registry serves the family by name (imported on first use).
  assert task_suite.registry.get_family("self_train") is stt.FAMILY
  assert task_suite.parse_name(spec.name) == spec


def test_extra_specs_add_self_training_groups_to_the_mix():
  cfg = meta_config.SuiteConfig(
    families=("quadratic",), num_specs=20, max_groups=1,
    extra_specs=("self_train:6",),
  )  # fmt: skip
  groups = components.sample_train_groups(cfg)
  families = [g[0].family for g in groups]
  assert families[0] == "quadratic" and set(families[1:]) == {"self_train"}
  extra = [s for g in groups[1:] for s in g]
  assert len(extra) == 6 and all(
    task_suite.split_of(s) == "train" for s in extra
  )
  for bad, match in (("self_train", "FAMILY:N"), ("nope:2", "unknown family")):
    with pytest.raises(meta_config.ConfigError, match=match):
      meta_config.SuiteConfig(extra_specs=(bad,))


def test_spec_name_parses_back():
  body = CFG.spec.name[len("self_train(") : -1]
  assert task_base.parse_spec_fields(stt.SelfTrainSpec, body) == CFG.spec


def test_inner_static_is_applied_and_checked():
  spec = stt.SelfTrainSpec(inner_static="dim:2", num_inner_specs=3)
  assert [s.dim for s in stt.inner_specs(spec)] == [2, 2, 2]
  spec = stt.SelfTrainSpec(
    inner_family="regression",
    inner_static="input_dim:4/hidden:16x8/output_dim:1/batch_size:32",
    num_inner_specs=2,
  )
  specs = stt.inner_specs(spec)
  assert {(s.input_dim, s.hidden, s.batch_size) for s in specs} == {
    (4, (16, 8), 32)
  }
  assert specs[0].teacher_seed != specs[1].teacher_seed
  with pytest.raises(ValueError, match="static fields: \\['dim'\\]"):
    stt.SelfTrainSpec(inner_static="width:2")
  with pytest.raises(ValueError, match="bad value 'two' for dim"):
    stt.SelfTrainSpec(inner_static="dim:two")
  with pytest.raises(ValueError, match="num_pairs"):
    stt.SelfTrainSpec(num_pairs=0)


# ------------------------------------------------------------ gradient


def test_gradient_is_finite_es_estimate_with_theta_structure(task):
  theta = task.init(jax.random.key(1))
  batch = jax.jit(task.batch, static_argnums=1)(jax.random.key(2), "train")
  loss, grad = jax.jit(task.value_and_grad)(theta, jax.random.key(3), batch)
  assert jax.tree.structure(grad) == jax.tree.structure(theta)
  for g, t in zip(jax.tree.leaves(grad), jax.tree.leaves(theta)):
    assert g.shape == t.shape and g.dtype == t.dtype
  assert _finite(grad) and np.isfinite(loss)
  # The meta-loss is a mean of normalized inner losses: ~1 for an optimizer
  # that barely moves the parameters, capped at 10.
  assert 0.0 < float(loss) <= 10.0
  assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grad))) > 0
  # The ES meta-loss (mean of the +/- members) is the unperturbed loss of
  # the same truncation (same inner runs and data) up to O(std^2).
  plain = jax.jit(task.loss)(theta, jax.random.key(3), batch)
  np.testing.assert_allclose(float(loss), float(plain), rtol=1e-3)


# -------------------------------------------------------- outer steps


def test_one_outer_step_of_each_outer_optimizer(task):
  outer_theta = OUTER_LOPT.init(jax.random.key(0))
  keys = st.seed_keys(CFG.seed, CFG.num_seeds)
  kinds = []
  for c in st.contenders(CFG, OUTER_LOPT, outer_theta, "random"):
    kinds.append(c.kind)
    hparams, run_keys = st.grid_inputs(c, keys)
    grid = len(c.labels)
    states = st.init_runs(
      task, c.factory, hparams, keys, hp_axis=c.hp_axis, grid=grid
    )
    new, (loss, skipped) = st.advance_runs(
      task,
      c.factory,
      hparams,
      run_keys,
      states,
      hp_axis=c.hp_axis,
      num_steps=CFG.eval_every,
      clip_norm=CFG.clip_norm,
    )
    num_runs = grid * CFG.num_seeds
    assert CFG.eval_every == 1 and loss.shape == (num_runs, 1)
    assert np.all(np.isfinite(loss)) and not np.any(skipped)
    np.testing.assert_array_equal(new.step, np.ones(num_runs))
    assert _finite(new.theta) and _finite(new.opt_state)
    assert jax.tree.structure(new.opt_state) == jax.tree.structure(
      states.opt_state
    )
    for r in range(num_runs):
      change = sum(
        float(jnp.max(jnp.abs(a[r] - b[r])))
        for a, b in zip(
          jax.tree.leaves(new.theta), jax.tree.leaves(states.theta)
        )
      )
      assert change > 0, (c.kind, r)
    # Every grid value starts from the same theta (common random numbers).
    first = jax.tree.leaves(states.theta)[0]
    np.testing.assert_array_equal(first[0], first[-1])
  assert kinds == ["learned", "adam", "sgd"]


# ---------------------------------------------------------------- CLI


def test_cli_writes_curves_plot_and_table(tmp_path, capsys):
  outer = tmp_path / "outer"
  checkpoint.save(outer, OUTER_LOPT, OUTER_LOPT.init(jax.random.key(0)))
  out = tmp_path / "out"
  rc = self_train_cli.main(
    ["--config", f"{CONFIG}:smoke", f"--config.pretrained={outer}"]
    + ["--out", str(out)]
  )
  assert rc == 0, capsys.readouterr().err
  summary = json.loads((out / "self_train.json").read_text())
  for key in (
    "runs",
    "eval_steps",
    "outer_steps",
    "levels",
    "steps_to_level",
    "best",
    "final_eval_meta_loss",
    "config",
    "task",
  ):
    assert key in summary, key
  runs = summary["runs"]
  assert sorted(r["optimizer"] for r in runs.values()) == [
    "adam",
    "adam",
    "learned",
    "sgd",
    "sgd",
  ]
  assert summary["eval_steps"] == [0, 1, 2, 3]
  initial = {r["eval_meta_loss"][0][0] for r in runs.values()}
  assert len(initial) == 1  # the same theta init for every optimizer
  for r in runs.values():
    ev = np.asarray(r["eval_meta_loss"])
    assert ev.shape == (CFG.num_seeds, 4) and np.all(np.isfinite(ev))
    assert np.asarray(r["train_meta_loss"]).shape == (CFG.num_seeds, 3)
  levels = summary["levels"]
  assert len(levels["values"]) == 3
  assert levels["initial"] >= levels["values"][0] >= levels["best_final"]
  assert set(summary["steps_to_level"]) == set(runs)
  table = (out / "self_train.md").read_text()
  assert all(f"| {label}" in table for label in runs)
  assert (out / "self_train.png").read_bytes()[:4] == b"\x89PNG"
  ratio = summary["learned_vs_best_adam"]
  learned_final = np.asarray(runs[ratio["learned"]]["eval_meta_loss"])[:, -1]
  adam_final = np.asarray(runs[ratio["adam"]]["eval_meta_loss"])[:, -1]
  np.testing.assert_allclose(ratio["per_seed"], learned_final / adam_final)
  assert f"**{ratio['ratio']:.2f}**" in table
  # Each contender's product is a checkpoint `lopt evaluate` reads: the
  # first seed's theta, whose evaluation the curves recorded.
  assert set(summary["products"]) == {"learned", "adam", "sgd"}
  task = stt.FAMILY.task(CFG.spec)
  for kind, path in summary["products"].items():
    lopt, theta, meta = checkpoint.load(path)
    label = summary["best"][kind]
    assert meta["outer_optimizer"] == label
    recorded = runs[label]["eval_meta_loss"][0][-1]
    again = st.evaluate_theta(
      task,
      theta,
      jax.random.fold_in(jax.random.key(CFG.seed), st._EVAL_STREAM),
      num_runs=CFG.eval_runs,
      num_steps=CFG.eval_steps,
    )
    np.testing.assert_allclose(float(again), recorded, rtol=1e-5)


def test_the_mlp_config_self_trains_on_image_classifiers(tmp_path, capsys):
  outer = tmp_path / "outer"
  checkpoint.save(outer, OUTER_LOPT, OUTER_LOPT.init(jax.random.key(0)))
  rc = self_train_cli.main(
    ["--config", f"{ROOT / 'configs' / 'self_train_mlp.py'}:smoke"]
    + [f"--config.pretrained={outer}", "--out", str(tmp_path / "out")]
  )
  assert rc == 0, capsys.readouterr().err
  summary = json.loads((tmp_path / "out" / "self_train.json").read_text())
  assert (
    summary["task"].startswith("self_train(")
    and "inner_family=mlp" in (summary["task"])
  )
  for r in summary["runs"].values():
    ev = np.asarray(r["eval_meta_loss"])
    # Normalized inner losses of fresh classifiers: ~1 at the start.
    assert np.all(np.isfinite(ev)) and 0.5 < ev[0, 0] < 2.0


def test_cli_rejects_unknown_field_before_compute(tmp_path, capsys):
  rc = self_train_cli.main(
    ["--config", f"{CONFIG}:smoke", "--config.task.num_pairz=2"]
    + ["--out", str(tmp_path)]
  )
  assert rc == 2
  assert "num_pairz: unknown field" in capsys.readouterr().err
  assert self_train_cli.main(["--config", CONFIG]) == 2
  assert "--out" in capsys.readouterr().err


# ------------------------------------------------------------- report


def test_levels_and_steps_to_reach_them():
  runs = {
    "fast": {"optimizer": "adam", "eval_meta_loss": [[1.0, 0.5, 0.2]]},
    "slow": {"optimizer": "adam", "eval_meta_loss": [[1.0, 0.9, 0.6]]},
    "never": {"optimizer": "sgd", "eval_meta_loss": [[1.0, 1.0, 1.0]]},
  }
  cfg = st.SelfTrainConfig(num_outer_steps=20, eval_every=10)
  s = self_train_report.summarize(runs, cfg)
  assert s["levels"]["initial"] == 1.0 and s["levels"]["best_final"] == 0.2
  np.testing.assert_allclose(s["levels"]["values"], [0.8, 0.6, 0.4])
  assert s["steps_to_level"] == {
    "fast": [10, 10, 20],
    "slow": [20, 20, None],
    "never": [None, None, None],
  }
  assert s["best"] == {"adam": "fast", "sgd": "never"}
  table = self_train_report.markdown(dict(s, task="t"))
  assert "| fast * | 0.2000 | 10 | 10 | 20 |" in table
  assert "| never | 1.0000 | - | - | - |" in table


def test_the_ratios_bootstrap_interval_over_seeds():
  interval = self_train_report.ratio_interval
  # The same ratio on every seed: no spread to resample.
  np.testing.assert_allclose(interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]), 2.0)
  steady = [1.2, 1.3, 1.25, 1.35, 1.3, 1.2, 1.28, 1.32]
  spread = [0.7, 2.6, 1.0, 1.9, 0.8, 1.6, 1.1, 1.54]  # the same mean
  adam = np.ones(8)
  low, high = interval(spread, adam)
  assert low < np.mean(spread) < high  # brackets the ratio of the means
  assert interval(spread, adam) == [low, high]  # reproducible
  steady_low, steady_high = interval(steady, adam)
  assert high - low > 4 * (steady_high - steady_low)
  # Reported beside the ratio in the summary and its table.
  runs = {
    "learned (x)": {
      "optimizer": "learned",
      "eval_meta_loss": [[1.0, s] for s in spread],
    },
    "adam lr=1": {"optimizer": "adam", "eval_meta_loss": [[1.0, 1.0]] * 8},
  }
  cfg = st.SelfTrainConfig(num_outer_steps=10, eval_every=10)
  s = self_train_report.summarize(runs, cfg)
  assert s["learned_vs_best_adam"]["interval_90"] == [low, high]
  table = self_train_report.markdown(dict(s, task="t"))
  assert f"interval over seeds {low:.2f}-{high:.2f}" in table
