"""PowerSign and AddSign (Bello et al. 2017), as optax transforms.

"Neural Optimizer Search with Reinforcement Learning" (ICML 2017, sec. 5)
found two update rules that scale the gradient up when its sign agrees with
the sign of its running average and down when it does not:

  m_t = beta * m_{t-1} + (1 - beta) * g_t
  PowerSign: d_t = alpha ** (f(t) * sign(g_t) * sign(m_t)) * g_t   (alpha = e)
  AddSign:   d_t = (alpha + f(t) * sign(g_t) * sign(m_t)) * g_t    (alpha = 1)

and the parameter update is ``-learning_rate * d_t``. ``f(t)`` is 1 or one of
the paper's decays over ``T`` steps (``t`` counts from 0):

  linear:  1 - t / T
  cyclic:  0.5 * (1 + cos(2 pi n t / T))
  restart: 0.5 * (1 + cos(pi * ((n t) mod T) / T))

with ``t`` clipped to ``T``.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

SIGN_DECAY_NAMES = ("constant", "linear", "cyclic", "restart")

# The paper's defaults for the number of periods n (cyclic: half a cosine
# period, reaching 0 at T; restart: one restart period).
_DEFAULT_PERIODS = {"cyclic": 0.5, "restart": 1.0}


class SignState(NamedTuple):
  """State of PowerSign and AddSign."""

  count: jax.Array  # int32 [], number of updates so far
  mu: optax.Updates  # running average of the gradients, like params


def make_sign_decay(
  kind: str = "constant",
  decay_steps: int | None = None,
  num_periods: float | None = None,
):
  """The paper's decay ``f(t)`` of the sign term, as a function of ``t``.

  Args:
    kind: one of ``SIGN_DECAY_NAMES``.
    decay_steps: ``T``, required unless ``kind == "constant"``.
    num_periods: ``n`` for the cyclic and restart decays (defaults 0.5 and 1).

  Returns:
    A function of the step count ``t`` (an int array) returning a float32
    scalar.

  Raises:
    ValueError: for an unknown kind or a missing/invalid ``decay_steps``.
  """
  if kind not in SIGN_DECAY_NAMES:
    raise ValueError(
      f"unknown sign_decay {kind!r}; valid: {', '.join(SIGN_DECAY_NAMES)}."
    )
  if kind == "constant":
    if decay_steps is not None or num_periods is not None:
      raise ValueError(
        "sign_decay='constant' takes no sign_decay_steps or "
        "sign_decay_periods; choose 'linear', 'cyclic' or 'restart'."
      )
    return lambda t: jnp.ones([], jnp.float32)
  if (
    isinstance(decay_steps, bool)
    or not isinstance(decay_steps, int)
    or decay_steps < 1
  ):
    raise ValueError(
      f"sign_decay={kind!r} needs sign_decay_steps, the number of steps T "
      f"to decay over, as an integer >= 1 (got {decay_steps!r})."
    )
  if kind == "linear":
    if num_periods is not None:
      raise ValueError("sign_decay='linear' takes no sign_decay_periods.")
  elif num_periods is None:
    num_periods = _DEFAULT_PERIODS[kind]
  total = float(decay_steps)

  def decay_fn(count):
    t = jnp.minimum(count, decay_steps).astype(jnp.float32)
    if kind == "linear":
      return 1.0 - t / total
    if kind == "cyclic":
      return 0.5 * (1.0 + jnp.cos(2.0 * math.pi * num_periods * t / total))
    return 0.5 * (
      1.0 + jnp.cos(math.pi * jnp.mod(num_periods * t, total) / total)
    )

  return decay_fn


def _scale_by_sign_agreement(
  scale_fn, beta: float, decay_fn
) -> optax.GradientTransformation:
  """Shared body: d = scale_fn(f(t) * sign(g) * sign(m)) * g."""

  def init_fn(params):
    return SignState(
      count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params)
    )

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(
      lambda m, g: beta * m + (1.0 - beta) * g, state.mu, updates
    )
    decay = decay_fn(state.count)  # f(t) with t = steps before this one

    def direction(g, m):
      agreement = decay * jnp.sign(g) * jnp.sign(m)  # float32
      return (scale_fn(agreement) * g).astype(g.dtype)

    new_updates = jax.tree.map(direction, updates, mu)
    mu = optax.tree.cast_like(mu, state.mu)  # stable dtypes for scan carries
    count = optax.safe_increment(state.count)
    return new_updates, SignState(count=count, mu=mu)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_powersign(
  alpha: Any = math.e,
  beta: float = 0.9,
  sign_decay_fn=None,
) -> optax.GradientTransformation:
  """Rescales gradients by ``alpha ** (f(t) * sign(g) * sign(m))``.

  Args:
    alpha: the base (> 1 to favour agreeing signs).
    beta: decay of the running average ``m``.
    sign_decay_fn: ``f(t)`` (see ``make_sign_decay``); None means 1.

  Returns:
    An optax transform (without learning rate and sign flip).
  """
  decay_fn = sign_decay_fn or make_sign_decay("constant")
  log_alpha = jnp.log(jnp.asarray(alpha, jnp.float32))
  return _scale_by_sign_agreement(
    lambda a: jnp.exp(log_alpha * a), beta, decay_fn
  )


def scale_by_addsign(
  alpha: Any = 1.0,
  beta: float = 0.9,
  sign_decay_fn=None,
) -> optax.GradientTransformation:
  """Rescales gradients by ``alpha + f(t) * sign(g) * sign(m)``.

  Args:
    alpha: the offset (1 gives factors in [0, 2]).
    beta: decay of the running average ``m``.
    sign_decay_fn: ``f(t)`` (see ``make_sign_decay``); None means 1.

  Returns:
    An optax transform (without learning rate and sign flip).
  """
  decay_fn = sign_decay_fn or make_sign_decay("constant")
  return _scale_by_sign_agreement(lambda a: alpha + a, beta, decay_fn)


def _make(scale_by, learning_rate, alpha, beta, kind, steps, periods):
  return optax.with_extra_args_support(
    optax.chain(
      scale_by(alpha, beta, make_sign_decay(kind, steps, periods)),
      optax.scale_by_learning_rate(learning_rate),
    )
  )


def powersign(
  learning_rate: Any,
  alpha: Any = math.e,
  beta: float = 0.9,
  sign_decay: str = "constant",
  sign_decay_steps: int | None = None,
  sign_decay_periods: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  """PowerSign: ``-learning_rate * alpha**(f(t) sign(g) sign(m)) * g``.

  Args:
    learning_rate: a float, (traced) scalar array or optax schedule.
    alpha: the base, e in the paper.
    beta: decay of the running average of the gradients.
    sign_decay: ``f(t)``: one of ``SIGN_DECAY_NAMES``.
    sign_decay_steps: ``T`` of the decay.
    sign_decay_periods: ``n`` of the cyclic and restart decays.

  Returns:
    An optax transform returning additive updates.
  """
  return _make(
    scale_by_powersign,
    learning_rate,
    alpha,
    beta,
    sign_decay,
    sign_decay_steps,
    sign_decay_periods,
  )


def addsign(
  learning_rate: Any,
  alpha: Any = 1.0,
  beta: float = 0.9,
  sign_decay: str = "constant",
  sign_decay_steps: int | None = None,
  sign_decay_periods: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  """AddSign: ``-learning_rate * (alpha + f(t) sign(g) sign(m)) * g``.

  Args:
    learning_rate: a float, (traced) scalar array or optax schedule.
    alpha: the offset, 1 in the paper.
    beta: decay of the running average of the gradients.
    sign_decay: ``f(t)``: one of ``SIGN_DECAY_NAMES``.
    sign_decay_steps: ``T`` of the decay.
    sign_decay_periods: ``n`` of the cyclic and restart decays.

  Returns:
    An optax transform returning additive updates.
  """
  return _make(
    scale_by_addsign,
    learning_rate,
    alpha,
    beta,
    sign_decay,
    sign_decay_steps,
    sign_decay_periods,
  )
