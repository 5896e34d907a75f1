"""Tests of task augmentation (task_suite.augment) and its suite sampling."""

import collections
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_utils

import task_suite
from task_suite import augment, suite

INNER = task_suite.parse_name(
  "regression(input_dim=4,hidden=8,output_dim=2,batch_size=8;"
  "activation=tanh,teacher_seed=1,noise_std=0.0,init_scale=1.0)"
)
TRACES = collections.Counter()


def _spec(kind, loss_scale=True, seed=3, low=1e-3, high=1e3):
  aug = augment.Augmentation(kind, loss_scale, seed, low, high)
  return augment.AugmentedSpec(INNER, aug)


def _outputs(task):
  """Inner and augmented init, loss and gradient at corresponding points."""
  key = jax.random.key(0)
  batch = task.batch(key, "train")
  w = task.inner.init(key)
  w_prime = task.init(key)
  s, c = task.scales(w_prime)
  inner_loss, inner_grads = task.inner.value_and_grad(w, key, batch)
  loss, grads = task.value_and_grad(w_prime, key, batch)
  return {
    "w": w,
    "w_prime": w_prime,
    "s": s,
    "c": c,
    "inner_loss": inner_loss,
    "inner_grads": inner_grads,
    "loss": loss,
    "grads": grads,
    "jax_grads": jax.grad(task.loss)(w_prime, key, batch),
    "normalized": task.normalize(loss),
    "inner_normalized": task.inner.normalize(inner_loss),
  }


@jax.jit
def _probe(task):
  TRACES[task.signature] += 1
  return _outputs(task)


@pytest.mark.parametrize("kind", augment.KINDS)
@pytest.mark.parametrize("loss_scale", [False, True])
def test_augmented_task_is_the_same_function_reparameterized(kind, loss_scale):
  out = _probe(task_suite.get_task(_spec(kind, loss_scale)))
  s, c = out["s"], float(out["c"])
  # init divided by s; the loss at w' = w / s is c times the loss at w.
  test_utils.assert_trees_all_close(
    out["w_prime"], jax.tree.map(lambda w, s: w / s, out["w"], s), rtol=1e-6
  )
  np.testing.assert_allclose(out["loss"], c * out["inner_loss"], rtol=1e-5)
  # Gradients scale by c * s (and agree with jax.grad of the loss).
  expected = jax.tree.map(lambda g, s: c * s * g, out["inner_grads"], s)
  test_utils.assert_trees_all_close(out["grads"], expected, rtol=1e-4)
  test_utils.assert_trees_all_close(
    out["jax_grads"], expected, rtol=1e-4, atol=1e-6
  )
  np.testing.assert_allclose(
    out["normalized"], out["inner_normalized"], rtol=1e-5
  )
  log_s = np.concatenate([np.log(np.ravel(x)) for x in jax.tree.leaves(s)])
  assert c == 1.0 if not loss_scale else 1e-3 <= c <= 1e3 and c != 1.0
  if kind == "none":
    np.testing.assert_array_equal(log_s, 0.0)
  else:
    assert np.all(np.abs(log_s) <= np.log(1e3) + 1e-5)
    # How many distinct scales: one, one per tensor, one per entry.
    num = {"global": 1, "per_tensor": len(jax.tree.leaves(s))}
    assert len(np.unique(log_s)) == num.get(kind, log_s.size)
  # Every kind and loss switch ran under one compilation.
  assert TRACES[task_suite.get_task(_spec(kind)).signature] == 1


def test_specs_differing_in_seed_share_a_signature_and_differ_in_scales():
  specs = [_spec("per_tensor", seed=seed) for seed in (1, 2)]
  groups = task_suite.group_by_signature(specs)
  assert list(groups.values()) == [specs]
  stacked = task_suite.stack_tasks([task_suite.get_task(s) for s in specs])
  probe = jax.jit(jax.vmap(_outputs, in_axes=(task_suite.vmap_axes(stacked),)))
  out = probe(stacked)
  for leaf in jax.tree.leaves(out["s"]):
    assert np.all(leaf[0] != leaf[1])
  assert out["c"][0] != out["c"][1]
  # Same inner task: the inner losses agree, the augmented ones do not.
  assert out["inner_loss"][0] == out["inner_loss"][1]
  assert out["loss"][0] != out["loss"][1]
  # Deterministic: the same spec draws the same scales again.
  again = _probe(task_suite.get_task(specs[1]))
  test_utils.assert_trees_all_close(
    again["s"], jax.tree.map(lambda x: x[1], out["s"]), rtol=1e-6
  )


