"""Scale equivariance of the learned steps on a reparameterized task.

The task's weights are trained as ``w' = w / s`` (``task_suite.augment``):
the same function, gradients times ``s``, the right steps divided by ``s``.
An optimizer whose steps are relative to each tensor's initial RMS follows
that scale; Adam(1e-3) takes the same absolute steps at every ``s``.
Checked on the shipped theta warm-started into ``step_scale="init_rms"``
(no meta-training on augmented tasks yet: the log-scale features still
move it a little, hence the tolerance), and on the default, whose steps
follow the scale through its step adaptation and reference RMS
(``learned_opt.step_adaptation``). The tolerance: the largest of the three
final normalized losses within 1.5x of the smallest for the warm start,
1.6x for the default (below; Adam(1e-3) spreads 5x).
"""

import jax
import jax.numpy as jnp
import optax
import pytest

import learned_opt
from learned_opt import warm_start
import task_suite
from task_suite import augment

TASK = (
  "mlp(hidden=64x64,image_size=8,batch_size=64;activation=relu,"
  "init_scale=2.21,dataset=fashion_mnist,data_seed=6612)"
)
STEPS = 300
SCALES = (1e-2, 1.0, 1e2)


def _final_normalized_loss(tx, task):
  params = task.init(jax.random.key(0))

  def step(carry, i):
    p, s = carry
    k_batch, k_loss = jax.random.split(jax.random.fold_in(jax.random.key(1), i))
    loss, g = task.value_and_grad(p, k_loss, task.batch(k_batch, "train"))
    u, s = tx.update(g, s, p, value=loss, num_steps=STEPS)
    return (optax.apply_updates(p, u), s), loss

  init = (params, tx.init(params))
  _, losses = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(STEPS)))(init)
  return float(task.normalize(jnp.mean(losses[-20:])))


def _losses_over_scales(tx):
  inner = task_suite.parse_name(TASK)
  out = []
  for s in SCALES:
    aug = augment.Augmentation(kind="global", low=s, high=s * (1 + 1e-7))
    task = task_suite.get_task(augment.AugmentedSpec(inner, aug))
    out.append(_final_normalized_loss(tx, task))
  return out


@pytest.mark.slow
def test_init_rms_steps_follow_the_weights_scale_and_adams_do_not():
  source, source_theta, _ = learned_opt.load_pretrained_with_info(
    "hierarchical_small_cpu"
  )
  lopt = learned_opt.HierarchicalLOpt(
    step_scale="init_rms", progress_features=True, step_mult=1e-2
  )
  theta = warm_start.warm_start_theta(
    lopt, jax.random.key(0), source, source_theta
  )
  ours = _losses_over_scales(lopt.optimizer(theta))
  adam = _losses_over_scales(learned_opt.baseline("adam", learning_rate=1e-3))
  # Measured: ours 0.248 / 0.240 / 0.317, Adam 1.35 / 0.266 / 0.323.
  assert max(ours) / min(ours) < 1.5, ours
  assert max(adam) / min(adam) > 3.0, adam


@pytest.mark.slow
def test_the_default_is_scale_equivariant():
  # The paper's absolute step with the online step adaptation, whose
  # cosine is scale-free: it grows steps for s = 1e-2, and its reference
  # RMS (0.1) shrinks them for s = 1e2, where the weights' RMS is 0.003.
  # That RMS asks for steps 100x smaller than at s = 1 and the reference
  # makes them 33x smaller, so s = 1e2 is the worst of the three.
  # Measured: 0.249 / 0.189 / 0.288 (max/min 1.525). The previous default,
  # hierarchical_small_cpu_adaptive_ref0.1 (same rule, width 32, the paper's
  # theta): 0.262 / 0.205 / 0.284 (1.38), worse at s = 1e-2 and 1; without
  # the reference RMS 0.262 / 0.203 / 1.005, stuck at s = 1e2. Hence 1.6,
  # not the 1.5 set for that default: the ratio grew because s = 1 improved.
  # Adam(1e-3), in the test above, differs 5x between its scales.
  ours = _losses_over_scales(learned_opt.load_pretrained())
  assert max(ours) / min(ours) < 1.6, ours
  assert max(ours) < 0.3, ours
