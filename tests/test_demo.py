"""Tests of ``lopt demo`` (meta_train/cli/demo.py) on a random-init checkpoint."""

import json

import jax
import numpy as np
import pytest

from learned_opt import checkpoint, mlp_lopt
from meta_train.cli import demo

STEPS, SEEDS = 40, 2


# A few dozen steps of tiny models: compilation is all the time spent.
pytestmark = pytest.mark.usefixtures("fast_compiles")


def test_demo_writes_table_and_plot(tmp_path, capsys):
  lopt = mlp_lopt.MLPLOpt(hidden_size=8, num_hidden_layers=1)
  ckpt = tmp_path / "ckpt"
  checkpoint.save(ckpt, lopt, lopt.init(jax.random.key(0)))
  out = tmp_path / "demo"
  rc = demo.main(
    ["--checkpoint", str(ckpt), "--out", str(out), "--steps", str(STEPS)]
    + ["--seeds", str(SEEDS), "--tasks", "quadratic,rosenbrock"]
  )
  assert rc == 0
  stdout = capsys.readouterr().out
  assert str((out / "demo.png").resolve()) in stdout  # tells where it is
  assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
  summary = json.loads((out / "demo.json").read_text())
  assert len(summary["tasks"]) == 2
  for label, r in summary["tasks"].items():
    assert label in stdout and label in (out / "demo.md").read_text()
    opts = list(r["final"])
    assert opts[:2] == ["learned", "adam 1e-3"]
    assert opts[2].startswith("tuned adam")
    for opt in opts:
      curve = np.asarray(r["curves"][opt])
      assert curve.shape == (SEEDS, STEPS) and np.all(np.isfinite(curve))
      assert np.isfinite(r["final"][opt]) and np.isfinite(r["mean"][opt])
      np.testing.assert_allclose(r["mean"][opt], curve.mean(), rtol=1e-6)
      assert f"| {label} | {opt} |" in stdout
    # The tuned grid includes 1e-3, and the best is picked on this number.
    assert r["final"][opts[2]] <= r["final"]["adam 1e-3"]
    assert r["tuned_adam_lr"] in demo.ADAM_GRID


def test_demo_skips_mnist_without_data(tmp_path, monkeypatch):
  monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
  tasks, notes = demo.demo_tasks(["mnist"])
  assert tasks == {}
  assert len(notes) == 1 and "MNIST" in notes[0] and "not found" in notes[0]


def test_demo_reports_bad_arguments(tmp_path, capsys):
  missing = tmp_path / "nope"
  assert demo.main(["--checkpoint", str(missing), "--out", str(tmp_path)]) == 2
  assert "nope" in capsys.readouterr().err
  lopt = mlp_lopt.MLPLOpt(hidden_size=8, num_hidden_layers=1)
  checkpoint.save(tmp_path / "c", lopt, lopt.init(jax.random.key(0)))
  rc = demo.main(["--checkpoint", str(tmp_path / "c"), "--tasks", "cifar"])
  assert rc == 2
  assert "unknown demo task 'cifar'" in capsys.readouterr().err
