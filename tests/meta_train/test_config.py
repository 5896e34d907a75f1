"""Configs: every shipped config parses; bad fields fail early, named."""

import importlib
import pathlib

import jax
import ml_collections
import pytest

from meta_train import config as config_lib
from meta_train import mesh as mesh_lib
from meta_train.cli import meta_train as main_lib

CONFIG_MODULES = (
  "tiny",
  "small_cpu",
  "gpu",
  "paper",
  "shipped_mlp",
  "shipped_hierarchical",
  "scale_aware",
  "ablation",
  "scale_width8",
  "width8_self_train",
  "small_self_train_head",
)
TINY = str(pathlib.Path(__file__).resolve().parents[2] / "configs" / "tiny.py")


def _cd(**sections) -> dict:
  """The default config as a plain dict, with some fields replaced."""
  d = config_lib.default_config_dict().to_dict()
  for path, value in sections.items():
    section, _, name = path.partition("__")
    if name:
      d[section][name] = value
    else:
      d[section] = value
  return d


@pytest.mark.parametrize("name", CONFIG_MODULES)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_shipped_configs_parse(name, arg):
  module = importlib.import_module(f"configs.{name}")
  cd = module.get_config(arg)
  assert isinstance(cd, ml_collections.ConfigDict)
  cfg = config_lib.from_config(cd)
  assert cfg.outer.num_steps >= 1
  assert "Command" in module.__doc__ and "Expected" in module.__doc__
  if arg == "smoke":
    assert cfg.outer.num_steps <= 10


def test_small_cpu_variants_expose_pes_long_end():
  from configs import small_cpu

  cfg = config_lib.from_config(small_cpu.get_config("pes,long,end,valid"))
  assert cfg.estimator.name == "pes"
  assert cfg.estimator.unroll_length == 50
  assert cfg.estimator.meta_loss_weighting == "end"
  assert cfg.estimator.meta_loss_split == "valid"
  with pytest.raises(ValueError, match="unknown variant.*bogus"):
    small_cpu.get_config("bogus")


def test_the_campaign_configs_use_the_shipped_defaults_step_options():
  from configs import ablation, scale_aware, scale_width8, width8_self_train
  from learned_opt import pretrained

  manifest = pretrained.read_manifest(
    pretrained.resolve(pretrained.DEFAULT_NAME)
  )
  shipped = manifest["architecture"]["kwargs"]
  assert {k: shipped[k] for k in scale_aware.DEFAULT_STEP} == (
    scale_aware.DEFAULT_STEP
  )
  for cd in (
    scale_aware.get_config("default"),
    ablation.get_config("scale"),
    scale_width8.get_config(),
    width8_self_train.get_config(),
  ):
    cfg = config_lib.from_config(cd)
    assert {k: cfg.lopt.kwargs[k] for k in scale_aware.DEFAULT_STEP} == (
      scale_aware.DEFAULT_STEP
    )
  # The campaign that meta-trains the default on goes on with its options.
  cfg = config_lib.from_config(width8_self_train.get_config())
  deep = "step_adaptation_deep_floor"
  assert cfg.lopt.kwargs[deep] == shipped[deep]
  assert cfg.lopt.kwargs["mlp_hidden_size"] == shipped["mlp_hidden_size"]
  assert config_lib.from_config(ablation.get_config()).lopt.kwargs == {}


def test_self_train_configs_optimizer_is_the_head_campaigns_product():
  import dataclasses

  import numpy as np

  from configs import self_train, small_self_train_head
  from learned_opt import pretrained
  from meta_train import components

  cfg = config_lib.from_config(small_self_train_head.get_config())
  start, start_theta, _ = pretrained.load_any(cfg.lopt.init_from)
  shipped, theta, _ = pretrained.load_any(self_train.SELF_TRAIN_PRETRAINED)
  # The campaign's optimizer is its start with the head as the only change,
  # and the configs deploy exactly that optimizer.
  assert components.make_lopt(cfg.lopt) == dataclasses.replace(
    start, step_scale="lstm_head", step_head_mult=10.0
  )
  assert shipped == components.make_lopt(cfg.lopt)
  # Only the head was trained: every other weight is the start's.
  assert set(theta) == set(start_theta) | {"lr_head"}
  for key in start_theta:
    for a, b in zip(
      jax.tree.leaves(theta[key]), jax.tree.leaves(start_theta[key])
    ):
      np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(theta["lr_head"]["b"])).max() > 0


