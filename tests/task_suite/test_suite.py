"""The suite: deterministic sampling, disjoint splits, names, registry."""

import collections
import os
import pathlib
import random
import subprocess
import sys

import pytest

from task_suite import base, registry, suite

ALL_FAMILIES = {
  "mlp",
  "conv",
  "rnn_lm",
  "vae",
  "mlp_ae",
  "quadratic",
  "test_functions",
  "regression",
}
# Families that need no dataset, so building their tasks here is cheap.
SYNTHETIC = {"quadratic", "test_functions", "regression"}
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_specs():
  return suite.sample_suite(1000, seed=0, split="train")


@pytest.fixture(scope="module")
def test_specs():
  return suite.sample_suite(200, seed=0, split="test")


def test_all_eight_families_are_registered():
  assert set(registry.FAMILIES) == ALL_FAMILIES
  for name, family in registry.FAMILIES.items():
    assert family.name == name and family.spec_type.family == name


def test_sampling_is_deterministic_across_processes(test_specs):
  code = (
    "from task_suite import suite\n"
    "for s in suite.sample_suite(40, seed=0, split='test'):\n"
    "  print(s.name)\n"
  )
  # Another hash seed: nothing may depend on Python's hash().
  env = dict(os.environ, PYTHONHASHSEED="12345", JAX_PLATFORMS="cpu")
  result = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=True,
  )
  assert result.stdout.splitlines() == [s.name for s in test_specs[:40]]


def test_splits_are_disjoint_and_distinct(train_specs, test_specs):
  train_names = [s.name for s in train_specs]
  test_names = [s.name for s in test_specs]
  assert len(set(train_names)) == len(train_names) == 1000
  assert len(set(test_names)) == len(test_names) == 200
  assert not set(train_names) & set(test_names)
  # By construction: the split is a function of the name alone, so other
  # seeds and sizes cannot overlap either.
  other_seed = suite.sample_suite(100, seed=1, split="test")
  assert not set(train_names) & {s.name for s in other_seed}
  assert all(suite.split_of(s) == "train" for s in train_specs)
  assert all(suite.split_of(s) == "test" for s in test_specs + other_seed)
  # A prefix of a suite is the smaller suite.
  assert suite.sample_suite(50, seed=0, split="test") == test_specs[:50]


def test_suite_is_a_broad_mix(train_specs):
  counts = collections.Counter(s.family for s in train_specs)
  # The default weights cover the built-in families (a user's registered
  # family joins only when named in the weights).
  assert set(counts) == set(registry.BUILT_IN)
  weights = suite.resolve_weights()
  for name, count in counts.items():
    expected = 1000 * weights[name]
    assert abs(count - expected) < 5 * expected**0.5 + 5, (name, count)


def test_1000_tasks_need_at_most_64_signatures(train_specs):
  groups = suite.group_by_signature(train_specs)
  assert len(groups) <= 64
  per_family = collections.Counter(sig[0] for sig in groups)
  assert max(per_family.values()) <= 8, per_family


def test_names_round_trip(train_specs, test_specs):
  for spec in train_specs + test_specs:
    parsed = suite.parse_name(spec.name)
    assert parsed == spec and type(parsed) is type(spec)
    assert parsed.name == spec.name
  synthetic = [s for s in train_specs if s.family in SYNTHETIC][:30]
  for spec in synthetic:
    task = suite.get_task(spec.name)
    assert task is suite.get_task(spec)
    assert task.signature == spec.signature


def test_weights_select_families():
  specs = suite.sample_suite(30, seed=2, weights={"quadratic": 1.0})
  assert {s.family for s in specs} == {"quadratic"}
  mixed = suite.sample_suite(
    200, seed=2, weights={"quadratic": 1.0, "regression": 3.0, "mlp": 0.0}
  )
  counts = collections.Counter(s.family for s in mixed)
  assert set(counts) == {"quadratic", "regression"}
  assert counts["regression"] > 2 * counts["quadratic"]


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"weights": {"nope": 1.0}}, "unknown task family 'nope'.*quadratic"),
    ({"weights": {"mlp": -1.0}}, "must be >= 0"),
    ({"weights": {"mlp": 0.0}}, "must not all be zero"),
    ({"split": "valid"}, "split must be one of"),
  ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    suite.sample_suite(3, **kwargs)


def test_bad_names_raise_clear_errors():
  with pytest.raises(ValueError, match="valid families: mlp, conv"):
    suite.get_task("nope(dim=2;seed=1)")
  with pytest.raises(ValueError, match="malformed task name"):
    suite.parse_name("quadratic dim=2")
  with pytest.raises(ValueError, match="unknown field 'dimm'"):
    suite.parse_name("quadratic(dimm=2;seed=1)")
  with pytest.raises(ValueError, match="lacks fields"):
    suite.parse_name("quadratic(dim=8;seed=1)")
  with pytest.raises(ValueError, match="unknown task family"):
    registry.get_family("mpl")
  with pytest.raises(TypeError, match="TaskSpec or a name"):
    suite.get_task(3)
  assert suite.sample_suite(0) == []


def test_group_by_signature_is_an_ordered_partition(train_specs):
  groups = suite.group_by_signature(train_specs)
  shuffled = list(train_specs)
  random.Random(0).shuffle(shuffled)
  assert list(suite.group_by_signature(shuffled)) == list(groups)
  assert sum(len(g) for g in groups.values()) == len(train_specs)
  for signature, specs in groups.items():
    assert all(s.signature == signature for s in specs)
    # Input order is kept inside a group.
    positions = [train_specs.index(s) for s in specs]
    assert positions == sorted(positions)


def test_synthetic_group_stacks_into_one_task(train_specs):
  groups = suite.group_by_signature(
    s for s in train_specs if s.family == "quadratic"
  )
  specs = max(groups.values(), key=len)
  stacked = base.stack_tasks([suite.get_task(s) for s in specs])
  assert stacked.dynamic["cond"].shape == (len(specs),)
