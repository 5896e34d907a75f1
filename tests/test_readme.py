"""Runs the README's "Apply a pretrained optimizer to your own model" example.

The example loads the default shipped optimizer with
``learned_opt.load_pretrained()``. While no shipped checkpoint exists yet,
the test points the loader at a stand-in checkpoint of the same name in a
temporary folder: a per-parameter MLP optimizer whose weights are set by
hand to step along the normalized ``m / sqrt(v)`` feature (an Adam-like
rule), so "the loss went down" is a meaningful assertion either way.
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import pytest

import learned_opt
from learned_opt import features, mlp_lopt, pretrained

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Apply a pretrained optimizer to your own model"


def readme_example() -> str:
  """The python code block of the README section."""
  text = README.read_text()
  assert SECTION in text, f"README.md has no section {SECTION!r}"
  section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  assert len(blocks) == 1, "the section must have exactly one python block"
  return blocks[0]


def adam_like_theta(lopt: mlp_lopt.MLPLOpt) -> dict:
  """Weights with step = step_mult * normalized(m_0.9 / sqrt(v_0.9))."""
  theta = lopt.init(jax.random.key(0))
  theta = jax.tree.map(jnp.zeros_like, theta)
  names = features.per_param_feature_names(lopt.decays)
  col = names.index("m_rsqrt_v_0.9")
  first, last = theta["mlp"][0], theta["mlp"][-1]
  # relu(f) - relu(-f) = f through two hidden units.
  first["w"] = first["w"].at[col, 0].set(1.0).at[col, 1].set(-1.0)
  last["w"] = last["w"].at[0, 0].set(1.0).at[1, 0].set(-1.0)
  return theta


@pytest.fixture
def default_checkpoint(tmp_path, monkeypatch):
  """Makes ``load_pretrained()`` find a default checkpoint."""
  if not hasattr(learned_opt, "load_pretrained"):  # not exported yet
    monkeypatch.setattr(
      learned_opt, "load_pretrained", pretrained.load_pretrained, raising=False
    )
  if pretrained.DEFAULT_NAME in pretrained.available():
    return "shipped"
  lopt = mlp_lopt.MLPLOpt(hidden_size=2, num_hidden_layers=1, step_mult=3e-3)
  pretrained.save_pretrained(
    tmp_path / pretrained.DEFAULT_NAME,
    lopt,
    adam_like_theta(lopt),
    notes="test stand-in for the shipped optimizer",
  )
  monkeypatch.setattr(pretrained, "checkpoints_root", lambda: tmp_path)
  return "stand-in"


def test_readme_example_trains_the_model(default_checkpoint, capsys):
  namespace = {"__name__": "readme_example"}
  exec(compile(readme_example(), str(README), "exec"), namespace)  # noqa: S102
  initial, final = namespace["initial_loss"], namespace["final_loss"]
  assert jnp.isfinite(final), default_checkpoint
  assert final < 0.5 * initial, (default_checkpoint, initial, final)
  assert "full-data loss" in capsys.readouterr().out
