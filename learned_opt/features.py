"""Accumulators and input features of the learned optimizers (DESIGN.md §3).

Everything here is a pure function of one tensor, written so that the
optimizers can compute per-tensor quantities once and never tile them over
the entries of a tensor. The loss statistics are in ``loss_stats``.

Layouts:
  * a parameter tensor ``p`` of shape ``S`` has accumulators ``m`` and ``v`` of
    shape ``(D,) + S`` (``D`` = number of decays), float32: ``2 * D`` floats
    of state per parameter and nothing else per parameter (the optimizers
    store them flattened, ``[D, N]``: ``per_param.init_moments`` says why);
  * per-parameter features are feature-major ``[F, N]`` with ``N = p.size``
    entries and ``F = len(per_param_feature_names(decays))`` rows, *raw* (not
    yet normalized): the normalization of feature ``i`` is the per-tensor
    scale ``normalization_scales(x)[i]``, which the optimizers fold into the
    first layer's weights.

The decay-major / feature-major layouts make every concatenation a copy of
contiguous rows and keep the long entry axis minor for the MLP's matmuls; on
XLA:CPU the entry-major ``[N, 23]`` layout made the optimizer ~2x slower
(minor-axis concatenation of narrow columns vectorizes badly).

Feature widths are computed from the name lists, never typed in.
"""

from collections.abc import Sequence
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from learned_opt import segments

DEFAULT_DECAYS = (0.5, 0.9, 0.99, 0.999, 0.9999)
STEP_TIMESCALES = (1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5)
CLIP_DECAY = 0.99  # EMA decay of the per-tensor mean squared gradient
CLIP_MULTIPLE = 10.0  # gradients are clipped to +-CLIP_MULTIPLE * RMS
MAX_RANK = 4  # the LSTM's shape features cover ranks 0..4

# Gradients are bounded before they reach any square: a tensor whose largest
# |g| exceeds MAX_GRAD is scaled down as a whole to it. Then v <= 2^48,
# v^2 <= 2^96, and the sums of squares over a tensor of up to 2^31 entries
# (the features' normalization) stay below float32's 2^128. The optimizers
# read gradients through per-tensor normalized features, so a tensor-wide
# factor changes little (DESIGN.md §3).
MAX_GRAD = 2.0**24

_NORM_EPS = 1e-5  # x * rsqrt(_NORM_EPS + mean(x^2))
_V_EPS = 1e-6  # rsqrt(v + _V_EPS)
_LOG_EPS = 1e-8
# Bias-correction denominators are guarded with a max: under jit XLA's
# algebraic simplifier rewrites `(1 - x) + 1e-8` to `1 - x` in float32.
_MIN_DENOM = 1e-8


def per_param_feature_names(
  decays: Sequence[float] = DEFAULT_DECAYS,
) -> tuple[str, ...]:
  """Names of the per-parameter features, in column order."""
  names = ["g", "p", "log_abs_p"]
  for prefix in ("m", "v", "m_rsqrt_v", "rsqrt_v"):
    names += [f"{prefix}_{d:g}" for d in decays]
  return tuple(names)


