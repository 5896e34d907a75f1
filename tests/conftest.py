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

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

_SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
if "LOPT_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
  os.environ["LOPT_DATA_DIR"] = str(_SHARED_DATA)


@pytest.fixture
def key():
  return jax.random.key(0)
