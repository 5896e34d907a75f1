"""Property-based tests of every optimizer: random pytrees, bad values.

Hypothesis draws parameter and gradient trees (nested dicts and lists,
shapes with 0 or 1 entries, float32 and bfloat16, magnitudes from 1e-30 to
1e30, NaN and inf sprinkled in) and checks, for both learned optimizers and
every baseline:

* the updates have the parameters' structure, shapes and dtypes;
* finite gradients give finite updates;
* a NaN loss never makes a learned optimizer's state non-finite;
* the documented behaviour on non-finite gradients: the learned optimizers
  read a NaN or inf entry as 0 (so their state stays finite); the baselines
  are optax's, whose state such an entry reaches, and
  ``optax.apply_if_finite`` skips that step, state untouched.

JAX compiles once per tree structure, shapes and dtypes, so the default
profile draws values for a few fixed trees and few examples; the ``slow``
profile (``test_random_trees_slow``) draws the trees too.
"""

import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import test_utils

import learned_opt

hypothesis.settings.register_profile(
  "lopt_default", max_examples=8, deadline=None, derandomize=True,
  database=None,
)  # fmt: skip
hypothesis.settings.register_profile(
  "slow", max_examples=15, deadline=None, database=None
)
DEFAULT = hypothesis.settings.get_profile("lopt_default")
SLOW = hypothesis.settings.get_profile("slow")

F32, BF16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)
_S = jax.ShapeDtypeStruct
# Few structures, so the default profile compiles little: together they
# cover nesting, size-0 and size-1 tensors, scalars and both dtypes.
TEMPLATES = (
  {"w": _S((2, 3), F32), "b": _S((3,), BF16)},
  {
    "a": [_S((0, 3), F32), _S((1,), BF16)],
    "s": _S((), F32),
    "x": {"y": _S((1, 1), BF16), "z": [_S((5,), F32)]},
  },
)
SHAPES = ((), (0,), (1,), (3,), (1, 1), (0, 3), (2, 3), (2, 1, 2))
EXPONENTS = (-30, -10, -3, 0, 3, 10, 30)
NON_FINITE = (float("nan"), float("inf"), -float("inf"))
LOPTS = {
  "mlp": learned_opt.MLPLOpt(chunk_size=4),
  "hierarchical": learned_opt.HierarchicalLOpt(chunk_size=4),
}
THETAS = {name: lopt.init(jax.random.key(0)) for name, lopt in LOPTS.items()}


def _leaf(draw, spec: jax.ShapeDtypeStruct, non_finite: bool) -> jax.Array:
  """Values of one leaf: a random magnitude, non-finite entries if asked."""
  exponent = draw(st.sampled_from(EXPONENTS))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(spec.shape) * 10.0**exponent
  if non_finite and x.size:
    hit = rng.random(spec.shape) < draw(st.sampled_from((0.1, 0.5, 1.0)))
    x = np.where(hit, rng.choice(NON_FINITE, spec.shape), x)
  return jnp.asarray(x.astype(np.float32), spec.dtype)


@st.composite
def values(draw, template, non_finite: bool = False):
  """A tree of ``template``'s structure with drawn values."""
  return jax.tree.map(lambda s: _leaf(draw, s, non_finite), template)


_spec = st.builds(
  _S, st.sampled_from(SHAPES), st.sampled_from((F32, BF16))
)  # fmt: skip
random_templates = st.recursive(
  _spec,
  lambda children: st.one_of(
    st.lists(children, min_size=1, max_size=3),
    st.dictionaries(st.sampled_from("abcd"), children, min_size=1, max_size=3),
  ),
  max_leaves=5,
).filter(lambda t: any(s.size for s in jax.tree.leaves(t)))


def _zero_non_finite(tree):
  return jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, 0), tree)


def _assert_like(updates, params):
  test_utils.assert_tree_shapes_dtypes_equal(updates, params)


