"""Test configuration shared by every test process (each xdist worker too).

Rank promotion raises, so that implicit broadcasting between per-tensor and
per-parameter features is caught. The process keeps one CPU device: 8 virtual
devices made ordinary single-device compute ~1.5-2x slower here, so the
multi-device tests start their own subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (see
tests/meta_train/test_sharding.py).
"""

import os
import pathlib
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

_SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
if "LOPT_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
  os.environ["LOPT_DATA_DIR"] = str(_SHARED_DATA)


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture(scope="module")
def fast_compiles():
  """``jax_disable_most_optimizations`` for a module of tests.

  For tests of tiny models run for a few steps: compilation is all the time
  they spend. Use it with ``pytestmark = pytest.mark.usefixtures(...)``.
  """
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Compiled programs are reused across the subprocesses of the tests and
# across test sessions (the cache keys include the whole HLO).
_COMPILE_CACHE = pathlib.Path(tempfile.gettempdir()) / "lopt_test_jax_cache"


@pytest.fixture(scope="session")
def subprocess_env():
  """``(**extra) -> env``: the environment of a test's JAX subprocess.

  CPU only, the repository on PYTHONPATH, a persistent compilation cache,
  and ``extra`` on top (e.g. ``XLA_FLAGS``).
  """

  def make(**extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=str(_COMPILE_CACHE),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
      PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
    )
    env.update(extra)
    return env

  return make
