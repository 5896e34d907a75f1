"""Bad inputs fail with one clear line; a workdir has one run at a time.

The ``lopt`` subcommands run in this process where they fail before any
compute (``--config.mesh.cpu_devices=1`` keeps ``lopt meta-train`` from
changing this process's CPU layout); the workdir lock is tested with two
real ``lopt meta-train`` processes.
"""

import dataclasses
import json
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from meta_train import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.py")
_LOPT = "import sys; from meta_train import cli; sys.exit(cli.main())"


def _one_line_error(capsys, prog: str) -> str:
  err = capsys.readouterr().err
  assert "Traceback" not in err, err
  lines = [ln for ln in err.splitlines() if ln.startswith(prog)]
  assert len(lines) == 1, err
  return lines[0]


@pytest.mark.parametrize(
  "argv",
  [
    ["meta-train", "--config", TINY, "--workdir", "WORK"],
    ["evaluate", "--optimizer", "adam", "--out", "WORK"],
    ["self-train", "--config", "configs/self_train.py", "--out", "WORK"],
    ["demo", "--out", "WORK"],
    ["tasks", "list"],
  ],
  ids=lambda a: a[0],
)
def test_unexpected_errors_print_one_line_unless_debugging(
  argv, tmp_path, capsys, monkeypatch
):
  # Any error a subcommand does not expect (a late bad input, or a bug).
  module = sys.modules.get(cli.SUBCOMMANDS[argv[0]]) or __import__(
    cli.SUBCOMMANDS[argv[0]], fromlist=["main"]
  )

  def late_failure(args):
    raise OSError(f"disk on fire\nwhile writing {args[-1]}")

  monkeypatch.setattr(module, "main", late_failure)
  argv = [str(tmp_path) if a == "WORK" else a for a in argv]
  prog = f"lopt {argv[0]}"
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  assert cli.main(argv) == 1
  line = _one_line_error(capsys, prog)
  assert line == (
    f"{prog}: error: disk on fire while writing {argv[-1]} (OSError; set "
    "LOPT_DEBUG=1 for the traceback)"
  )
  monkeypatch.setenv(cli.DEBUG_ENV, "1")
  assert cli.main(argv) == 1
  assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
  "argv",
  [
    ["evaluate", "--optimizer", "adam", "--tasks",
     "quadratic(dim=2;seed=1,cond=2.0,noise_std=0.0,loss_scale=1.0,"
     "init_scale=1.0)", "--out", "OUT"],
    ["self-train", "--config", "configs/self_train.py:smoke", "--out", "OUT"],
    ["demo", "--tasks", "quadratic", "--out", "OUT"],
  ],
  ids=lambda a: a[0],
)  # fmt: skip
def test_an_unwritable_out_is_refused_before_any_training(
  argv, tmp_path, capsys, monkeypatch
):
  # A file where the output folder's parent should be: no folder can be
  # made there (this holds for root too, unlike permission bits).
  (tmp_path / "a_file").write_text("")
  out = tmp_path / "a_file" / "report"
  argv = [str(out) if a == "OUT" else a for a in argv]
  monkeypatch.chdir(ROOT)
  assert cli.main(argv) == 2
  line = _one_line_error(capsys, f"lopt {argv[0]}")
  assert f"--out {out}: cannot create or write this folder" in line
  assert "choose a writable folder" in line
  # Refused before training: nothing was computed or written anywhere.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_meta_train_late_bad_inputs_are_one_line(tmp_path, capsys):
  base = [
    "meta-train",
    "--config",
    f"{TINY}:smoke",
    "--config.mesh.cpu_devices=1",
  ]
  # An unknown family: refused with the valid names, nothing written.
  work = tmp_path / "families"
  argv = [*base, "--workdir", str(work), "--config.suite.families=[nope]"]
  assert cli.main(argv) == 2
  line = _one_line_error(capsys, "lopt meta-train")
  assert line.startswith(
    "lopt meta-train: bad config: config.suite.families: unknown family "
    "'nope'; valid families: mlp, conv,"
  )
  assert not work.exists()
  # A workdir that cannot be made (under a file): found late, one line.
  blocker = tmp_path / "file"
  blocker.write_text("")
  argv = [*base, "--workdir", str(blocker / "run")]
  assert cli.main(argv) == 1
  line = _one_line_error(capsys, "lopt meta-train")
  assert "Not a directory" in line and "LOPT_DEBUG=1" in line


