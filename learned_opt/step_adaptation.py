"""Per-tensor online step-size adaptation by normalized hypergradients.

Why it exists: measured on the shipped optimizer (issues 19 and 20), its
update *direction* is good but its *magnitude* is wrong per task. The same
theta times one constant tuned per task beats tuned Adam twice as often on
held-out tasks, and as the outer optimizer of self-training it needs
about 10x larger steps on quadratics and 4x on MLP classifiers (then it is
within 1.13x and 0.93x of the best-learning-rate Adam). A learned rule
could infer that constant, but meta-training one on 2 CPU cores did not
(``campaigns/scale_aware``). This wrapper infers it online, with no meta-
parameters, from the hypergradient of Baydin et al. (2018, "Online
learning rate adaptation with hypergradient descent").

It also pays off inside meta-training. At equal compute from a random
theta (``configs/ablation.py``, ~3,000 outer steps), the hierarchical
optimizer meta-trained with this adaptation in the loop beat per-task
tuned Adam on 15 of 30 held-out tasks, as the shipped default does, where
the paper's absolute step won 4 (``campaigns/ablation/README.md``): the
adaptation makes even an untrained direction useful, so ES spends its
budget on the direction.

The rule, per tensor ``k``: the update applied is ``u_t = s_t * d_t``,
where ``d_t`` is the wrapped optimizer's update and

    log s_t = clip(log s_{t-1} - rate * cos(g_t, u_{t-1}), floor, ceiling).

``g_t . u_{t-1}`` is the derivative of the current loss with respect to
the previous step's log-scale. It is negative while the gradient still
points along the last step (the steps are too small: grow them) and
positive after an overshoot (shrink them). The cosine rather than the raw
product makes the rule independent of the task's gradient and parameter
scales, so one ``rate`` serves every task; per tensor, because a task's
tensors need different scales (the same reason as the LSTM's per-tensor
heads). The clip keeps a long noisy run from drifting to extreme scales.

Why a floor above the ceiling's mirror image: the rule is greedy. It
minimizes the *next* step's loss, and under minibatch noise the next loss
is lowest with smaller steps, even while a longer run needs larger ones
(the short-horizon bias of Wu et al. 2018, "Understanding short-horizon
bias in stochastic meta-optimization"). Traced on a train-split
autoencoder: ``cos(g_t, u_{t-1})`` averages +0.01 to +0.09 once the
gradient noise dominates, so most tensors sit at ``log s = -5`` from step
100 on while the loss is still falling (and tuned Adam ends at half of
it). The shipped default caps the shrinking at ``e^-2``
(``step_adaptation_floor=-2``); on 56 train-split tasks of all 8 families
(500 steps, one seed) that won 27 against per-task tuned Adam where
``-5`` won 24, all three extra wins on regression, with no family worse,
and it changed no self-training result by more than 1%. ``-1`` won 23.

The same bias slows the growth: where steps are too small but the
gradient is noisy (an ES meta-gradient, a small-batch regression), the
cosine is only slightly negative and ``log s`` climbs slowly. So the
shipped default also starts from twice the learned step (its
``step_mult`` is 2e-3, not 1e-3). On those 56 tasks that lowered the
final loss on 35 (geometric-mean ratio 0.86 and 0.96 on the two sets)
although it won 25 rather than 27 against tuned Adam, and as the outer
optimizer of train-split self-training tasks it cut the gap to the best
Adam from 2.07x / 1.59x to 1.54x / 1.34x on quadratics, and from 2.8x
to 1.00x on MLPs. Three times the step won 23 and was worse than 1x on
the second set (geometric mean 1.15); ten times made a self-training
run unstable.

Why the floor falls at the end of a run (``final_floor``): a fixed floor
is a compromise. Early in a run the greedy rule would shrink the steps
too soon, but near its end shrinking is what a schedule would do: under
minibatch noise the loss stalls at a level set by the step size, and the
cosine turns positive exactly there. With the run's length known (as
VeLO needs it), the floor stays at ``floor`` until the fraction
``anneal_start`` of the run and then falls linearly to ``final_floor``
at its end, so each tensor anneals only as far as its own gradients ask.
On the same 56 train-split tasks (500 steps, one seed), a floor falling
from -2 to -5 over the last quarter won 27 against tuned Adam where the
constant floor won 24 (regression 7 -> 9, test functions 2 -> 3, no
family worse), lowered the final loss on 28 tasks and raised it on 17
(geometric-mean ratio 0.75). Starting the fall at half the run or a
quarter also won 27 but with smaller gains (0.80, 0.81: MLP classifiers
lose 3-9% when their steps shrink while they still descend); at 90% it
won 27 (0.78), and falling to -8 instead of -5 changed nothing. A forced
schedule (every step times a factor falling to 0 over the last quarter;
tried on the previous, 1x-step default) won 13 of the first 32 tasks
where no schedule won 14: it also slows the tensors whose gradients
still ask for larger steps. Held out, at T=1000 on 100 test tasks, the
annealed floor did not beat the constant one: 43 wins against tuned
Adam for both, 92 against Adam(1e-3) where the constant floor won 89,
but a lower final loss on only 44 tasks and a higher one on 54 (the 2-d
test functions gained most, the autoencoders lost 10%;
``campaigns/step_adaptation/default_variant.py``). So the previous
default kept a constant floor; with a trace of updates (``memory``,
below) the two together beat it. Without the run's length the floor
stays constant.

Why a deep floor that only consistent overshoot opens
(``deep_floor``): with exact gradients (noise-free quadratics, the 2-d
test functions) the floor is what stops convergence. The learned
direction is normalized, like Adam's, so its steps do not shrink with the
gradient; at the floor the iterates bounce around the minimum at a
distance set by the step. Traced on a train-split 2-d noise-free
quadratic over 1000 steps, the default stalled at a loss of 4e-8 with its
tensor at the floor; with the deep floor below (threshold 0.2) it reached
2e-11 (tuned Adam ends at 1e-12 to 1e-18 on the held-out noise-free
quadratics). The two cases differ in the cosine's mean, not
in its sign: noise gives +0.01 to +0.09, a bounce across the minimum
+0.15 to +0.4. So each tensor keeps an EMA of its cosine (decay
``COSINE_DECAY``, about the last 10 steps), and only while it exceeds
``overshoot`` may ``log s`` fall below the floor, down to ``deep_floor``;
while it does not, ``log s`` cannot fall further but is not pulled back
up either. On the 56 train-split tasks (500 steps, one seed), the default
with ``deep_floor=-15`` won 29 against tuned Adam where it won 24
(regression 7 -> 11, test functions 2 -> 3, no family worse), with a
lower final loss on 26 tasks and a higher one on 11 (geometric-mean ratio
0.89; the worst: +5% on an MLP classifier, +3% on a conv net). A
threshold of 0.2 also won 29 but raised 21 tasks (0.1: 28; 0.4: 26; an
EMA decay of 0.8 or 0.97: 28). Held out (100 test tasks, T=1000, two
draws) it won 44 and 43 against tuned Adam where the default won 43.5 and
41, and converged far closer on the exact problems (2-d test functions:
geometric-mean loss ratio 0.07 and 0.01; quadratics 0.99 and 0.24), but
the autoencoders lost 8%: on their large weight matrices the mean cosine
really is above 0.3 for most steps (they oscillate across a sharp
direction while still descending along the others), and the cosine alone
cannot tell that from a bounce around a minimum. So the default of the
time did not use it (``campaigns/step_adaptation/default_variant.py``).
That was the one-step cosine. Against a trace of updates (``memory``,
next) such an oscillation cancels out, and the autoencoders' traced
cosine stays at +0.03 to +0.2, below the threshold. With the width-8
theta and ``memory=0.95`` (``hierarchical_width8_cpu``), ``deep_floor=-15``
moved the final loss of 22 of 24 train-split regression, autoencoder and
quadratic tasks by less than 1% (T=1000, one seed; the autoencoders by
none), and on 40 train-split 2-d test functions lowered the final loss
of 14, raised that of 9 (Rosenbrock up to 13x, from 7e-6) and left 17
(geometric-mean ratio 0.80 over the 38 with nonzero losses, the same 25
wins against tuned Adam; noise-free Himmelblau minima reached where the
floor had stopped them at 1e-8). Held out (100 test tasks, T=1000,
suite seed 0) the autoencoders, MLPs, conv nets, RNN LMs and VAEs moved
by less than 0.1% (seed 1: one conv net by 11%), regression by at most
8%, and the 2-d test functions fell to a geometric mean of 0.41x (77.5
wins against tuned Adam, as without it); on suite seed 1 the 2-d functions fell to
0.055x and the quadratics to 0.42x (69 wins where it won 67.5, and the
2-d functions 3 of 6 where 1.5). So that default uses it.

Why a trace of past updates (``memory``): the one-step cosine is greedy
in a second way. The cosine against ``v_{t-1} = u_{t-1} + memory * u_{t-2}
+ memory^2 * u_{t-3} + ...`` is, up to its norm, the derivative of the
current loss with respect to a log-scale shared by the last
~``1 / (1 - memory)`` steps. Two things change. Under minibatch noise the
descent in the trace adds up linearly and the noise only in quadrature,
so a consistent descent shows where one step hides it: on a noisy slope
(tests) ``log s`` grows 2.0 in 60 steps with ``memory=0.9`` against 0.2
without. And an oscillation across a sharp direction cancels in the
trace while the descent along the others stays: traced on two train-split
autoencoders (T=1000), the one-step cosine averaged +0.06 to +0.74 on their
weight matrices (always shrink), the traced one +0.03 to +0.2, so their
steps stayed larger for the first few hundred steps. A plain bounce
around a minimum (alternating updates) leaves the trace along the last
update, so it still reads as an overshoot. On the 56 train-split tasks
(T=500) memory 0.9 won 29 against tuned Adam and 0.95 with the annealed
floor 32, where the previous default won 24. Held out (100 test tasks,
T=1000, the two draws of suite seeds 0 and 1, final losses measured as
the expected loss on the noisy quadratics and 2-d test functions), the
latter won 47.5 and 43 where the previous default won 41 and 37, with a
lower final loss on 61 and 63 of the 100 tasks; so it is the shipped
default (``hierarchical_small_cpu_adaptive_memory``;
``campaigns/step_adaptation/expected_loss.md``). As the outer optimizer
of ``configs/self_train.py`` it reaches 1.33x the best Adam's meta-loss
where the previous default reached 1.40x.

Why a smaller rate with the trace (``rate=0.1`` in the shipped default):
the rate 0.5 was chosen for the one-step cosine, which minibatch noise
keeps near +-0.1. The trace's cosine is far larger while the descent is
consistent (near -1 early in a run), so the same rate moves ``log s`` up to
0.5 per step. Traced on a train-split 32x32x8 ReLU autoencoder (init
scale 0.48), the steps of most tensors grew 3-10x within the first 10
steps; on one seed of three the encoder's gradients then vanished for
good (its tensors' scales froze from step 50 on) and the loss stayed at
the mean-image plateau, 0.059 after 1000 steps, where the same theta
without the adaptation reached 0.009 and rate 0.1 reached 0.011. On the
56 train-split tasks (T=500) the rates 0.05, 0.1, 0.2, 0.3 and 0.5 won
39, 42, 34, 35 and 31 against tuned Adam; 0.1 lowered the final loss
of 43 and raised 13 against 0.5 (geometric-mean ratio 0.81: quadratics
0.39, MLPs 0.85, regression 0.85, autoencoders 0.86), and lost only on
the 2-d test functions (3.5x: Rosenbrock's curved valley needs the steps
to grow and shrink fast). Held out (T=1000, suite seeds 0 and 1) it
won 60 and 56 against tuned Adam where 0.5 won 47.5 and 43
(``campaigns/step_adaptation/rate.md``); so the shipped default
(``hierarchical_small_cpu_adaptive_rate0.1``) uses it.

Why a reference RMS (``reference_rms``): the adaptation follows a task's
scale upwards without limit that matters (``ceiling``, e^5) but not
downwards, where the floor stops it. A model whose weights are 100x
smaller than the suite's (the same model trained as ``w = 100 w'``;
``task_suite.augment``) needs steps 100x smaller, and the learned steps
are absolute. Traced on a Fashion-MNIST MLP so reparameterized: the first
step, three times the weights' RMS, threw the loss from 3.3 to 7,000, the
weights grew to 170x their trained size and the ReLU network stayed at
chance, with cosines near 0 (no signal to shrink; a deep floor that opens
on overshoot did not open). So the whole run's steps are multiplied by
``min(1, rms(params_0) / reference_rms)``, with ``rms`` over all of the
model's parameters together at ``init`` (per tensor, zero-initialized
biases would have no scale to read). Above the reference nothing changes;
below it the steps are proportional to the weights' scale, as VeLO's and
Celo's are everywhere. Over 360 of the suite's tasks (at most 11k
parameters, both splits) the initial RMS is 0.03 to 17 (median 0.26-0.30):
the shipped default's reference, 0.1, changes the steps of 65 of them
(MLPs, conv nets, regression) by 0.3-1x, and those of the four models
from outside the suite by at most 1% (``examples/user_models.py``:
0.099-0.33). On that MLP the final
normalized loss at ``s`` = 1e-2 / 1 / 1e2 is 0.262 / 0.205 / 0.284 with it
and 0.262 / 0.205 / 1.006 without; a reference of 0.05 or 0.03 leaves
``s = 1e2`` at 0.81 and 1.0. On the 56 train-split tasks (T=500) it won
44 against tuned Adam where the same optimizer without it won 45 (it
changed the final loss of 8 tasks: one lower, seven up to 18% higher).
Held out (T=1000, suite seeds 0 and 1), with the floor at -1, it won 61.5
and 55 against tuned Adam where the floor -1 alone won 62.5 and 56, and
changed the final loss of 20 and 18 of the 100 tasks (the others are
identical); so that default (``hierarchical_small_cpu_adaptive_ref0.1``)
used it, and the current one keeps it
(``campaigns/step_adaptation/reference_rms.md``).

Why a growth gated by significance (``significance``; off by default,
not yet used by a shipped optimizer): under ES meta-gradients the cosine
is small however much too small the steps are. Traced as the outer
optimizer of a train-split self-training task (a 322-parameter MLPLOpt
meta-trained by ES with 8 antithetic pairs): the big weight matrix's
cosine against the trace averaged -0.02, so at the rate 0.5 its ``log s``
rose by ~1 in 100 outer steps, and the steps' RMS went from 0.008 to 0.03
over the first 40 where the best Adam's (learning rate 0.3) went from 0.3
to 0.05. Its sign is what is consistent: the cosine's EMA ``m`` sits many
standard errors below 0. So where ``m`` is below ``-significance`` of its
standard errors (the EMA's samples counted as independent), ``log s``
grows by at least ``rate * -m / sqrt(q)``, the cosine's mean over its
RMS, instead of ``-rate * cosine``; elsewhere the rule is unchanged.
Measured on the train-split self-training tasks (``configs/
self_train.py`` with task seeds 0-3, 3 runs each; final meta-loss over
the best Adam's), the shipped default's theta at the rate 0.2 reached
2.36 / 2.12 / 1.37 / 1.43x without the gate and 1.12 / 0.93 / 1.73 /
1.00x with ``significance=2`` (seeds 4-6 and 8: 0.83 / 0.91 / 1.14 /
1.09x). At its own rate 0.1 the default reached 3.24 / 3.10 / 2.12 /
1.86x, and 1.31 / 1.52 / 1.61 / 1.08x with the gate (a threshold of 1.5:
1.11 / 1.33 / 1.97 / 1.01x), at a small cost on 56 train-split suite tasks
(T=500, ``campaigns/step_adaptation/rate.md``'s protocol): 45 wins against
tuned Adam where it won 46, final loss lower on 19, higher on 23
(geometric mean 1.04x: regression 0.94, MLPs 0.96, 2-d test functions
1.18, quadratics 1.20), and held out a larger one (100 test tasks,
T=1000, suite seed 0): 71 wins against tuned Adam where the default wins
77.5 (MLPs 25 -> 22, regression 22 -> 19, VAEs 5 -> 3, RNN LMs 5 -> 4,
autoencoders 3 -> 2; conv nets 2 -> 5, 2-d functions 7.5 -> 8; not
traced, but slow minibatch descents presumably open the gate too and get
steps larger than those tasks want). So the default does not use it. The
small theta at the rate 0.5 (``hierarchical_small_cpu_adaptive_memory``:
1.24 / 1.27 / 1.63 / 1.07x) diverged with it (15x and 8x on two tasks):
the gate multiplies a rate that is already fast. On the configs' own
test-split tasks, the default's theta at the rate 0.2 with the gate
reached 1.28x (quadratics) and 0.99x (MLP classifiers), where the
configs' optimizer reaches 1.33x and 0.94x. At 10 runs each (the
configs' count since) that advantage did not hold: 1.16 / 1.63 / 1.79 /
1.06x on the train-split tasks (the small theta at the rate 0.5: 1.20 /
1.26 / 1.42 / 1.24x) and 1.44x against 1.31x on the configs' quadratics,
some runs jumping to 4-6x as at faster rates. The gate opens on noise too,
rarely: on 60 steps of zero-mean gradients the scales drift up by ~0.4
on average (tests).

Why a ceiling option (``ceiling``, default e^5): under ES meta-gradients
the small tensors of a model (biases, an 8x2 output layer) give strong
cosines, so at the rate 1.0 their scales reach e^5 within 20-30 outer
steps and some runs jump to meta-losses 10-70x the best Adam's, while the
big weight matrix stays below e^1.5. Capped at e^3, the small theta at
the rate 1.0 was stable on the train-split self-training tasks (10 runs
each: 1.05 / 1.23 / 1.27 / 0.91x the best Adam, where the rate 0.5 with
e^5 reached 1.20 / 1.26 / 1.42 / 1.24x), but not better on the configs'
own tasks (1.32x and 1.13x against 1.31x and 1.01x), so no shipped
optimizer sets it.

What the learned direction adds: the same rule on Adam(1e-3) instead of
the learned optimizer wins 8 of the first 32 of those train-split tasks
against tuned Adam, where the learned optimizer under it wins 14.

Robustness: non-finite gradient entries count as 0 in the cosine (as the
learned optimizers read them), each vector is divided by its largest
entry before the dot products (no overflow for huge gradients), and an
empty or zero tensor gives a cosine of 0 (its scale stays).

Example:
  >>> lopt = learned_opt.HierarchicalLOpt(step_adaptation=0.5)
  >>> tx = lopt.optimizer(theta)  # wraps its own update with this rule
  >>> lopt = learned_opt.HierarchicalLOpt(
  ...     step_adaptation=0.5, step_adaptation_final_floor=-5.0)
  >>> tx = lopt.optimizer(theta, num_steps=1000)  # anneals over the end
  >>> lopt = learned_opt.HierarchicalLOpt(
  ...     step_adaptation=0.5, step_adaptation_floor=-2.0,
  ...     step_adaptation_deep_floor=-15.0)  # exact gradients converge
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from learned_opt import per_param

DEFAULT_FLOOR = -5.0  # scales within [e^-5, e^5] ~ [0.007, 148]
DEFAULT_CEILING = 5.0
DEFAULT_ANNEAL_START = 0.75  # the annealed floor's fall: the last quarter
DEFAULT_OVERSHOOT = 0.3  # mean cosine that opens the deep floor
# EMA decay of each tensor's cosine (about the last 10 steps): long enough
# that one noisy step does not open the deep floor, short enough to close
# it soon after the overshooting stops.
COSINE_DECAY = 0.9


class AdaptedState(NamedTuple):
  """The wrapped optimizer's state plus the adaptation's.

  Attributes:
    inner: the wrapped optimizer's state.
    log_scale: per-tensor ``log s`` (params' tree, float32 scalars).
    update_trace: the updates applied so far, each older one weighted by
      another factor ``memory`` (params' tree; with ``memory=0``, the
      previous step's update).
    count: updates done so far.
    mean_cosine: per-tensor EMA of ``cos(g_t, v_{t-1})`` (decay
      ``COSINE_DECAY``; params' tree, float32 scalars), for the deep floor
      and ``significance``.
    log_offset: ``log`` of the factor set by the model's initial scale
      (``reference_rms``; float32 scalar, 0 without it). Every update is
      multiplied by ``exp(log_offset)``; the bounds of ``log_scale`` do
      not see it.
  """

  inner: Any
  log_scale: Any
  update_trace: Any
  count: jax.Array  # [] int32, updates done (for the annealed floor)
  mean_cosine: Any
  log_offset: jax.Array  # [] float32
  # EMA of the squared cosine, same decay (params' tree, float32 scalars);
  # None without ``significance``, so older states keep their structure.
  mean_square_cosine: Any = None


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """cos(a, b) in float32; non-finite entries of ``a`` count as 0."""
  a = jnp.asarray(a, jnp.float32).ravel()
  b = jnp.asarray(b, jnp.float32).ravel()
  a = jnp.where(jnp.isfinite(a), a, 0.0)
  if a.size == 0:
    return jnp.zeros([], jnp.float32)
  # Dividing by the largest entry first keeps the squares finite.
  a = a / jnp.maximum(jnp.max(jnp.abs(a)), jnp.finfo(jnp.float32).tiny)
  b = b / jnp.maximum(jnp.max(jnp.abs(b)), jnp.finfo(jnp.float32).tiny)
  norms = jnp.sqrt(jnp.vdot(a, a) * jnp.vdot(b, b))
  return jnp.where(norms > 0, jnp.vdot(a, b) / jnp.maximum(norms, 1e-30), 0.0)


def model_scale_offset(params, reference_rms: float) -> jax.Array:
  """``min(0, log(rms / reference_rms))`` for the RMS of all of ``params``.

  Non-finite entries count as 0, and a model whose parameters are all 0
  (no scale to read) gets 0: its steps are the wrapped optimizer's.
  """
  flat = [
    jnp.where(jnp.isfinite(x), x, 0.0).reshape(-1)
    for x in (jnp.asarray(p, jnp.float32) for p in jax.tree.leaves(params))
    if jnp.size(x) > 0
  ]
  if not flat:
    return jnp.zeros([], jnp.float32)
  _, rms = per_param.tensor_and_overall_rms(flat)
  log_rms = jnp.log(jnp.maximum(rms, jnp.finfo(jnp.float32).tiny))
  offset = jnp.minimum(log_rms - jnp.log(reference_rms), 0.0)
  return jnp.where(rms > 0, offset, 0.0).astype(jnp.float32)


def floor_at(
  count: jax.Array,
  num_steps,
  floor: float,
  final_floor: float | None,
  anneal_start: float,
) -> jax.Array:
  """The floor after ``count`` of ``num_steps`` updates (float32 scalar).

  ``floor`` until the fraction ``anneal_start`` of the run, then linear to
  ``final_floor`` at its end, and ``final_floor`` past it (a run longer
  than announced keeps annealed bounds).
  """
  if final_floor is None:
    return jnp.asarray(floor, jnp.float32)
  frac = jnp.asarray(count, jnp.float32) / jnp.asarray(num_steps, jnp.float32)
  x = jnp.clip((frac - anneal_start) / (1.0 - anneal_start), 0.0, 1.0)
  return jnp.asarray(floor + (final_floor - floor) * x, jnp.float32)


def adapt_steps(
  tx: optax.GradientTransformationExtraArgs,
  rate: float,
  floor: float = DEFAULT_FLOOR,
  ceiling: float = DEFAULT_CEILING,
  *,
  final_floor: float | None = None,
  anneal_start: float = DEFAULT_ANNEAL_START,
  deep_floor: float | None = None,
  overshoot: float = DEFAULT_OVERSHOOT,
  memory: float = 0.0,
  reference_rms: float | None = None,
  significance: float | None = None,
  num_steps: int | None = None,
) -> optax.GradientTransformationExtraArgs:
  """``tx`` with its updates scaled per tensor by the hypergradient rule.

  Args:
    tx: the optimizer whose updates are scaled; ``update``'s extra keyword
      arguments (``value``, ``num_steps``, ...) are passed on to it.
    rate: change of ``log s`` per unit cosine per step (> 0).
    floor: the smallest ``log s`` (<= 0).
    ceiling: the largest ``log s`` (>= 0).
    final_floor: None: the floor is constant. Otherwise, in a run whose
      length is given (here or as ``update(..., num_steps=N)``), the floor
      falls linearly from ``floor`` (at the fraction ``anneal_start`` of
      the run) to ``final_floor`` (at its end); without the length it
      stays at ``floor``, as if ``final_floor`` were None.
    anneal_start: the fraction of the run where the floor starts to fall,
      in [0, 1).
    deep_floor: None: ``log s`` never goes below the floor. Otherwise a
      tensor whose mean cosine (an EMA, ``AdaptedState.mean_cosine``)
      exceeds ``overshoot`` may shrink down to this (<= the floor); while
      it does not, its ``log s`` cannot fall, and it rises as usual.
    overshoot: the mean cosine that opens the deep floor, in (0, 1).
    memory: in [0, 1). The cosine is taken against a trace of the updates
      applied so far, ``v_t = memory * v_{t-1} + u_t``, instead of the
      last update alone (``memory=0``): the hypergradient of a scale
      shared by the last ~``1 / (1 - memory)`` steps.
    reference_rms: None: the adaptation starts from the wrapped
      optimizer's steps. Otherwise, for a model whose parameters' RMS at
      ``init`` (all tensors together) is below this, every update is
      multiplied by that RMS over ``reference_rms`` for the whole run
      (``model_scale_offset``), so a model with weights 100x smaller
      than any this value was set for takes steps 100x smaller.
    significance: None: ``log s`` grows by ``-rate * cosine``. Otherwise
      also by at least ``rate * -m / sqrt(q)`` while ``m``, the cosine's
      EMA (``AdaptedState.mean_cosine``), is below ``-significance`` of
      its standard errors (from ``q``, the EMA of its square,
      ``AdaptedState.mean_square_cosine``).
    num_steps: the run's total number of updates (default of
      ``update``'s ``num_steps``).

  Returns:
    The wrapped transform; its state is an ``AdaptedState``.

  Raises:
    ValueError: for bad bounds.
  """
  if not rate > 0:
    raise ValueError(f"adapt_steps: rate must be > 0, got {rate}")
  if not floor <= 0.0 <= ceiling:
    raise ValueError(
      f"adapt_steps: need floor <= 0 <= ceiling (log s starts at 0), got "
      f"floor={floor}, ceiling={ceiling}"
    )
  if final_floor is not None and not final_floor <= 0.0:
    raise ValueError(
      f"adapt_steps: final_floor must be <= 0 (a log-scale) or None, got "
      f"{final_floor}"
    )
  if not 0.0 <= anneal_start < 1.0:
    raise ValueError(
      f"adapt_steps: anneal_start must be in [0, 1) (a fraction of the "
      f"run), got {anneal_start}"
    )
  if deep_floor is not None and not deep_floor <= floor:
    raise ValueError(
      f"adapt_steps: deep_floor must be None or <= floor (a log-scale), got "
      f"deep_floor={deep_floor}, floor={floor}"
    )
  if not 0.0 < overshoot < 1.0:
    raise ValueError(
      f"adapt_steps: overshoot must be in (0, 1) (a mean cosine), got "
      f"{overshoot}"
    )
  if not 0.0 <= memory < 1.0:
    raise ValueError(
      f"adapt_steps: memory must be in [0, 1) (the decay of the update "
      f"trace), got {memory}"
    )
  if reference_rms is not None and not reference_rms > 0:
    raise ValueError(
      f"adapt_steps: reference_rms must be None or > 0 (a parameter RMS), "
      f"got {reference_rms}"
    )
  if significance is not None and not significance > 0:
    raise ValueError(
      f"adapt_steps: significance must be None or > 0 (a t-statistic "
      f"threshold), got {significance}"
    )
  default_num_steps = num_steps

  def gated_growth(cosine, mean_cosine, mean_square):
    # Where the recent cosines are significantly negative, at least their
    # mean over their RMS (a signal-to-noise ratio); else -cosine.
    var = jnp.maximum(mean_square - mean_cosine**2, 1e-12)
    n_eff = (1.0 + COSINE_DECAY) / (1.0 - COSINE_DECAY)
    t_stat = mean_cosine / jnp.sqrt(var / n_eff)
    snr = -mean_cosine / jnp.sqrt(jnp.maximum(mean_square, 1e-12))
    return jnp.where(t_stat < -significance, jnp.maximum(-cosine, snr), -cosine)

  def new_log_scale(lower, log_scale, growth, mean_cosine):
    if deep_floor is not None:
      # Closed: no fall below the floor, but a tensor already below it
      # keeps its scale (it is not pulled back up to the floor).
      lower = jnp.where(
        mean_cosine > overshoot, deep_floor, jnp.minimum(lower, log_scale)
      )
    return jnp.clip(log_scale + rate * growth, lower, ceiling)

  def init_fn(params):
    return AdaptedState(
      inner=tx.init(params),
      log_scale=jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params),
      update_trace=jax.tree.map(jnp.zeros_like, params),
      count=jnp.zeros([], jnp.int32),
      mean_cosine=jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params),
      log_offset=(
        jnp.zeros([], jnp.float32)
        if reference_rms is None
        else model_scale_offset(params, reference_rms)
      ),
      mean_square_cosine=None
      if significance is None
      else jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params),
    )

  def update_fn(grads, state, params=None, **extra):
    steps = extra.get("num_steps")
    steps = default_num_steps if steps is None else steps
    # Without the run's length there is no end to anneal towards (the
    # shipped default anneals, and optax users may not know their length).
    end_floor = None if steps is None else final_floor
    lower = floor_at(state.count, steps, floor, end_floor, anneal_start)
    cosines = jax.tree.map(_cosine, grads, state.update_trace)
    ema = lambda m, x: COSINE_DECAY * m + (1.0 - COSINE_DECAY) * x
    mean_cosine = jax.tree.map(ema, state.mean_cosine, cosines)
    mean_square = state.mean_square_cosine
    growth = jax.tree.map(jnp.negative, cosines)
    if significance is not None:
      mean_square = jax.tree.map(
        lambda m, c: ema(m, c**2), mean_square, cosines
      )
      growth = jax.tree.map(gated_growth, cosines, mean_cosine, mean_square)
    log_scale = jax.tree.map(
      lambda *args: new_log_scale(lower, *args),
      state.log_scale,
      growth,
      mean_cosine,
    )
    directions, inner = tx.update(grads, state.inner, params, **extra)
    updates = jax.tree.map(
      lambda d, s: (d * jnp.exp(s + state.log_offset)).astype(d.dtype),
      directions,
      log_scale,
    )
    trace = updates
    if memory > 0:  # (0 * an inf in the old trace would make a NaN)
      trace = jax.tree.map(
        lambda t, u: (memory * t + u).astype(t.dtype), state.update_trace, trace
      )
    return updates, AdaptedState(
      inner,
      log_scale,
      trace,
      state.count + 1,
      mean_cosine,
      state.log_offset,
      mean_square,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
