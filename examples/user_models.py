"""Models from outside the task suite, registered as tasks for ``lopt evaluate``.

The pretrained optimizers were meta-trained on the suite's families
(``task_suite``); a user brings other models. These are such models,
written as a user would write them (plain haiku, no suite code), to check
that the default optimizer carries over (issue 19):

  * ``user_layernorm_mlp``: a 2x96 GELU MLP with LayerNorm, Fashion-MNIST
    16x16 (the suite's MLPs have no normalization layers);
  * ``user_wide_mlp``: one ReLU layer of width 512, MNIST 8x8 (wider than
    any suite MLP);
  * ``user_attention_lm``: a one-block causal transformer (2 heads, width
    32, LayerNorm, learned positions), character-level tiny Shakespeare;
  * ``user_gru_lm``: haiku's own GRU (width 64) with a LayerNorm readout,
    character-level tiny Shakespeare (the suite's GRU is its own cell).

Run (from the repository root; ``--tasks`` takes any seed; the README's
"Models from outside the suite" has the numbers):

  uv run lopt evaluate --import examples.user_models \
      --optimizer hierarchical_width8_cpu --steps 1000 --seeds 2 \
      --horizon-multiple 2 --out runs/user_models --tasks \
      'user_layernorm_mlp(;seed=0)' 'user_wide_mlp(;seed=0)' \
      'user_attention_lm(;seed=0)' 'user_gru_lm(;seed=0)'
"""

import haiku as hk
import jax
import jax.numpy as jnp

import task_suite
from task_suite import data as datasets

IMAGE_BATCH = 64
TEXT_BATCH, SEQ_LEN = 16, 32


def _image_task(name, dataset, image_size, net_fn):
  images = datasets.load_images(dataset, image_size=image_size).arrays
  net = hk.without_apply_rng(hk.transform(net_fn))

  def init_fn(key):
    return net.init(key, jnp.zeros([1, image_size * image_size]))

  def batch_fn(key, split, arrays):
    x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
    i = jax.random.randint(key, (IMAGE_BATCH,), 0, x.shape[0])
    pixels = x[i].reshape(IMAGE_BATCH, -1).astype(jnp.float32) / 255.0
    return {"x": pixels, "y": y[i]}

  def loss_fn(params, key, batch):
    del key
    logits = net.apply(params, batch["x"])
    labels = jax.nn.one_hot(batch["y"], logits.shape[-1])
    return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))

  task_suite.register_task(
    name, init_fn, loss_fn, batch_fn, data=images, replace=True
  )


def _layernorm_mlp(x):
  for width in (96, 96):
    x = hk.Linear(width)(x)
    x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
    x = jax.nn.gelu(x)
  return hk.Linear(10)(x)


def _wide_mlp(x):
  return hk.nets.MLP([512, 10])(x)


class _CausalBlock(hk.Module):
  """Pre-LayerNorm self-attention and MLP, each residual."""

  def __call__(self, h):
    seq_len, width = h.shape[-2], h.shape[-1]
    mask = jnp.tril(jnp.ones([seq_len, seq_len], bool))[None, None]
    ln = lambda: hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)
    attention = hk.MultiHeadAttention(
      num_heads=2,
      key_size=width // 2,
      w_init=hk.initializers.VarianceScaling(1.0),
    )
    a = ln()(h)
    h = h + attention(a, a, a, mask=mask)
    m = hk.nets.MLP([4 * width, width], activation=jax.nn.gelu)
    return h + m(ln()(h))


def _attention_lm(vocab):
  def forward(tokens):
    width = 32
    h = hk.Embed(vocab, width)(tokens)
    positions = hk.get_parameter(
      "positions", [SEQ_LEN, width], init=hk.initializers.RandomNormal(0.02)
    )
    h = _CausalBlock()(h + positions[None])
    h = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(h)
    return hk.Linear(vocab)(h)

  return forward


def _gru_lm(vocab):
  def forward(tokens):
    h = hk.Embed(vocab, 16)(tokens)
    core = hk.GRU(64)
    state = core.initial_state(tokens.shape[0])
    h, _ = hk.dynamic_unroll(core, h, state, time_major=False)
    h = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(h)
    return hk.Linear(vocab)(h)

  return forward


def _text_task(name, forward_fn):
  text = datasets.load_text("tiny_shakespeare")
  vocab = len(text.vocab)
  net = hk.without_apply_rng(hk.transform(forward_fn(vocab)))

  def init_fn(key):
    return net.init(key, jnp.zeros([1, SEQ_LEN], jnp.int32))

  def batch_fn(key, split, arrays):
    tokens = arrays[split]
    starts = jax.random.randint(
      key, (TEXT_BATCH, 1), 0, tokens.shape[0] - SEQ_LEN - 1
    )
    windows = tokens[starts + jnp.arange(SEQ_LEN + 1)[None]]
    return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}

  def loss_fn(params, key, batch):
    del key
    logits = net.apply(params, batch["inputs"])
    labels = jax.nn.one_hot(batch["targets"], vocab)
    return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))

  task_suite.register_task(
    name, init_fn, loss_fn, batch_fn, data=dict(text.arrays), replace=True
  )


_image_task("user_layernorm_mlp", "fashion_mnist", 16, _layernorm_mlp)
_image_task("user_wide_mlp", "mnist", 8, _wide_mlp)
_text_task("user_attention_lm", _attention_lm)
_text_task("user_gru_lm", _gru_lm)