def _wait_for(predicate, proc, timeout=600):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.05)


def test_second_run_on_a_workdir_is_refused_naming_the_holder(
  tmp_path, subprocess_env
):
  workdir = tmp_path / "run"
  cmd = [
    sys.executable, "-c", _LOPT, "meta-train", "--config", f"{TINY}:smoke",
    "--workdir", str(workdir), "--config.outer.num_steps=1000000",
    "--config.mesh.cpu_devices=1", "--config.log.progress=false",
  ]  # fmt: skip
  first = subprocess.Popen(
    cmd, env=subprocess_env(), stderr=subprocess.PIPE, text=True
  )
  try:
    lock = workdir / "lock"
    # Set up and locked (or, without a lock, about to checkpoint).
    _wait_for(
      lambda: (
        (lock.exists() and lock.read_text())
        or (workdir / "checkpoints").exists()
      ),
      first,
    )
    assert json.loads(lock.read_text())["pid"] == first.pid
    second = subprocess.run(
      cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    assert (
      f"is in use by another meta-training run: pid {first.pid} on host "
      f"{socket.gethostname()}" in second.stderr
    )
    assert first.poll() is None  # the holder runs on, undisturbed
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stderr.close()
  # A dead holder's lock is gone with it (the kernel released it).
  from meta_train import workdir as workdir_lib

  with workdir_lib.lock(workdir):
    pass


_CHEAP = {  # one 2-d quadratic signature, a small population and MLP
  "suite.max_params": "2", "suite.max_groups": "1", "suite.num_specs": "8",
  "estimator.num_pairs": "4", "estimator.unroll_length": "5",
  "estimator.min_horizon": "20", "estimator.max_horizon": "60",
  "lopt.kwargs.hidden_size": "4", "outer.num_steps": "3", "eval.every": "0",
  "log.progress": "false", "mesh.cpu_devices": "1",
}  # fmt: skip


@pytest.mark.slow
def test_python_run_and_command_give_the_same_theta(tmp_path, subprocess_env):
  import jax

  import learned_opt
  from meta_train import config as config_lib
  from meta_train import train

  overrides = [f"--config.{k}={v}" for k, v in _CHEAP.items()]
  command = subprocess.run(
    [sys.executable, "-c", _LOPT, "meta-train", "--config", TINY,
     "--workdir", str(tmp_path / "cli"), *overrides],
    env=subprocess_env(), capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  assert command.returncode == 0, command.stderr[-3000:]
  _, cli_theta, _ = learned_opt.load(tmp_path / "cli" / "theta")
  cd = config_lib.load_config_file(TINY)
  for path, text in _CHEAP.items():
    config_lib.apply_override(cd, f"config.{path}", text)
  before = {k: getattr(jax.config, k) for k in train.REQUIRED_JAX_CONFIG}
  result = train.run(cd, tmp_path / "python")
  assert {k: getattr(jax.config, k) for k in before} == before
  assert jax.device_count() == 1
  leaves = jax.tree.leaves
  for a, b in zip(leaves(result.theta), leaves(cli_theta), strict=True):
    assert (a == b).all()


_REGISTERING_CONFIG = """
import jax.numpy as jnp
import task_suite
from configs import tiny

def get_config(arg=None):
  task_suite.register_task(
    "reliability_custom", lambda key: {"w": jnp.zeros(2)},
    lambda params, key, batch: jnp.sum(params["w"] ** 2),
    lambda key, spec=None: {}, replace=True,
  )
  c = tiny.get_config()
  c.suite.families = ("reliability_custom", "quadratic")
  return c
"""


def test_families_registered_by_the_config_file_are_valid(tmp_path):
  from meta_train import components
  from meta_train import config as config_lib
  import task_suite

  path = tmp_path / "custom_config.py"
  path.write_text(_REGISTERING_CONFIG)
  try:
    cfg = config_lib.from_config(config_lib.load_config_file(str(path)))
    # Checked after the file ran: its family counts, a typo does not.
    assert components._weights(cfg.suite) == {
      "reliability_custom": 1.0,
      "quadratic": 1.0,
    }
    typo = dataclasses.replace(cfg.suite, families=("quadratc",))
    with pytest.raises(
      config_lib.ConfigError, match="'quadratc'; valid.*reliability_custom"
    ):
      components._weights(typo)
  finally:
    task_suite.FAMILIES.pop("reliability_custom", None)
