"""learned_opt.save / load: round trips, manifest, and every failure mode."""

import dataclasses
import json
import pathlib
import shutil
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

from learned_opt import base, checkpoint, hierarchical, mlp_lopt, registry


@dataclasses.dataclass(frozen=True)
class _TinyLOpt(base.LearnedOptimizer):
  """A learned optimizer that is not registered (tests only)."""

  architecture: ClassVar[str] = "tiny_test"
  size: int = 3
  decays: tuple[float, ...] = (0.5, 0.9)

  def init(self, key):
    return {
      "w": jax.random.normal(key, (self.size, 2)),
      "log_lr": jnp.zeros([], jnp.float32),
    }

  def optimizer(self, theta):
    return optax.with_extra_args_support(optax.scale(-jnp.exp(theta["log_lr"])))


@dataclasses.dataclass(frozen=True)
class _TinyLOptV2(_TinyLOpt):
  """Same name and settings as _TinyLOpt, other shapes (a code change)."""

  def init(self, key):
    return {"w": jax.random.normal(key, (self.size, 5))}


SMALL_MLP = mlp_lopt.MLPLOpt(hidden_size=4, num_hidden_layers=1)


def _random_theta(lopt, seed):
  """Random weights of lopt's shapes, without running its (eager) init."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(s.dtype)),
    jax.eval_shape(lopt.init, jax.random.key(0)),
  )


def _weight_files(path):
  return sorted(
    f for f in (path / checkpoint.WEIGHTS_DIR).rglob("*") if f.is_file()
  )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """One saved small MLPLOpt checkpoint, shared (read-only) by tests."""
  path = tmp_path_factory.mktemp("saved") / "mlp"
  theta = _random_theta(SMALL_MLP, 1)
  checkpoint.save(path, SMALL_MLP, theta, {"step": 7, "loss": [0.5, 0.25]})
  return path, theta


@pytest.fixture
def fresh(tmp_path, saved):
  """A private copy of the saved checkpoint that a test may damage."""
  path = tmp_path / "copy"
  shutil.copytree(saved[0], path)
  return path, saved[1]


@pytest.mark.parametrize(
  "lopt",
  [
    SMALL_MLP,
    mlp_lopt.MLPLOpt(),
    hierarchical.HierarchicalLOpt(
      decays=(0.9, 0.99), mlp_hidden_size=4, lstm_hidden_size=5
    ),
    hierarchical.HierarchicalLOpt(),
  ],
  ids=["mlp_small", "mlp_default", "hierarchical_small", "hierarchical"],
)
def test_round_trip_is_bit_exact(tmp_path, lopt):
  theta = _random_theta(lopt, 2)
  metadata = {"outer_step": 1000, "name": "x", "nested": {"a": [1, 2.5]}}
  with jax.transfer_guard("disallow"):  # as in meta-training
    returned = checkpoint.save(tmp_path / "a" / "b", lopt, theta, metadata)
    loaded, theta2, metadata2 = checkpoint.load(tmp_path / "a" / "b")
  assert returned == (tmp_path / "a" / "b").absolute()
  assert loaded == lopt and type(loaded) is type(lopt)
  assert hash(loaded) == hash(lopt)  # usable as a jit closure/static arg
  test_utils.assert_tree_shapes_dtypes_equal(theta2, theta)
  test_utils.assert_trees_equal(theta2, theta)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(theta2))
  assert metadata2 == metadata


def test_manifest_describes_the_weights(saved):
  path, theta = saved
  manifest = json.loads((path / checkpoint.MANIFEST_NAME).read_text())
  assert manifest["format_version"] == checkpoint.FORMAT_VERSION
  assert manifest["config"] == json.loads(json.dumps(SMALL_MLP.config()))
  assert manifest["metadata"] == {"step": 7, "loss": [0.5, 0.25]}
  leaves = jax.tree_util.tree_leaves_with_path(theta)
  assert [x["path"] for x in manifest["theta"]] == [
    jax.tree_util.keystr(p) for p, _ in leaves
  ]
  assert [x["shape"] for x in manifest["theta"]] == [
    list(x.shape) for _, x in leaves
  ]
  assert {x["dtype"] for x in manifest["theta"]} == {"float32"}
  files = {
    f.relative_to(path / checkpoint.WEIGHTS_DIR).as_posix()
    for f in _weight_files(path)
  }
  assert set(manifest["files"]) == files
  assert all(len(h) == 64 for h in manifest["files"].values())
  assert checkpoint.read_manifest(path) == manifest


def test_load_into_given_lopt_and_load_theta(saved):
  path, theta = saved
  lopt, theta2, _ = checkpoint.load(path, lopt=SMALL_MLP)
  assert lopt is SMALL_MLP
  test_utils.assert_trees_equal(theta2, theta)
  test_utils.assert_trees_equal(checkpoint.load_theta(path, SMALL_MLP), theta)


def test_missing_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint at .*nowhere"):
    checkpoint.load(tmp_path / "nowhere")


def test_directory_without_manifest(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match="no manifest.json"):
    checkpoint.load(tmp_path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("which", [0, -1])
def test_damaged_weights_are_detected(fresh, damage, which):
  path, _ = fresh
  victim = _weight_files(path)[which]
  data = bytearray(victim.read_bytes())
  if damage == "flip":
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
  elif damage == "truncate":
    victim.write_bytes(bytes(data[: len(data) // 2]))
  else:
    victim.unlink()
  name = victim.relative_to(path / checkpoint.WEIGHTS_DIR).as_posix()
  with pytest.raises(
    checkpoint.CheckpointError, match="corrupted or truncated"
  ) as e:
    checkpoint.load(path)
  assert name in str(e.value)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_orbax_errors_are_reported_when_hashes_match(fresh, monkeypatch):
  # Damage that passes the sha256 check (here: the check is bypassed) must
  # still surface as a CheckpointError, never as garbage weights.
  path, _ = fresh
  monkeypatch.setattr(checkpoint, "_verify_files", lambda *args: None)
  (victim,) = (path / checkpoint.WEIGHTS_DIR / "d").iterdir()
  victim.write_bytes(victim.read_bytes()[:40])
  with pytest.raises(checkpoint.CheckpointError, match="orbax could not read"):
    checkpoint.load(path)


def _newer_format(text: str) -> str:
  manifest = json.loads(text)
  manifest["format_version"] = checkpoint.FORMAT_VERSION + 1
  return json.dumps(manifest)


@pytest.mark.parametrize(
  "damage, message",
  [
    (lambda text: text[:50], "manifest .* corrupted"),
    (_newer_format, "newer than this code"),
  ],
  ids=["corrupted", "newer_format"],
)
def test_bad_manifest_is_refused(fresh, damage, message):
  path, _ = fresh
  manifest = path / checkpoint.MANIFEST_NAME
  manifest.write_text(damage(manifest.read_text()))
  with pytest.raises(checkpoint.CheckpointError, match=message):
    checkpoint.load(path)


def test_unknown_architecture(tmp_path, monkeypatch):
  lopt = _TinyLOpt(size=4)
  theta = lopt.init(jax.random.key(0))
  checkpoint.save(tmp_path / "tiny", lopt, theta)
  with pytest.raises(
    checkpoint.CheckpointError,
    match="unknown learned-optimizer architecture 'tiny_test'; known: .*mlp",
  ):
    checkpoint.load(tmp_path / "tiny")
  # With the class at hand, or once registered, it loads.
  test_utils.assert_trees_equal(
    checkpoint.load(tmp_path / "tiny", lopt=_TinyLOpt(size=4))[1], theta
  )
  monkeypatch.setitem(registry.ARCHITECTURES, "tiny_test", _TinyLOpt)
  loaded, theta2, _ = checkpoint.load(tmp_path / "tiny")
  assert loaded == lopt and loaded.decays == (0.5, 0.9)
  test_utils.assert_trees_equal(theta2, theta)


def test_lopt_of_another_architecture(saved):
  with pytest.raises(
    checkpoint.CheckpointError,
    match="holds a 'mlp' optimizer but lopt is a 'hierarchical' one.*without",
  ):
    checkpoint.load(saved[0], lopt=hierarchical.HierarchicalLOpt())


def test_lopt_of_other_sizes(saved):
  with pytest.raises(
    checkpoint.CheckpointError,
    match="other 'mlp' settings \\(hidden_size: saved 4, lopt has 8",
  ):
    checkpoint.load(
      saved[0], lopt=mlp_lopt.MLPLOpt(hidden_size=8, num_hidden_layers=1)
    )


def test_shapes_checked_against_the_code(tmp_path):
  # Same name and settings, but the class now makes other shapes.
  checkpoint.save(
    tmp_path / "t", _TinyLOpt(), _TinyLOpt().init(jax.random.key(0))
  )
  with pytest.raises(
    checkpoint.CheckpointError, match=r"does not fit .*\['w'\]"
  ):
    checkpoint.load(tmp_path / "t", lopt=_TinyLOptV2())


def test_save_rejects_bad_input(tmp_path):
  theta = _TinyLOpt().init(jax.random.key(0))
  with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
    checkpoint.save(tmp_path / "a", _TinyLOpt(size=5), theta)
  with pytest.raises(ValueError, match="metadata must be JSON"):
    checkpoint.save(tmp_path / "a", _TinyLOpt(), theta, {"x": np.float32(1)})
  with pytest.raises(TypeError, match="needs a LearnedOptimizer"):
    checkpoint.save(tmp_path / "a", optax.adam(1e-3), theta)
  assert not (tmp_path / "a").exists()
  other = tmp_path / "precious"
  other.mkdir()
  (other / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="not a learned_opt checkpoint"):
    checkpoint.save(other, _TinyLOpt(), theta)
  assert (other / "notes.txt").read_text() == "keep me"


def test_save_refuses_a_non_finite_theta_and_keeps_the_old_one(tmp_path):
  lopt = _TinyLOpt()
  path = tmp_path / "c"
  good = lopt.init(jax.random.key(1))
  checkpoint.save(path, lopt, good, {"v": 1})
  for bad_value in (jnp.nan, jnp.inf):
    bad = dict(good, w=good["w"].at[1, 0].set(bad_value))
    with pytest.raises(checkpoint.CheckpointError, match=r"NaN or inf.*'w'"):
      checkpoint.save(path, lopt, bad, {"v": 2})
  _, theta, metadata = checkpoint.load(path, lopt)
  assert metadata == {"v": 1}
  test_utils.assert_trees_equal(theta, good)
  assert [p.name for p in tmp_path.iterdir()] == ["c"]


def _fail(*args, **kwargs):
  raise RuntimeError("disk full (simulated)")


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
  lopt = _TinyLOpt()
  theta = lopt.init(jax.random.key(0))
  monkeypatch.setattr(checkpoint, "_file_hashes", _fail)  # after orbax wrote
  with pytest.raises(RuntimeError, match="disk full"):
    checkpoint.save(tmp_path / "c", lopt, theta)
  assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_on_success(tmp_path, monkeypatch):
  lopt = _TinyLOpt()
  path = tmp_path / "c"
  theta1 = lopt.init(jax.random.key(1))
  theta2 = lopt.init(jax.random.key(2))
  checkpoint.save(path, lopt, theta1, {"v": 1})

  with monkeypatch.context() as m:
    m.setattr(checkpoint, "_file_hashes", _fail)
    with pytest.raises(RuntimeError):
      checkpoint.save(path, lopt, theta2, {"v": 2})
  _, theta, metadata = checkpoint.load(path, lopt)
  assert metadata == {"v": 1}
  test_utils.assert_trees_equal(theta, theta1)

  # The final rename failing puts the old checkpoint back.
  real_rename = checkpoint.os.rename

  def rename(src, dst):
    if ".tmp-" in pathlib.Path(src).name:
      _fail()
    real_rename(src, dst)

  with monkeypatch.context() as m:
    m.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(RuntimeError):
      checkpoint.save(path, lopt, theta2, {"v": 2})
  assert checkpoint.load(path, lopt)[2] == {"v": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["c"]

  checkpoint.save(path, lopt, theta2, {"v": 2})
  _, theta, metadata = checkpoint.load(path, lopt)
  assert metadata == {"v": 2}
  test_utils.assert_trees_equal(theta, theta2)
  assert [p.name for p in tmp_path.iterdir()] == ["c"]


@pytest.mark.parametrize("name", sorted(registry.ARCHITECTURES))
def test_registry_round_trips_configs(name):
  cls = registry.ARCHITECTURES[name]
  assert cls.architecture == name
  lopt = cls()
  rebuilt = registry.from_config(json.loads(json.dumps(lopt.config())))
  assert rebuilt == lopt and hash(rebuilt) == hash(lopt)


def test_registry_unknown_name():
  with pytest.raises(ValueError, match="unknown .* 'nope'; known: .*mlp"):
    registry.get_architecture("nope")


def test_load_accepts_a_relative_path(tmp_path, monkeypatch):
  # orbax itself refuses relative paths; users type them all the time.
  lopt = mlp_lopt.MLPLOpt(hidden_size=4)
  theta = jax.tree.map(
    lambda s: jnp.full(s.shape, 0.5, s.dtype),
    jax.eval_shape(lopt.init, jax.random.key(0)),
  )
  checkpoint.save(tmp_path / "ckpt", lopt, theta)
  monkeypatch.chdir(tmp_path)
  _, loaded, _ = checkpoint.load("ckpt")
  test_utils.assert_trees_equal(theta, loaded)
