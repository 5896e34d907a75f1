"""Warm starts: an MLPLOpt embedded in a HierarchicalLOpt steps identically."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

import learned_opt
from learned_opt import pretrained, warm_start


def _trained_like_mlp_theta(lopt, key):
  """An MLPLOpt theta with a last layer large enough to take real steps."""
  theta = lopt.init(key)
  last = theta["mlp"][-1]
  theta["mlp"][-1] = {"w": last["w"] * 100.0, "b": last["b"] + 0.1}
  return theta


def _run(tx, params, loss_fn, num_steps):
  state, updates_seen = tx.init(params), []
  for _ in range(num_steps):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, value=loss)
    params = optax.apply_updates(params, updates)
    updates_seen.append(updates)
  return params, updates_seen


def test_embedded_mlp_takes_the_same_steps():
  source = learned_opt.MLPLOpt()
  source_theta = _trained_like_mlp_theta(source, jax.random.key(0))
  target = learned_opt.HierarchicalLOpt()
  theta = warm_start.warm_start_theta(
    target, jax.random.key(1), source, source_theta
  )
  # The LSTM is a fresh init and its values reach the MLP only through the
  # zeroed first-layer rows.
  assert jnp.all(theta["mlp"][0]["w"][37:] == 0.0)
  assert jnp.any(theta["lstm"]["wx"] != 0.0)
  params = {
    "w": jax.random.normal(jax.random.key(2), (12, 5)),
    "b": jnp.zeros([5]),
  }
  x = jax.random.normal(jax.random.key(3), (16, 12))
  loss_fn = lambda p: jnp.mean(jnp.tanh(x @ p["w"] + p["b"][None]) ** 2)
  p_src, u_src = _run(source.optimizer(source_theta), params, loss_fn, 4)
  p_tgt, u_tgt = _run(target.optimizer(theta), params, loss_fn, 4)
  assert float(jnp.max(jnp.abs(u_src[-1]["w"]))) > 0.0
  test_utils.assert_trees_all_close(u_src, u_tgt, rtol=1e-5, atol=1e-8)
  test_utils.assert_trees_all_close(p_src, p_tgt, rtol=1e-5, atol=1e-7)


def test_same_architecture_reuses_theta():
  lopt = learned_opt.MLPLOpt()
  theta = _trained_like_mlp_theta(lopt, jax.random.key(0))
  got = warm_start.warm_start_theta(
    learned_opt.MLPLOpt(chunk_size=64), jax.random.key(5), lopt, theta
  )
  test_utils.assert_trees_equal(got, theta)
  # The step adaptation has no meta-parameters: in or out, theta is reused.
  got = warm_start.warm_start_theta(
    learned_opt.MLPLOpt(), jax.random.key(5),
    learned_opt.MLPLOpt(step_adaptation=0.5), theta,
  )  # fmt: skip
  test_utils.assert_trees_equal(got, theta)


@pytest.mark.parametrize(
  "target, source, message",
  [
    (
      learned_opt.HierarchicalLOpt(mlp_hidden_size=16),
      learned_opt.MLPLOpt(),
      r"hidden_size \(target 16, source 32\)",
    ),
    (
      learned_opt.MLPLOpt(hidden_size=16),
      learned_opt.MLPLOpt(),
      "same architecture but different sizes",
    ),
    (
      learned_opt.MLPLOpt(),
      learned_opt.HierarchicalLOpt(),
      "supported are the same architecture, and MLPLOpt into",
    ),
  ],
)
def test_incompatible_source_is_named(target, source, message):
  source_theta = source.init(jax.random.key(0))
  with pytest.raises(warm_start.WarmStartError, match=message):
    warm_start.warm_start_theta(target, jax.random.key(1), source, source_theta)


def test_load_source_reads_shipped_names_and_checkpoints(tmp_path):
  lopt, theta, _ = pretrained.load_any("mlp_small_cpu")
  assert isinstance(lopt, learned_opt.MLPLOpt)
  learned_opt.save(tmp_path / "theta", lopt, theta, {})
  lopt2, theta2, _ = pretrained.load_any(tmp_path / "theta")
  assert lopt2 == lopt
  test_utils.assert_trees_equal(theta2, theta)
  with pytest.raises(FileNotFoundError, match="available: .*mlp_small_cpu"):
    pretrained.load_any("no_such_optimizer")


def test_step_options_warm_start_scales_the_source_steps_by_each_rms():
  # Same networks, scale-aware step and progress features: the new inputs
  # read zero rows and the LSTM's step head starts at zero, so every step is
  # the source's times (tensor RMS) * (step_mult ratio).
  source = learned_opt.HierarchicalLOpt()
  source_theta = _trained_like_mlp_theta(source, jax.random.key(0))
  target = learned_opt.HierarchicalLOpt(
    step_scale="param_rms", progress_features=True, step_mult=1e-2
  )
  theta = warm_start.warm_start_theta(
    target, jax.random.key(1), source, source_theta
  )
  assert jnp.all(theta["mlp"][0]["w"][54:] == 0.0)
  assert jnp.all(theta["lstm"]["wx"][52:] == 0.0)
  test_utils.assert_trees_equal(theta["mlp"][1:], source_theta["mlp"][1:])
  params = {
    "w": jax.random.normal(jax.random.key(2), (12, 5)),
    "v": 0.1 * jax.random.normal(jax.random.key(3), (5, 3)),
  }
  grads = jax.tree.map(lambda p: jnp.sin(3.0 * p), params)
  src_tx = source.optimizer(source_theta)
  tgt_tx = target.optimizer(theta, num_steps=100)
  u_src, _ = src_tx.update(grads, src_tx.init(params), params, value=1.0)
  u_tgt, _ = tgt_tx.update(grads, tgt_tx.init(params), params, value=1.0)
  for k, p in params.items():
    rms = jnp.sqrt(jnp.mean(jnp.square(p)))
    test_utils.assert_trees_all_close(
      u_tgt[k], u_src[k] * rms * 10.0, rtol=1e-4, atol=1e-9
    )


def test_lstm_head_warm_start_keeps_the_steps_until_its_head_moves():
  # The paper's step times exp(per-tensor head): zero head, the source's
  # steps exactly; a head bias b multiplies every tensor's step by e^b.
  source = learned_opt.HierarchicalLOpt()
  source_theta = _trained_like_mlp_theta(source, jax.random.key(0))
  target = learned_opt.HierarchicalLOpt(
    step_scale="lstm_head", step_head_mult=2.0
  )
  theta = warm_start.warm_start_theta(
    target, jax.random.key(1), source, source_theta
  )
  params = {
    "w": jax.random.normal(jax.random.key(2), (12, 5)),
    "v": 0.1 * jax.random.normal(jax.random.key(3), (5, 3)),
  }
  grads = jax.tree.map(lambda p: jnp.sin(3.0 * p), params)

  def first_update(lopt, theta):
    tx = lopt.optimizer(theta)
    return tx.update(grads, tx.init(params), params, value=1.0)[0]

  u_src = first_update(source, source_theta)
  test_utils.assert_trees_all_close(
    first_update(target, theta), u_src, rtol=1e-6, atol=0.0
  )
  theta["lr_head"]["b"] = jnp.asarray([0.75])  # times step_head_mult
  scaled = jax.tree.map(lambda u: u * np.exp(1.5), u_src)
  test_utils.assert_trees_all_close(
    first_update(target, theta), scaled, rtol=1e-5, atol=0.0
  )