@functools.partial(jax.jit, static_argnums=0)
def _learned_steps(name, params, grads, bad, value):
  """One program per tree (compiling dominates): the steps the checks need.

  From the initial state, as one vmapped update: a finite step, the same
  with a NaN loss, a step with non-finite gradient entries, and the same
  with those entries zeroed.
  """
  tx = LOPTS[name].optimizer(THETAS[name])
  update = lambda g, v: tx.update(
    g, tx.init(params), params, value=v, valid_value=v
  )
  batch = jax.tree.map(
    lambda *x: jnp.stack(x), grads, grads, bad, _zero_non_finite(bad)
  )  # fmt: skip
  value = jnp.float32(value)
  values = jnp.stack([value, jnp.float32(jnp.nan), value, value])
  out = jax.vmap(update)(batch, values)
  return [jax.tree.map(lambda x, i=i: x[i], out) for i in range(4)]


def check_learned(name, draw, template):
  """Every property of one learned optimizer on one drawn example."""
  params = draw(values(template))
  grads = draw(values(template))
  bad = draw(values(template, non_finite=True))
  value = draw(st.floats(-1e30, 1e30, allow_nan=False))
  (updates, state), nan_loss, non_finite, zeroed = _learned_steps(
    name, params, grads, bad, value
  )
  _assert_like(updates, params)
  test_utils.assert_tree_all_finite((updates, state))
  # A NaN loss: updates and state stay finite.
  test_utils.assert_tree_all_finite(nan_loss)
  # Non-finite gradient entries read as 0.
  test_utils.assert_tree_all_finite(non_finite)
  test_utils.assert_trees_equal(non_finite, zeroed)


@functools.cache
def _baseline_steps(name):
  tx = learned_opt.baseline(name)
  guarded = optax.apply_if_finite(tx, max_consecutive_errors=3)

  @jax.jit
  def steps(params, grads, bad):
    """A finite step, then one with non-finite entries, bare and guarded."""
    updates, state = tx.update(grads, tx.init(params), params)
    bad_updates, _ = tx.update(bad, state, params)
    g_state = guarded.init(params)
    guarded_updates, new_g_state = guarded.update(bad, g_state, params)
    return updates, bad_updates, g_state, guarded_updates, new_g_state

  return steps


def check_baseline(name, draw, template):
  """Every property of one baseline on one drawn example."""
  params = draw(values(template))
  grads = draw(values(template))
  bad = draw(values(template, non_finite=True))
  hypothesis.assume(
    any(not bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(bad))
  )
  updates, bad_updates, g_state, guarded_updates, new_g_state = _baseline_steps(
    name
  )(params, grads, bad)
  _assert_like(updates, params)
  test_utils.assert_tree_all_finite(updates)
  # Non-finite gradients reach optax's state; apply_if_finite skips them.
  _assert_like(bad_updates, params)
  _assert_like(guarded_updates, params)
  assert not any(
    np.any(np.asarray(u)) for u in jax.tree.leaves(guarded_updates)
  )
  test_utils.assert_trees_equal(new_g_state.inner_state, g_state.inner_state)
  assert int(new_g_state.notfinite_count) == 1


@pytest.mark.parametrize("name", list(LOPTS))
@DEFAULT
@hypothesis.given(data=st.data(), template=st.sampled_from(TEMPLATES))
def test_learned_optimizer_properties(name, data, template):
  check_learned(name, data.draw, template)


@pytest.mark.parametrize("name", learned_opt.BASELINE_NAMES)
@DEFAULT
@hypothesis.given(data=st.data(), template=st.sampled_from(TEMPLATES))
def test_baseline_properties(name, data, template):
  check_baseline(name, data.draw, template)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*LOPTS, *learned_opt.BASELINE_NAMES])
@SLOW
@hypothesis.given(data=st.data(), template=random_templates)
def test_random_trees_slow(name, data, template):
  check = check_learned if name in LOPTS else check_baseline
  check(name, data.draw, template)
