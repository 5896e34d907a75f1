"""The memory-map budget that stops a run before a compile could abort it."""

import jax
import jax.numpy as jnp
import pytest

from meta_train import map_budget


def test_compiling_takes_maps_that_read_maps_counts():
  counts = map_budget.read_maps()
  if counts is None:
    pytest.skip("no /proc: the kernel's counts are unknown here")
  before, limit = counts
  assert 0 < before < limit
  # A fresh program (its own constant) is compiled, never a cached one.
  fn = jax.jit(lambda x: jnp.tanh(x * 1.2345) @ x.T + jnp.cumsum(x, 0))
  fn(jnp.ones((4, 4))).block_until_ready()
  assert map_budget.read_maps()[0] > before


def test_check_expects_a_kind_to_take_what_it_took_before():
  in_use = [1000]
  budget = map_budget.MapBudget(read=lambda: (in_use[0], 10_000))
  # Unseen kind: up to 15% of the limit (1,500) is expected.
  before = budget.check("outer step", "group 0")
  assert before == 1000
  in_use[0] = 3000  # the compile took 2,000
  budget.measured("outer step", before)
  assert budget.largest == {"outer step": 2000}
  in_use[0] = 7400  # 7,400 + 1.25 x 2,000 fits under 10,000
  assert budget.check("outer step", "group 1") == 7400
  in_use[0] = 7600  # 7,600 + 2,500 does not
  with pytest.raises(map_budget.MapLimitError) as err:
    budget.check("outer step", "group 2")
  message = str(err.value)
  assert "group 2" in message and "7600" in message
  assert "vm.max_map_count=10000" in message and "sysctl" in message
  # Another kind is still expected to take up to 15%: 7,600 + 1,500 fits.
  assert budget.check("evaluation", "the in-run evaluation") == 7600


def test_unknown_counts_never_stop_a_run():
  budget = map_budget.MapBudget(read=lambda: None)
  before = budget.check("outer step", "group 0")
  assert before is None
  budget.measured("outer step", before)
  assert budget.largest == {}
