"""Character-level RNN language models on tiny Shakespeare (TaskSet ``rnn_lm``).

Static fields: cell (vanilla RNN, GRU or LSTM), embedding and hidden sizes
(8-256), sequence length (8-128) and batch size, from a menu of at most 8
configurations. Dynamic fields: activation (of the RNN's candidate state),
init scale and data seed. The loss is the mean next-character cross-entropy.

Example:
  >>> family = rnn_lm.RNNLMFamily()
  >>> task = family.task(family.sample(jax.random.key(0)))
  >>> params = task.init(jax.random.key(1))
  >>> loss = task.loss(params, None, task.batch(jax.random.key(2), "train"))
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from task_suite import base, data
from task_suite.families import common

CELLS = ("rnn", "gru", "lstm")
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # blocks of the fused projections
DATASET = "tiny_shakespeare"

MENU: tuple[dict[str, Any], ...] = (
  {"cell": "rnn", "embed": 16, "hidden": 32, "seq_len": 16, "batch_size": 32},
  {"cell": "gru", "embed": 16, "hidden": 64, "seq_len": 32, "batch_size": 16},
  {"cell": "lstm", "embed": 32, "hidden": 64, "seq_len": 32, "batch_size": 16},
  {"cell": "rnn", "embed": 8, "hidden": 128, "seq_len": 8, "batch_size": 32},
  {"cell": "gru", "embed": 32, "hidden": 128, "seq_len": 64, "batch_size": 8},
  {"cell": "lstm", "embed": 64, "hidden": 256, "seq_len": 16, "batch_size": 16},
  {"cell": "gru", "embed": 8, "hidden": 16, "seq_len": 128, "batch_size": 8},
  {"cell": "lstm", "embed": 128, "hidden": 32, "seq_len": 8, "batch_size": 32},
)
# The expensive entries (long sequences, 256 units) are drawn half as often.
MENU_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class RNNLMSpec(base.TaskSpec):
  """A character-level recurrent language model.

  Attributes:
    cell: "rnn", "gru" or "lstm".
    embed: character embedding size.
    hidden: recurrent state size.
    seq_len: characters per training sequence (unrolled length).
    batch_size: sequences per batch.
    activation: one of ``common.ACTIVATION_NAMES``, applied to the candidate
      state (the RNN's state, the GRU's candidate, the LSTM's cell input).
    init_scale: multiplier of the LeCun-normal weight init.
    data_seed: folded into batch keys.
  """

  family: ClassVar[str] = "rnn_lm"
  cell: str = base.static_field()
  embed: int = base.static_field()
  hidden: int = base.static_field()
  seq_len: int = base.static_field()
  batch_size: int = base.static_field()
  activation: str = base.dynamic_field()
  init_scale: float = base.dynamic_field()
  data_seed: int = base.dynamic_field()

  def __post_init__(self):
    common.index_of(self.cell, CELLS, "cell")
    common.index_of(self.activation, common.ACTIVATION_NAMES, "activation")
    for field in ("embed", "hidden", "seq_len", "batch_size"):
      if getattr(self, field) < 1:
        raise ValueError(
          f"{field} must be positive, got {getattr(self, field)}"
        )
    if not self.init_scale > 0:
      raise ValueError(f"init_scale must be positive, got {self.init_scale}")


def _cell_step(cell: str, act: jax.Array, wh: jax.Array, carry, xw_t):
  """One recurrent step; ``xw_t`` [B, G*H] is the precomputed input part."""
  h = carry[0]
  hw = h @ wh  # [B, G*H]
  if cell == "rnn":
    h = common.activation(act, xw_t + hw)
    return (h,), h
  if cell == "gru":
    xz, xr, xn = jnp.split(xw_t, 3, axis=-1)
    hz, hr, hn = jnp.split(hw, 3, axis=-1)
    z = jax.nn.sigmoid(xz + hz)
    r = jax.nn.sigmoid(xr + hr)
    n = common.activation(act, xn + r * hn)
    h = (1.0 - z) * n + z * h
    return (h,), h
  c = carry[1]
  i, f, g, o = jnp.split(xw_t + hw, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * common.activation(act, g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (h, c), h


class RNNLMTask(base.Task):
  """Mean next-character cross-entropy of a recurrent LM."""

  def init(self, key: jax.Array) -> base.Params:
    s, scale = self.static, self.dynamic["init_scale"]
    v, e, h = _vocab_size(self.data), s["embed"], s["hidden"]
    gh = _GATES[s["cell"]] * h
    z_embed, z_x, z_h, z_head = common.normal_draws(
      key, [(v, e), (e, gh), (h, gh), (h, v)]
    )
    wx = common.dense_params(z_x, scale)
    return {
      "embed": scale * z_embed,  # one-hot inputs have fan-in 1
      "cell": {
        "wx": wx["w"],
        "wh": common.dense_params(z_h, scale)["w"],
        "b": wx["b"],
      },
      "head": common.dense_params(z_head, scale),
    }

  def loss(
    self, params: base.Params, key: jax.Array, batch: base.Batch
  ) -> jax.Array:
    del key  # deterministic model
    s, cell = self.static, params["cell"]
    v = params["embed"].shape[0]
    inputs = jnp.swapaxes(batch["inputs"], 0, 1)  # [L, B] time-major
    # A one-hot matmul instead of a gather: no scatter-add in the gradient.
    x = jax.nn.one_hot(inputs, v, dtype=jnp.float32) @ params["embed"]
    xw = x @ cell["wx"] + cell["b"][None, None]  # [L, B, G*H], out of the loop
    b, h = inputs.shape[1], s["hidden"]
    zeros = jnp.zeros((b, h), jnp.float32)
    carry = (zeros, zeros) if s["cell"] == "lstm" else (zeros,)
    step = lambda c, xw_t: _cell_step(
      s["cell"], self.dynamic["activation"], cell["wh"], c, xw_t
    )
    _, hs = jax.lax.scan(step, carry, xw)  # [L, B, H]
    logits = common.dense(params["head"], hs)  # [L, B, V]
    targets = jnp.swapaxes(batch["targets"], 0, 1)
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, targets
    ).mean()

  def batch(self, key: jax.Array, split: str) -> base.Batch:
    """{"inputs", "targets"}: int32 [B, L] windows, targets shifted by one."""
    common.check_split(split)
    s = self.static
    tokens = self.data[split]
    key = jax.random.fold_in(key, self.dynamic["data_seed"])
    starts = jax.random.randint(
      key, (s["batch_size"], 1), 0, tokens.shape[0] - s["seq_len"]
    )
    windows = tokens[starts + jnp.arange(s["seq_len"] + 1)[None]]
    return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}

  def normalize(self, loss: jax.Array) -> jax.Array:
    # Uniform prediction over the vocabulary costs log(vocab).
    return common.cap(loss / math.log(_vocab_size(self.data)))


def _vocab_size(arrays: Mapping[str, jax.Array]) -> int:
  return arrays["vocab_size"].shape[0]


class RNNLMFamily:
  """Samples ``RNNLMSpec``s from a menu of static configurations.

  Args:
    menu: static configurations (dicts of cell, embed, hidden, seq_len,
      batch_size); at most 8.
    weights: relative sampling weights; None gives ``MENU_WEIGHTS`` for the
      default menu and uniform weights otherwise.
    load_text: ``(name) -> data.TextData``; defaults to
      ``task_suite.data.load_text``.
  """

  name = "rnn_lm"
  spec_type = RNNLMSpec

  def __init__(
    self,
    menu: Sequence[Mapping[str, Any]] | None = None,
    weights: Sequence[float] | None = None,
    load_text: Callable[[str], Any] | None = None,
  ):
    if menu is None:
      menu, weights = MENU, weights or MENU_WEIGHTS
    common.check_menu(menu, weights, RNNLMSpec.static_names())
    self.menu, self.weights = tuple(menu), weights
    self._load_text = load_text or data.load_text
    self._tasks: dict[RNNLMSpec, RNNLMTask] = {}
    self._data: dict[str, jax.Array] | None = None

  def sample(self, key: jax.Array) -> RNNLMSpec:
    """Draws a spec deterministically from ``key``."""
    rng = common.host_rng(key)
    static = common.choose_static(rng, self.menu, self.weights)
    return RNNLMSpec(
      **static,
      activation=common.ACTIVATION_NAMES[
        int(rng.integers(len(common.ACTIVATION_NAMES)))
      ],
      init_scale=base.round_sig(
        common.log_uniform(rng, *common.INIT_SCALE_RANGE)
      ),
      data_seed=int(rng.integers(2**16)),
    )

  def task(self, spec: RNNLMSpec) -> RNNLMTask:
    """The task of ``spec`` (the same object for equal specs)."""
    if not isinstance(spec, RNNLMSpec):
      raise TypeError(
        f"the rnn_lm family builds tasks from RNNLMSpec, got "
        f"{type(spec).__name__}; use task_suite.get_task(spec) to dispatch."
      )
    if spec not in self._tasks:
      dynamic = {
        "activation": jnp.asarray(
          common.ACTIVATION_NAMES.index(spec.activation), jnp.int32
        ),
        "init_scale": jnp.asarray(spec.init_scale, jnp.float32),
        "data_seed": jnp.asarray(spec.data_seed, jnp.int32),
      }
      self._tasks[spec] = RNNLMTask(spec.signature, dynamic, self.text_data())
    return self._tasks[spec]

  def text_data(self) -> dict[str, jax.Array]:
    """``Task.data``: token splits, plus the vocabulary size as a shape."""
    if self._data is None:
      text = self._load_text(DATASET)
      # The size rides along as a shape (not a Python int on the task) so
      # that it stays static inside jit while the spec need not carry it.
      self._data = {
        **text.arrays,
        "vocab_size": jnp.zeros((len(text.vocab),), jnp.uint8),
      }
    return self._data