def test_augmented_names_round_trip_and_keep_the_inner_split():
  spec = _spec("per_param", seed=11, low=0.01, high=100.0)
  assert (
    spec.name == f"{INNER.name}+augment(;kind=per_param,loss_scale=true,"
    "seed=11,low=0.01,high=100.0)"
  )
  assert task_suite.parse_name(spec.name) == spec
  assert spec.family == "regression"
  assert suite.split_of(spec) == suite.split_of(INNER)
  assert spec.signature != INNER.signature
  with pytest.raises(ValueError, match="kind 'big'"):
    augment.Augmentation(kind="big")
  with pytest.raises(ValueError, match="seed"):
    augment.Augmentation(seed=-1)
  with pytest.raises(ValueError, match="low <= high"):
    augment.Augmentation(low=10.0, high=1.0)
  with pytest.raises(TypeError, match="not augmented"):
    augment.AugmentedSpec(spec, augment.IDENTITY)


# The names of sample_suite(50, seed=0) before augmentation existed.
PLAIN_SUITE_SHA256 = (
  "8dd590962289fbfdd40f09258945ce54429d22780d24116b839a5ed44b6c75cc"
)


def test_sample_suite_without_augmentation_is_unchanged():
  specs = task_suite.sample_suite(50, seed=0)
  digest = hashlib.sha256("".join(s.name for s in specs).encode())
  assert digest.hexdigest() == PLAIN_SUITE_SHA256
  assert task_suite.sample_suite(50, seed=0, augment_prob=0.0) == specs


def test_sample_suite_augments_with_the_given_probability():
  plain = task_suite.sample_suite(200, seed=1, split="test")
  augmented = task_suite.sample_suite(
    200, seed=1, split="test", augment_prob=0.5, augment_range=(0.1, 10.0)
  )
  assert augmented == task_suite.sample_suite(
    200, seed=1, split="test", augment_prob=0.5, augment_range=(0.1, 10.0)
  )
  # Exactly the plain suite, each spec wrapped: as many signatures.
  assert [s.task for s in augmented] == plain
  assert len(suite.group_by_signature(augmented)) == len(
    suite.group_by_signature(plain)
  )
  drawn = [s.augmentation for s in augmented if s.augmentation.kind != "none"]
  assert 70 <= len(drawn) <= 130
  assert {a.kind for a in drawn} == {"global", "per_tensor", "per_param"}
  assert {(a.low, a.high) for a in drawn} == {(0.1, 10.0)}
  assert 0.3 < np.mean([a.loss_scale for a in drawn]) < 0.7
  with pytest.raises(ValueError, match="prob"):
    task_suite.sample_suite(5, augment_prob=1.5)
  with pytest.raises(ValueError, match="kinds"):
    task_suite.sample_suite(5, augment_prob=0.5, augment_kinds=("big",))


def test_augmentation_trains_like_the_inner_task_with_sgd_rescaled():
  """SGD on w' with step lr / s^2 (per entry) follows SGD on w exactly."""
  task = task_suite.get_task(_spec("per_param", loss_scale=False, seed=5))

  @jax.jit
  def run(task):
    key = jax.random.key(0)
    batch = task.batch(key, "train")
    w_prime = task.init(key)
    w = task.inner.init(key)
    s, _ = task.scales(w_prime)
    for _ in range(3):
      g_w = jax.grad(task.inner.loss)(w, key, batch)
      g_p = jax.grad(task.loss)(w_prime, key, batch)
      w = jax.tree.map(lambda w, g: w - 0.1 * g, w, g_w)
      w_prime = jax.tree.map(
        lambda p, g, s: p - 0.1 * g / s**2, w_prime, g_p, s
      )
    return w, jax.tree.map(jnp.multiply, s, w_prime)

  w, w_from_prime = run(task)
  test_utils.assert_trees_all_close(w, w_from_prime, rtol=1e-4, atol=1e-6)
