"""A straightforward jitted ``HierarchicalLOpt``: the yardstick of issue 2.

The same formulas as ``learned_opt.HierarchicalLOpt`` (DESIGN.md §3), written
the plain way, as ``tests/learned_opt/reference.py`` writes them in numpy:
per tensor, every MLP input (23 per-parameter, 11 step, 3 tensor and 17 LSTM
features) is tiled into an ``[N, 54]`` matrix, the MLP computes all 18
outputs for every entry, and the 16 that the LSTM reads are averaged
afterwards. No folding, no chunking, no packing of small tensors.

``bench/overhead.py`` times it next to the real optimizer, so that the
ratios to Adam can be read against what a straightforward implementation
gets on the same machine at the same moment. It reports how far the two
optimizers' updates differ, and ``tests/test_bench_straightforward.py``
checks that they agree over several steps.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

import learned_opt

TIMESCALES = (1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5)


def _clog(x):
  return jnp.clip(jnp.log(1e-8 + jnp.abs(x)), -5.0, 5.0)


def _mlp(layers, x):
  for layer in layers[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"][None])
  return x @ layers[-1]["w"] + layers[-1]["b"][None]


def _loss_features(state, value, valid_value):
  """Bias-corrected EMAs of the train and validation losses, as z-scores."""
  # A non-finite loss is not folded in (and reads as +-5 below).
  ok = jnp.isfinite(value)
  x = jnp.where(ok, value, state["loss_mean"])
  n = state["loss_count"] + 1
  w = jnp.where(n == 1, 1.0, 0.1 / jnp.maximum(1 - 0.9**n, 1e-7))
  mean = state["loss_mean"] + w * (x - state["loss_mean"])
  var = state["loss_var"] + w * ((x - mean) ** 2 - state["loss_var"])
  var = jnp.where(ok, var, state["loss_var"])
  n = jnp.where(ok, n, state["loss_count"])
  valid, valid_count = state["valid"], state["valid_count"]
  if valid_value is not None:
    seen = jnp.isfinite(valid_value)
    k = valid_count + 1
    wv = jnp.where(k == 1, 1.0, 0.05 / jnp.maximum(1 - 0.95**k, 1e-7))
    valid = jnp.where(seen, valid + wv * (valid_value - valid), valid)
    valid_count = jnp.where(seen, k, valid_count)
  std = jnp.sqrt(var + 1e-8)
  z = lambda x: jnp.clip((x - mean) / std, -5.0, 5.0)
  z_train = jnp.where(ok, z(x), jnp.where(value == -jnp.inf, -5.0, 5.0))
  feats = jnp.stack([z_train, jnp.where(valid_count > 0, z(valid), 0.0)])
  new = dict(loss_count=n, loss_mean=mean, loss_var=var, valid=valid,
             valid_count=valid_count)  # fmt: skip
  return feats, new


def _lstm_stats(g, p, m, v, loss_feats):
  stats = []
  for x in (m, v, p):
    stats += [_clog(jnp.mean(x)), jnp.sign(jnp.mean(x))]
  stats += [_clog(jnp.var(x)) for x in (m, v, p)]
  stats += [_clog(jnp.linalg.norm(p)), _clog(jnp.linalg.norm(g))]
  stats += [jnp.asarray(float(p.size == 1))]
  dims = [jnp.log(float(s)) - 1.0 for s in p.shape]
  stats += dims + [jnp.asarray(0.0)] * (4 - len(dims))
  return jnp.concatenate([jnp.stack(stats), loss_feats])


def _mlp_inputs(decays, g, p, m, v, t, num_tensors, lstm_out):
  """All MLP inputs of one tensor, tiled: ``[N, 54]``."""
  n = p.size
  g, p = g.reshape(n), p.reshape(n)
  m, v = m.reshape(n, len(decays)), v.reshape(n, len(decays))
  rsqrt_v = jax.lax.rsqrt(v + 1e-6)
  cols = jnp.concatenate(
    [g[:, None], p[:, None], jnp.log(jnp.abs(p) + 1e-8)[:, None],
     m, v, m * rsqrt_v, rsqrt_v], axis=1,
  )  # fmt: skip
  cols = cols * jax.lax.rsqrt(
    1e-5 + jnp.mean(jnp.square(cols), axis=0, keepdims=True)
  )
  step = jnp.sin(t.astype(jnp.float32) / (jnp.asarray(TIMESCALES) * jnp.pi))
  tensor = jnp.stack(
    [
      jnp.log(float(num_tensors)) - 1.0,
      _clog(jnp.linalg.norm(p)),
      jnp.log(float(n)),
    ]
  )
  shared = jnp.concatenate([step, tensor, lstm_out])
  return jnp.concatenate([cols, jnp.broadcast_to(shared, (n, shared.size))], 1)


def optimizer(lopt, theta) -> optax.GradientTransformationExtraArgs:
  """The straightforward optax transform of ``lopt`` (a HierarchicalLOpt)."""
  decays = jnp.asarray(lopt.decays, jnp.float32)

  def init_fn(params):
    leaves = jax.tree.leaves(params)
    acc = lambda: [
      jnp.zeros(jnp.shape(p) + (len(lopt.decays),)) for p in leaves
    ]
    tile = lambda x: jnp.tile(x, (len(leaves), 1))
    # Separate buffers everywhere: the benchmark donates the state.
    zero = lambda: jnp.zeros([], jnp.float32)
    izero = lambda: jnp.zeros([], jnp.int32)
    return dict(
      count=izero(), m=acc(), v=acc(), ema=jnp.zeros(len(leaves)),
      h=tile(theta["init"]["h"]), c=tile(theta["init"]["c"]),
      mlp_avg=tile(theta["init"]["mlp_avg"]),
      glob=jnp.copy(theta["init"]["global"]),
      loss_count=izero(), loss_mean=zero(), loss_var=zero(), valid=zero(),
      valid_count=izero(),
    )  # fmt: skip

  def update_fn(grads, state, params=None, *, value=None, valid_value=None):
    leaves, treedef = jax.tree.flatten(params)
    grads = [g.astype(jnp.float32) for g in treedef.flatten_up_to(grads)]
    params_f = [p.astype(jnp.float32) for p in leaves]
    t = state["count"]
    ema, clipped, ms, vs = [], [], [], []
    for i, g in enumerate(grads):
      e = 0.99 * state["ema"][i] + 0.01 * jnp.mean(g**2)
      limit = 10.0 * jnp.sqrt(e / jnp.maximum(1 - 0.99 ** (t + 1), 1e-7))
      g = jnp.clip(g, -limit, limit)
      d = decays.reshape((1,) * g.ndim + (-1,))  # [1, ..., 1, D]
      ms.append(d * state["m"][i] + (1 - d) * g[..., None])
      vs.append(d * state["v"][i] + (1 - d) * g[..., None] ** 2)
      ema.append(e)
      clipped.append(g)
    loss_feats, loss_state = _loss_features(state, value, valid_value)
    x = jnp.stack(
      [
        jnp.concatenate(
          [
            _lstm_stats(g, p, m, v, loss_feats),
            state["glob"],
            state["mlp_avg"][i],
          ]
        )
        for i, (g, p, m, v) in enumerate(zip(clipped, params_f, ms, vs))
      ]
    )
    lstm = theta["lstm"]
    gates = x @ lstm["wx"] + state["h"] @ lstm["wh"] + lstm["b"][None]
    gi, gf, gg, go = jnp.split(gates, 4, axis=1)
    kept = jax.nn.sigmoid(gf + 1.0) * state["c"]
    c = kept + jax.nn.sigmoid(gi) * jnp.tanh(gg)
    h = jax.nn.sigmoid(go) * jnp.tanh(c)
    lstm_outs = h @ theta["lstm_out"]["w"] + theta["lstm_out"]["b"][None]
    glob = h @ theta["global_head"]["w"] + theta["global_head"]["b"][None]
    updates, mlp_avg = [], []
    for i, (g, p) in enumerate(zip(clipped, params_f)):
      inputs = _mlp_inputs(
        lopt.decays, g, p, ms[i], vs[i], t, len(leaves), lstm_outs[i]
      )
      out = _mlp(theta["mlp"], inputs)  # [N, 18]
      step = out[:, 0] * jnp.exp(lopt.exp_mult * out[:, 1]) * lopt.step_mult
      updates.append((-step).reshape(leaves[i].shape).astype(leaves[i].dtype))
      mlp_avg.append(out[:, 2:].mean(axis=0))
    new_state = dict(
      count=t + 1, m=ms, v=vs, ema=jnp.stack(ema), h=h, c=c,
      mlp_avg=jnp.stack(mlp_avg), glob=glob.mean(axis=0), **loss_state,
    )  # fmt: skip
    return treedef.unflatten(updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class StraightforwardHierarchicalLOpt(learned_opt.HierarchicalLOpt):
  """``HierarchicalLOpt`` (same theta) whose transform is ``optimizer``.

  What ``bench/meta_throughput.py`` meta-trains as the yardstick of issue 4.
  """

  def optimizer(self, theta) -> optax.GradientTransformationExtraArgs:
    return optimizer(self, theta)
