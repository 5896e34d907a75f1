"""One JAX device per CPU core for meta-training (mesh.split_host_cpu).

The split must happen before JAX starts its backends, so each case runs in a
fresh subprocess that pins itself to two cores.
"""

import json
import os
import subprocess
import sys

import pytest

from meta_train import config as config_lib
from meta_train import mesh as mesh_lib

_SCRIPT = r"""
import json, os, sys
os.sched_setaffinity(0, [int(c) for c in sys.argv[3].split(",")])
import jax
from meta_train import config as config_lib
from meta_train import mesh as mesh_lib

cpu_devices, num_pairs = int(sys.argv[1]), int(sys.argv[2])
num_devices = int(sys.argv[4])
asked = mesh_lib.split_host_cpu(
  config_lib.MeshConfig(cpu_devices=cpu_devices, num_devices=num_devices),
  num_pairs,
)
print(json.dumps({
  "asked": asked,
  "devices": jax.device_count(),
  "single_threaded": "xla_cpu_multi_thread_eigen=false"
  in os.environ.get("XLA_FLAGS", ""),
}))
"""


def _split(
  make_env, cpu_devices: int, num_pairs: int, num_devices=0, **env
) -> dict:
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    pytest.skip("needs two cores")
  env = make_env(**env)
  proc = subprocess.run(
    [
      sys.executable,
      "-c",
      _SCRIPT,
      str(cpu_devices),
      str(num_pairs),
      ",".join(map(str, cores[:2])),
      str(num_devices),
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_device_count_divides_the_population():
  assert mesh_lib.cpu_device_count(2, 8) == 2
  assert mesh_lib.cpu_device_count(6, 16) == 4
  assert mesh_lib.cpu_device_count(2, 3) == 1
  assert mesh_lib.cpu_device_count(1, 8) == 1


def test_one_single_threaded_device_per_core(subprocess_env):
  out = _split(subprocess_env, 0, 8, XLA_FLAGS="")
  assert out == {"asked": 2, "devices": 2, "single_threaded": True}


def test_population_that_does_not_divide_keeps_one_device(subprocess_env):
  out = _split(subprocess_env, 0, 3, XLA_FLAGS="")
  assert out == {"asked": 1, "devices": 1, "single_threaded": False}


def test_explicit_one_device_turns_it_off(subprocess_env):
  out = _split(subprocess_env, 1, 8, XLA_FLAGS="")
  assert out == {"asked": 1, "devices": 1, "single_threaded": False}


def test_mesh_size_sets_the_device_count(subprocess_env):
  assert (
    _split(subprocess_env, 0, 8, num_devices=1, XLA_FLAGS="")["devices"] == 1
  )
  out = _split(subprocess_env, 0, 8, num_devices=4, XLA_FLAGS="")
  assert out == {"asked": 4, "devices": 4, "single_threaded": True}


def test_device_count_set_in_xla_flags_wins(subprocess_env):
  flags = "--xla_force_host_platform_device_count=3"
  out = _split(subprocess_env, 0, 8, XLA_FLAGS=flags)
  assert out == {"asked": 1, "devices": 3, "single_threaded": False}


def test_multi_process_run_is_not_split(subprocess_env):
  out = _split(
    subprocess_env, 0, 8, XLA_FLAGS="", JAX_COORDINATOR_ADDRESS="localhost:1"
  )
  assert out == {"asked": 1, "devices": 1, "single_threaded": False}


def test_negative_cpu_devices_is_a_config_error():
  with pytest.raises(config_lib.ConfigError, match="cpu_devices"):
    config_lib.MeshConfig(cpu_devices=-1)


def test_usable_cores_follow_the_affinity_mask(subprocess_env):
  # A process pinned to one core (as --num_local_processes pins its
  # workers) sees that core only, whatever os.cpu_count() says.
  core = max(os.sched_getaffinity(0))
  script = (
    f"import os; os.sched_setaffinity(0, {{{core}}}); "
    "from meta_train import mesh; print(mesh.usable_cores())"
  )
  proc = subprocess.run(
    [sys.executable, "-c", script],
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == f"[{core}]"


def test_usable_cores_without_affinity_api(monkeypatch):
  monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS
  assert mesh_lib.usable_cores() == list(range(os.cpu_count()))
