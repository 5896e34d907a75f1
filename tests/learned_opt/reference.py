"""A plain, slow reference of the learned optimizers' formulas (DESIGN.md §3).

Written independently of ``learned_opt/features.py`` and the fused networks,
in float64 numpy, one tensor at a time: every MLP input (per-parameter,
step, tensor and LSTM features) is tiled over the entries, the MLP computes
all of its outputs for every entry, and the LSTM outputs are averaged over
the entries afterwards. The fast implementations must agree with it to float
tolerance.

State is a plain dict so that nothing is shared with the code under test.
"""

import dataclasses

import ml_dtypes
import numpy as np

TIMESCALES = (1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5)


def _np(tree):
  if isinstance(tree, dict):
    return {k: _np(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_np(v) for v in tree]
  return np.asarray(tree, np.float64)


def _clog(x):
  return np.clip(np.log(1e-8 + np.abs(x)), -5.0, 5.0)


def _mlp(layers, x):
  for layer in layers[:-1]:
    x = np.maximum(x @ layer["w"] + layer["b"], 0.0)
  return x @ layers[-1]["w"] + layers[-1]["b"]


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def init_state(lopt, theta, params_leaves):
  """Reference state for a list of parameter leaves."""
  theta = _np(theta)
  d = len(lopt.decays)
  state = {
    "count": 0,
    "m": [np.zeros(np.shape(p) + (d,)) for p in params_leaves],
    "v": [np.zeros(np.shape(p) + (d,)) for p in params_leaves],
    "ema": [0.0 for _ in params_leaves],
    "loss_count": 0,
    "loss_mean": 0.0,
    "loss_var": 0.0,
    "valid": 0.0,
    "valid_count": 0,
  }
  if "lstm" in theta:
    t = len(params_leaves)
    state["h"] = np.tile(theta["init"]["h"], (t, 1))
    state["c"] = np.tile(theta["init"]["c"], (t, 1))
    state["mlp_avg"] = np.tile(theta["init"]["mlp_avg"], (t, 1))
    state["global"] = theta["init"]["global"].copy()
  return state


def _accumulate(lopt, state, i, g):
  """Clips ``g`` and updates tensor ``i``'s accumulators in ``state``."""
  t = state["count"]
  ema = 0.99 * state["ema"][i] + 0.01 * np.mean(g**2)
  state["ema"][i] = ema
  limit = 10.0 * np.sqrt(ema / (1.0 - 0.99 ** (t + 1)))
  g = np.clip(g, -limit, limit)
  m, v = state["m"][i], state["v"][i]
  for j, d in enumerate(lopt.decays):
    m[..., j] = d * m[..., j] + (1 - d) * g
    v[..., j] = d * v[..., j] + (1 - d) * g**2
  return g


def _progress(lopt, t, num_steps):
  if not getattr(lopt, "progress_features", False):
    return []
  frac = t / max(num_steps, 1)
  return [
    np.tanh(10 * (frac - c)) for c in (0.03, 0.1, 0.25, 0.5, 0.75, 0.9, 1)
  ]


def _step_scales(lopt, params, state):
  """Per-tensor multipliers of the step rule (1 for the paper's)."""
  step_scale = getattr(lopt, "step_scale", "absolute")
  if step_scale in ("absolute", "lstm_head"):
    return [1.0] * len(params)
  if step_scale == "init_rms":
    if "init_scales" not in state:  # the first update sees the initial params
      state["init_scales"] = _step_scales(
        dataclasses.replace(lopt, step_scale="param_rms"), params, state
      )
    return state["init_scales"]
  overall = np.sqrt(sum(np.sum(p**2) for p in params)
                    / sum(p.size for p in params))  # fmt: skip
  floor = lopt.param_scale_floor * overall
  return [max(np.sqrt(np.mean(p**2)), floor) for p in params]


def _mlp_inputs(lopt, g, p, m, v, t, num_tensors, lstm_out, progress):
  """All MLP inputs of one tensor, tiled: ``[N, 37]`` or ``[N, 54]``."""
  n, d = p.size, len(lopt.decays)
  m, v = m.reshape(n, d), v.reshape(n, d)
  cols = [g.ravel(), p.ravel(), np.log(np.abs(p.ravel()) + 1e-8)]
  cols += [m[:, j] for j in range(d)] + [v[:, j] for j in range(d)]
  cols += [m[:, j] / np.sqrt(v[:, j] + 1e-6) for j in range(d)]
  cols += [1.0 / np.sqrt(v[:, j] + 1e-6) for j in range(d)]
  cols = [c / np.sqrt(1e-5 + np.mean(c**2)) for c in cols]
  shared = [np.sin(t / (tau * np.pi)) for tau in TIMESCALES]
  shared += [np.log(num_tensors) - 1.0, _clog(np.linalg.norm(p)), np.log(n)]
  shared += list(lstm_out) + progress
  cols += [np.full(n, s) for s in shared]
  return np.stack(cols, axis=1)


def _loss_features(state, value, valid_value):
  """Bias-corrected EMAs as running weighted averages (w_1 = 1).

  Non-finite losses are not folded in; such a train loss reads as +-5.
  """
  if np.isfinite(value):
    n = state["loss_count"] = state["loss_count"] + 1
    w = 1.0 if n == 1 else 0.1 / (1 - 0.9**n)
    state["loss_mean"] += w * (value - state["loss_mean"])
    state["loss_var"] += w * ((value - state["loss_mean"]) ** 2
                              - state["loss_var"])  # fmt: skip
  if valid_value is not None and np.isfinite(valid_value):
    state["valid_count"] += 1
    k = state["valid_count"]
    wv = 1.0 if k == 1 else 0.05 / (1 - 0.95**k)
    state["valid"] += wv * (valid_value - state["valid"])
  mean, std = state["loss_mean"], np.sqrt(state["loss_var"] + 1e-8)
  z = lambda x: np.clip(np.nan_to_num((x - mean) / std, nan=5.0), -5, 5)
  return [z(value), z(state["valid"]) if state["valid_count"] else 0.0]


def _lstm_stats(g, p, m, v, loss_feats):
  stats = []
  for x in (m, v, p):
    stats += [_clog(np.mean(x)), np.sign(np.mean(x))]
  stats += [_clog(np.var(x)) for x in (m, v, p)]
  stats += [_clog(np.linalg.norm(p)), _clog(np.linalg.norm(g))]
  stats += [float(p.size == 1)]
  dims = [np.log(s) - 1.0 for s in p.shape]
  stats += dims + [0.0] * (4 - len(dims))
  return np.asarray(stats + list(loss_feats))


def update(
  lopt, theta, state, grads, params, value, valid_value=None, num_steps=None
):
  """One reference update on lists of leaves; mutates and returns ``state``.

  Args:
    lopt: an ``MLPLOpt`` or ``HierarchicalLOpt`` (for its sizes and decays).
    theta: its meta-parameters.
    state: from ``init_state`` (or a previous ``update``).
    grads: list of gradient leaves.
    params: list of parameter leaves.
    value: training loss.
    valid_value: validation loss or None/NaN.
    num_steps: the run's length (for progress features).

  Returns:
    ``(list of updates (float64), state)``.
  """
  theta = _np(theta)
  grads = [np.asarray(g, np.float64) for g in grads]
  params = [np.asarray(p, np.float64) for p in params]
  t, num_tensors = state["count"], len(params)
  hier = "lstm" in theta
  clipped = [_accumulate(lopt, state, i, g) for i, g in enumerate(grads)]
  lstm_outs = [[] for _ in params]
  progress = _progress(lopt, t, num_steps)
  scales = _step_scales(lopt, params, state)
  if hier:
    loss_feats = _loss_features(state, float(value), valid_value)
    x = np.stack(
      [
        np.concatenate(
          [
            _lstm_stats(g, p, state["m"][i], state["v"][i], loss_feats),
            state["global"],
            state["mlp_avg"][i],
            progress,
          ]
        )
        for i, (g, p) in enumerate(zip(clipped, params))
      ]
    )
    lstm = theta["lstm"]
    gates = x @ lstm["wx"] + state["h"] @ lstm["wh"] + lstm["b"]
    gi, gf, gg, go = np.split(gates, 4, axis=1)
    c = _sigmoid(gf + 1.0) * state["c"] + _sigmoid(gi) * np.tanh(gg)
    h = _sigmoid(go) * np.tanh(c)
    state["h"], state["c"] = h, c
    lstm_outs = h @ theta["lstm_out"]["w"] + theta["lstm_out"]["b"]
    glob = h @ theta["global_head"]["w"] + theta["global_head"]["b"]
    state["global"] = glob.mean(axis=0)
    if "lr_head" in theta:
      head = h @ theta["lr_head"]["w"] + theta["lr_head"]["b"]
      head = getattr(lopt, "step_head_mult", 1.0) * head
      scales = [s * np.exp(head[i, 0]) for i, s in enumerate(scales)]
  updates = []
  for i, (g, p) in enumerate(zip(clipped, params)):
    inputs = _mlp_inputs(
      lopt, g, p, state["m"][i], state["v"][i], t, num_tensors, lstm_outs[i],
      progress,
    )  # fmt: skip
    out = _mlp(theta["mlp"], inputs)  # [N, all outputs]
    step = out[:, 0] * np.exp(lopt.exp_mult * out[:, 1]) * lopt.step_mult
    step = step * scales[i]
    updates.append(-step.reshape(p.shape))
    if hier:
      state["mlp_avg"][i] = out[:, 2:].mean(axis=0)
  state["count"] = t + 1
  return updates, state


def example_params():
  """Parameter trees covering the cases every optimizer must accept.

  Nested dicts, a haiku-style ``{"module/~/name": {"w", "b"}}`` layout,
  a scalar, 1-D to 4-D tensors, float32 and bfloat16; shapes are tiny.
  """
  rng = np.random.default_rng(0)
  f32 = lambda *s: np.asarray(rng.normal(size=s), np.float32)
  return {
    "mlp/~/linear_0": {"w": f32(4, 3), "b": f32(3).astype(ml_dtypes.bfloat16)},
    "scalar": f32(),
    "nested": {
      "rank3_bf16": f32(2, 1, 3).astype(ml_dtypes.bfloat16),
      "conv": f32(2, 2, 1, 3),
    },
  }