STEP_FEATURE_NAMES = tuple(f"sin_t_over_{tau:g}pi" for tau in STEP_TIMESCALES)
# Fractions of the run at which the progress features switch sign (VeLO
# feeds its LSTM a similar tanh embedding of the fraction of training done).
PROGRESS_THRESHOLDS = (0.03, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
PROGRESS_FEATURE_NAMES = tuple(
  f"tanh_10_frac_minus_{c:g}" for c in PROGRESS_THRESHOLDS
)
TENSOR_FEATURE_NAMES = ("log_num_tensors_minus_1", "log_norm_p", "log_size")
LOSS_FEATURE_NAMES = ("train_loss_z", "valid_loss_z")
LSTM_STAT_NAMES = (
  "log_abs_mean_m",
  "sign_mean_m",
  "log_abs_mean_v",
  "sign_mean_v",
  "log_abs_mean_p",
  "sign_mean_p",
  "log_var_m",
  "log_var_v",
  "log_var_p",
  "log_norm_p",
  "log_norm_g",
  "is_scalar",
  *(f"log_dim{i}_minus_1" for i in range(MAX_RANK)),
  *LOSS_FEATURE_NAMES,
)
# The per-parameter features with the default decays (23 names).
FEATURE_NAMES = per_param_feature_names(DEFAULT_DECAYS)


def clipped_log(x: jax.Array) -> jax.Array:
  """``clip(log(1e-8 + |x|), -5, 5)``, the form of every log feature."""
  return jnp.clip(jnp.log(_LOG_EPS + jnp.abs(x)), -5.0, 5.0)


def bias_correction(decay: float, count: jax.Array) -> jax.Array:
  """``1 - decay**count`` guarded away from zero (see ``_MIN_DENOM``)."""
  return jnp.maximum(1.0 - decay ** count.astype(jnp.float32), _MIN_DENOM)


# ----------------------------------------------------------------- accumulators


def init_moments(p: jax.Array, num_decays: int) -> jax.Array:
  """Zero accumulator of shape ``(num_decays,) + p.shape``, float32."""
  return jnp.zeros((num_decays,) + jnp.shape(p), jnp.float32)


def update_moments(
  m: jax.Array, v: jax.Array, g: jax.Array, decays: Sequence[float]
) -> tuple[jax.Array, jax.Array]:
  """``m_d = d*m + (1-d)*g`` and ``v_d = d*v + (1-d)*g^2``, no bias correction.

  Args:
    m: first moments, ``(D,) + g.shape``.
    v: second moments, ``(D,) + g.shape``.
    g: the (clipped) gradient, float32.
    decays: the ``D`` decays.

  Returns:
    The new ``(m, v)``.
  """
  g = g[None]  # [1, *S]
  d = jnp.asarray(decays, jnp.float32).reshape((-1,) + (1,) * (g.ndim - 1))
  return d * m + (1.0 - d) * g, d * v + (1.0 - d) * jnp.square(g)


def bound_factors(amax: jax.Array) -> jax.Array:
  """Per-tensor factors that bring ``max|g|`` down to at most ``MAX_GRAD``.

  Args:
    amax: ``[k]`` each tensor's ``max|g|`` (finite).

  Returns:
    ``[k]`` factors: exactly 1.0 unless ``amax > MAX_GRAD`` (so normal-range
    gradients pass bit for bit), else ``MAX_GRAD / amax``. No gradient flows
    through them.
  """
  return jax.lax.stop_gradient(MAX_GRAD / jnp.maximum(amax, MAX_GRAD))


def clip_limits(
  mean_sq: jax.Array, grad_sq_ema: jax.Array, count: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Dynamic clipping thresholds: 10x a running RMS of each tensor's grads.

  The running RMS is the square root of a bias-corrected EMA (decay 0.99) of
  ``mean(g^2)``, updated with the current gradient first so that the very
  first step has a threshold too.

  Args:
    mean_sq: ``[T]`` this step's ``mean(g^2)`` of each tensor.
    grad_sq_ema: ``[T]`` their EMAs so far.
    count: number of updates done before this one (int32 scalar).

  Returns:
    ``([T] clipping thresholds, [T] new EMAs)``.
  """
  ema = CLIP_DECAY * grad_sq_ema + (1.0 - CLIP_DECAY) * mean_sq
  corrected = ema / bias_correction(CLIP_DECAY, count + 1)
  # The max keeps the gradient of sqrt finite for all-zero gradients.
  return CLIP_MULTIPLE * jnp.sqrt(jnp.maximum(corrected, 1e-30)), ema


# ------------------------------------------------------------------- features


def per_param_features(
  g: jax.Array,
  p: jax.Array,
  m: jax.Array,
  v: jax.Array,
  buffer: jax.Array | None = None,
) -> jax.Array:
  """Raw (unnormalized) per-parameter features of one tensor (or chunk).

  Args:
    g: clipped gradient, float32, shape ``S``.
    p: parameter, float32, shape ``S``.
    m: first moments, ``(D,) + S``.
    v: second moments, ``(D,) + S``.
    buffer: ``[3 + 4*D, N]`` float32 to write the features into (all of it
      is overwritten), e.g. a chunk loop's buffer of the previous chunk;
      None: a fresh one. Writing into zeros first cost a chunk-sized write
      (XLA:CPU fuses it as a pad, ~4x the time of the rows' copies).

  Returns:
    ``[3 + 4*D, N]`` features in the order of ``per_param_feature_names``.
  """
  n, d = g.size, m.shape[0]
  m, v = m.reshape(d, n), v.reshape(d, n)
  rsqrt_v = jax.lax.rsqrt(v + _V_EPS)
  p = p.reshape(n)
  rows = [
    g.reshape(1, n),
    p[None],
    jnp.log(jnp.abs(p) + _LOG_EPS)[None],
    m,
    v,
    m * rsqrt_v,
    rsqrt_v,
  ]
  # Row blocks written into one buffer: on XLA:CPU this is ~4x faster than
  # jnp.concatenate of the same blocks (a fused concatenate selects the
  # source operand per element and vectorizes badly).
  out = jnp.zeros((3 + 4 * d, n), jnp.float32) if buffer is None else buffer
  start = 0
  for block in rows:
    out = jax.lax.dynamic_update_slice_in_dim(out, block, start, axis=0)
    start += block.shape[0]
  return out


class EntrySums(NamedTuple):
  """Sums over a tensor's entries: all that its per-tensor features need.

  Stacked over tensors, every field gets a leading ``[T]`` axis; the
  ``*_from_sums`` functions take that stacked form and compute the per-tensor
  features of all tensors at once (a handful of ops instead of a handful per
  tensor, which dominated small models).
  """

  sq: jax.Array  # [F] sum of squares of each raw per-parameter feature
  m: jax.Array  # [D] sum of m per decay
  v: jax.Array  # [D] sum of v per decay
  p: jax.Array  # [] sum of p


class EntryTerms(NamedTuple):
  """Per-entry terms whose sums over the entries give ``EntrySums``.

  Separate leaves (entries on the last axis), not one stacked ``[R, N]``
  array: a chunk loop adds them into accumulators of their own, and a
  stacked array would be a concatenation, which XLA:CPU fuses badly.
  """

  g_sq: jax.Array  # [N]
  p_sq: jax.Array  # [N]
  log_p_sq: jax.Array  # [N]
  m_sq: jax.Array  # [D, N]
  v_sq: jax.Array  # [D, N]
  m_sq_over_v: jax.Array  # [D, N]
  inv_v: jax.Array  # [D, N]
  m: jax.Array  # [D, N]
  v: jax.Array  # [D, N]
  p: jax.Array  # [N]


def entry_terms(
  g: jax.Array, p: jax.Array, m: jax.Array, v: jax.Array
) -> EntryTerms:
  """``EntryTerms`` of one tensor (or chunk).

  ``(m * rsqrt(v + eps))^2 = m^2 / (v + eps)`` etc., so the sums never need
  the ``[F, N]`` features.

  Args:
    g: clipped gradient, float32, shape ``S``.
    p: parameter, float32, shape ``S``.
    m: first moments, ``(D,) + S``.
    v: second moments, ``(D,) + S``.
  """
  n, d = g.size, m.shape[0]
  m, v = m.reshape(d, n), v.reshape(d, n)
  g, p = g.reshape(n), p.reshape(n)
  inv_v = 1.0 / (v + _V_EPS)
  m_sq = jnp.square(m)
  return EntryTerms(
    g_sq=jnp.square(g),
    p_sq=jnp.square(p),
    log_p_sq=jnp.square(jnp.log(jnp.abs(p) + _LOG_EPS)),
    m_sq=m_sq,
    v_sq=jnp.square(v),
    m_sq_over_v=m_sq * inv_v,
    inv_v=inv_v,
    m=m,
    v=v,
    p=p,
  )


def sums_from_terms(term_sums: EntryTerms) -> EntrySums:
  """``EntrySums`` from ``EntryTerms`` summed over the entries."""
  t = term_sums
  head = jnp.stack([t.g_sq, t.p_sq, t.log_p_sq])
  sq = jnp.concatenate([head, t.m_sq, t.v_sq, t.m_sq_over_v, t.inv_v])
  return EntrySums(sq, t.m, t.v, t.p)


def segment_entry_sums(
  g: jax.Array,
  p: jax.Array,
  m: jax.Array,
  v: jax.Array,
  segment_sizes: Sequence[int],
) -> EntrySums:
  """Stacked ``EntrySums`` of several small tensors packed on one axis.

  Args:
    g: ``[N]`` clipped gradients of the packed tensors.
    p: ``[N]`` parameters.
    m: ``[D, N]`` first moments.
    v: ``[D, N]`` second moments.
    segment_sizes: the ``k`` tensors' numbers of entries, in order.

  Returns:
    ``EntrySums`` with a leading ``[k]`` axis.
  """
  d = m.shape[0]
  raw = per_param_features(g, p, m, v)  # [F, N]
  rows = jnp.concatenate([jnp.square(raw), m, v, p[None]], axis=0)
  sums = segments.segment_sum(rows, segment_sizes).T  # [k, F + 2D + 1]
  f = raw.shape[0]
  return EntrySums(
    sums[:, :f], sums[:, f : f + d], sums[:, f + d : f + 2 * d], sums[:, -1]
  )


def scales_from_sums(sums: EntrySums, sizes: Sequence[int]) -> jax.Array:
  """``[T, F]`` normalization scales from stacked sums and tensor sizes."""
  n = jnp.asarray(sizes, jnp.float32)[:, None]
  return jax.lax.rsqrt(_NORM_EPS + sums.sq / n)


def step_features(count: jax.Array) -> jax.Array:
  """``sin(t / (tau * pi))`` for the 11 timescales; ``t`` = updates so far."""
  tau = jnp.asarray(STEP_TIMESCALES, jnp.float32)
  return jnp.sin(count.astype(jnp.float32) / (tau * jnp.pi))


def progress_features(count: jax.Array, num_steps: jax.Array) -> jax.Array:
  """``tanh(10 (t / num_steps - c))`` for the ``PROGRESS_THRESHOLDS`` c.

  They tell an optimizer how much of its run is done, so that it can anneal
  its steps towards the end (the paper's step features, sines of ``t``,
  carry no notion of the run's length). Past ``num_steps`` they saturate.

  Args:
    count: updates done so far (int scalar).
    num_steps: the run's total number of updates (int or float, > 0).

  Returns:
    ``[len(PROGRESS_THRESHOLDS)]`` float32.
  """
  frac = count.astype(jnp.float32) / jnp.maximum(
    jnp.asarray(num_steps, jnp.float32), 1.0
  )
  c = jnp.asarray(PROGRESS_THRESHOLDS, jnp.float32)
  return jnp.tanh(10.0 * (frac - c))


def _norm_from_sq(sq: jax.Array) -> jax.Array:
  # The max keeps d sqrt finite at 0 (all-zero parameters or gradients).
  return jnp.sqrt(jnp.maximum(sq, 1e-30))


def tensor_features_from_sums(
  sums: EntrySums, sizes: Sequence[int], num_tensors: int | None = None
) -> jax.Array:
  """``[T, 3]``: log(#tensors) - 1, clipped log ``||p||``, log(#entries).

  Args:
    sums: stacked ``EntrySums`` of T tensors.
    sizes: their numbers of entries.
    num_tensors: number of tensors in the parameter tree (default: T).

  Returns:
    The tensor features, float32.
  """
  t = len(sizes) if num_tensors is None else num_tensors
  static = jnp.asarray(
    [[math.log(t) - 1.0, math.log(n)] for n in sizes], jnp.float32
  )
  log_norm = clipped_log(_norm_from_sq(sums.sq[:, 1]))
  return jnp.stack([static[:, 0], log_norm, static[:, 1]], axis=1)


def lstm_stats_from_sums(
  sums: EntrySums, shapes: Sequence[tuple[int, ...]]
) -> jax.Array:
  """The 16 per-tensor statistics fed to the LSTM (loss features excluded).

  Means and variances of ``m`` and ``v`` are over all entries and all
  decays; variances are ``E[x^2] - E[x]^2`` from the sums (cancellation only
  matters far below the -5 clip of the log-variance unless ``|E[x]|`` is
  huge). A parameter counts as scalar when it has one entry. Shape features
  are ``log(dim) - 1`` per axis, padded with zeros to rank 4.

  Args:
    sums: stacked ``EntrySums`` of all T tensors.
    shapes: the parameters' shapes.

  Returns:
    ``[T, 16]`` float32, in the order of ``LSTM_STAT_NAMES[:16]``.
  """
  d = sums.m.shape[1]
  n = jnp.asarray([math.prod(s) for s in shapes], jnp.float32)  # [T]
  # Columns of sums.sq, in per_param_feature_names order: g, p, log|p|, m..
  sq_g, sq_p = sums.sq[:, 0], sums.sq[:, 1]
  sq_m = jnp.sum(sums.sq[:, 3 : 3 + d], axis=1)
  sq_v = jnp.sum(sums.sq[:, 3 + d : 3 + 2 * d], axis=1)
  stats, variances = [], []
  for total, sq, count in [
    (jnp.sum(sums.m, axis=1), sq_m, n * d),
    (jnp.sum(sums.v, axis=1), sq_v, n * d),
    (sums.p, sq_p, n),
  ]:
    mean = total / count
    stats += [clipped_log(mean), jnp.sign(mean)]
    var = jnp.maximum(sq / count - jnp.square(mean), 0.0)
    # inf - inf when the squares overflow: the variance is huge, not NaN.
    variances.append(jnp.where(jnp.isnan(var), jnp.inf, var))
  stats += [clipped_log(x) for x in variances]
  stats += [clipped_log(_norm_from_sq(sq_p)), clipped_log(_norm_from_sq(sq_g))]
  static = [
    [float(math.prod(s) == 1)]
    + [math.log(k) - 1.0 for k in s]
    + [0.0] * (MAX_RANK - len(s))
    for s in shapes
  ]
  head = jnp.stack(stats, axis=1)  # [T, 11]
  return jnp.concatenate([head, jnp.asarray(static, jnp.float32)], axis=1)