def test_round_trip_and_defaults():
  cfg = config_lib.from_config(config_lib.default_config_dict())
  assert cfg == config_lib.Config()
  assert config_lib.from_config(config_lib.to_config_dict(cfg)) == cfg
  # Missing fields take their defaults; ints are accepted for floats.
  cfg = config_lib.from_config({"outer": {"learning_rate": 1}})
  assert cfg.outer.learning_rate == 1.0
  assert isinstance(cfg.outer.learning_rate, float)
  assert cfg.estimator == config_lib.Config().estimator


@pytest.mark.parametrize(
  "cd, message",
  [
    (
      _cd(estimator__stdd=0.1),
      r"^config\.estimator\.stdd: unknown field; valid: name, num_pairs",
    ),
    ({"outre": {}}, r"^config\.outre: unknown field; valid: seed, lopt"),
    (
      _cd(lopt={"name": "mlp", "kwargs": {"hiden_size": 3}}),
      r"^config\.lopt\.kwargs\.hiden_size: unknown field of MLPLOpt",
    ),
  ],
)
def test_unknown_field_is_named(cd, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.from_config(cd)


@pytest.mark.parametrize(
  "cd, message",
  [
    (
      _cd(outer__num_steps=1.5),
      r"^config\.outer\.num_steps must be of type int, got 1\.5",
    ),
    (_cd(seed="0"), r"^config\.seed must be of type int"),
    (_cd(log__progress=1), r"^config\.log\.progress must be of type bool"),
    (_cd(estimator__std="big"), r"^config\.estimator\.std must be .*float"),
    (
      _cd(suite__families="quadratic"),
      r"^config\.suite\.families must be of type tuple",
    ),
    (_cd(suite__families=("mlp", 3)), r"^config\.suite\.families\[1\]"),
    (_cd(outer=3), r"^config\.outer must be a ConfigDict or mapping"),
  ],
)
def test_wrong_type_is_named(cd, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.from_config(cd)


@pytest.mark.parametrize(
  "cd, message",
  [
    (
      _cd(outer__learning_rate=-1),
      r"^config\.outer\.learning_rate must be > 0, got -1",
    ),
    (_cd(outer__schedule="linear"), r"^config\.outer\.schedule must be one"),
    (_cd(estimator__std=-0.1), r"^config\.estimator\.std must be"),
    (_cd(estimator__name="sgd"), r"^config\.estimator\.name must be one"),
    (
      _cd(estimator__max_horizon=10, estimator__min_horizon=20),
      r"^config\.estimator\.max_horizon must be >= min_horizon",
    ),
    (_cd(lopt={"name": "lstm"}), r"^config\.lopt\.name must be one of"),
    (
      _cd(lopt={"name": "mlp", "kwargs": {"decays": (2.0,)}}),
      r"^config\.lopt\.kwargs: .*decays",
    ),
    (_cd(checkpoint__keep=0), r"^config\.checkpoint\.keep must be >= 1"),
    (
      _cd(outer__optimizer="learned"),
      r"^config\.outer\.learned_path must name",
    ),
    (_cd(mesh__cpu_collectives="nccl"), r"^config\.mesh\.cpu_collectives"),
  ],
)
def test_bad_value_is_named(cd, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.from_config(cd)


def test_run_fails_before_any_compute(tmp_path, monkeypatch):
  from meta_train import train

  def no_compute(*args, **kwargs):
    raise AssertionError("compiled something before validating the config")

  monkeypatch.setattr(jax, "jit", no_compute)
  monkeypatch.setattr(jax, "eval_shape", no_compute)
  with pytest.raises(config_lib.ConfigError, match="config.estimator.stdd"):
    train.run(_cd(estimator__stdd=1.0), tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_unknown_init_from_fails_before_any_compute(tmp_path, monkeypatch):
  from meta_train import train

  def no_compute(*args, **kwargs):
    raise AssertionError("compiled something before validating the config")

  monkeypatch.setattr(jax, "jit", no_compute)
  with pytest.raises(
    config_lib.ConfigError,
    match=r"^config\.lopt\.init_from: no pretrained optimizer 'nope'",
  ):
    train.run(_cd(lopt__init_from="nope"), tmp_path / "run")


def test_population_must_fit_the_mesh():
  class FakeMesh:
    size = 8

  with pytest.raises(ValueError, match=r"num_pairs=12 .* multiple .*\(8\)"):
    mesh_lib.check_population(12, FakeMesh())
  mesh_lib.check_population(16, FakeMesh())


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.estimator.stdd=1", "config.estimator.stdd: unknown field"),
    ("--config.estimatr.std=1", "config.estimatr: unknown section"),
    ("--config.estimator.std=abc", "config.estimator.std must be of type"),
    ("--config.log.progress=maybe", "config.log.progress must be of type"),
    ("--config.outer.learning_rate=-1", "config.outer.learning_rate must be"),
    ("--config.outer=1", "config.outer is a section"),
    ("--bogus=1", "unknown option --bogus"),
  ],
)
def test_cli_rejects_bad_overrides(tmp_path, capsys, override, message):
  argv = ["--config", TINY, "--workdir", str(tmp_path), override]
  assert main_lib.main(argv) == 2
  assert message in capsys.readouterr().err
  assert not any(tmp_path.iterdir())  # nothing ran


def test_cli_overrides_parse_typed_values():
  opts = main_lib.parse_args(
    [
      f"--config={TINY}:smoke",
      "--workdir",
      "/tmp/x",
      "--config.suite.families=quadratic,mlp",
      "--config.log.progress=false",
      "--config.outer.learning_rate=3e-3",
      "--config.estimator.num_pairs",
      "4",
      "--config.lopt.kwargs.num_hidden_layers=1",  # new key of a kwargs dict
    ]
  )
  cfg = config_lib.from_config(opts["config"])
  assert cfg.suite.families == ("quadratic", "mlp")
  assert cfg.log.progress is False
  assert cfg.outer.learning_rate == 3e-3
  assert cfg.estimator.num_pairs == 4
  assert cfg.lopt.kwargs == {"hidden_size": 16, "num_hidden_layers": 1}
  assert cfg.outer.num_steps == 4  # the :smoke arg reached get_config


@pytest.mark.parametrize(
  "text, want",
  [
    ("[quadratic]", ("quadratic",)),
    ("quadratic,mlp", ("quadratic", "mlp")),
    ("(quadratic, mlp)", ("quadratic", "mlp")),
    ("['quadratic', 'mlp']", ("quadratic", "mlp")),
    ("quadratic", ("quadratic",)),
    ('"quadratic"', ("quadratic",)),
    ("[]", ()),
  ],
)
def test_tuple_overrides_parse_brackets_and_bare_words(text, want):
  cd = config_lib.default_config_dict()
  config_lib.apply_override(cd, "config.suite.families", text)
  assert config_lib.from_config(cd).suite.families == want


def test_renamed_field_override_names_the_new_field():
  cd = config_lib.default_config_dict()
  with pytest.raises(
    config_lib.UsageError, match=r"renamed config\.suite\.num_specs"
  ):
    config_lib.apply_override(cd, "config.suite.num_tasks", "5")


def test_old_field_names_are_migrated():
  # A config.json written before the renames (see LEGACY_FIELDS).
  old = _cd()
  old["suite"]["num_tasks"] = old["suite"].pop("num_specs") + 1
  old["estimator"]["num_tasks"] = 2
  del old["estimator"]["num_pairs"]
  old["eval"]["num_tasks"] = 3
  del old["eval"]["num_eval_tasks"]
  cfg = config_lib.from_config(old)
  assert cfg.suite.num_specs == config_lib.SuiteConfig().num_specs + 1
  assert cfg.estimator.num_pairs == 2
  assert cfg.eval.num_eval_tasks == 3
  # Old and new name with different values: ambiguous, refused.
  both = _cd()
  both["suite"]["num_tasks"] = 7
  with pytest.raises(config_lib.ConfigError, match="renamed.*num_specs"):
    config_lib.from_config(both)


@pytest.mark.parametrize(
  "name",
  [
    "hierarchical_small_cpu",
    "hierarchical_small_cpu_adaptive",
    "hierarchical_small_cpu_adaptive_floor",
    "hierarchical_small_cpu_adaptive_memory",
    "hierarchical_small_cpu_adaptive_rate0.1",
    "hierarchical_small_cpu_adaptive_ref0.1",
    "hierarchical_small_cpu_adaptive_x2",
    "hierarchical_small_cpu_init_rms_adaptive",
    "mlp_small_cpu",
  ],
)
def test_shipped_manifest_configs_still_parse(name):
  # The manifests record the config of their run with the old field names.
  import json

  root = pathlib.Path(__file__).resolve().parents[2] / "checkpoints"
  manifest = json.loads((root / name / "manifest.json").read_text())
  cfg = config_lib.from_config(manifest["config"])
  assert cfg.estimator.num_pairs == manifest["config"]["estimator"]["num_tasks"]
  assert cfg.suite.num_specs == manifest["config"]["suite"]["num_tasks"]
