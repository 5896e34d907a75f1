"""Self-train: the pretrained optimizer, Adam and SGD meta-train a fresh one.

Run it with ``lopt self-train`` (``meta_train/cli/self_train.py``).

Meta-training a freshly initialised learned optimizer is itself a task
(``meta_train.self_training.task``): its parameters are the fresh optimizer's
theta, its loss is the meta-loss and its gradient is the engine's
antithetic truncated-ES estimate. ``run`` trains that task with three
*outer* optimizers under the same budget and seeds (the same theta inits
and ES noise): the pretrained learned optimizer
(``--config.pretrained=NAME_OR_PATH``), Adam over a small learning-rate grid
and SGD over a small learning-rate grid, each passed the meta-loss as
``value``. The ES state (inner runs that persist across truncations) is
carried by this loop in ``OuterRunState.est_state``. It writes to ``--out``:

* ``self_train.json``: every curve (ES meta-loss per outer step, evaluation
  meta-loss every ``eval_every`` steps, per seed) and the summary;
* ``self_train.png``: the meta-loss curves;
* ``self_train.md``: the final meta-loss of the learned outer optimizer
  against the best-learning-rate Adam's, per seed, and the outer steps each
  optimizer needed to reach given meta-loss levels (fractions of the way
  from the initial to the best final evaluation meta-loss);
* ``products/{learned,adam,sgd}``: the optimizer each outer optimizer
  trained (first seed, best learning rate), for ``lopt evaluate``.
"""

import dataclasses
import functools
import json
import os
import pathlib
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import learned_opt
from meta_train import checks, outer
from meta_train.evaluation import resolve
from meta_train.self_training import report as self_train_report
from meta_train.self_training import task as self_train_task

_PROG = "lopt self-train"  # its progress lines name the command
# Fixed stream indices under a run's key.
_THETA, _EST_INIT, _STEPS = range(3)
_EVAL_STREAM = 1_000_003


# ------------------------------------------------------------ outer loop


class OuterRunState(NamedTuple):
  """One self-training run (leading ``[runs]`` axis when vectorized)."""

  theta: Any  # the fresh optimizer's meta-parameters
  opt_state: Any  # the outer optimizer's state
  est_state: Any  # ES inner runs, leaves [pairs, ...]
  step: jax.Array  # [] int32, outer steps done
  num_skipped: jax.Array  # [] int32, steps skipped for non-finite values


def outer_step(task, tx, clip_norm, run_key, state: OuterRunState):
  """One outer step of one run: ``outer.make_outer_step`` on the task's ES.

  Returns:
    ``(state, (meta_loss, skipped))``.
  """

  def estimate(theta, est_state, key):  # metrics["meta_loss"] is the loss
    _, grad, est_state, metrics = task.estimate(theta, est_state, key)
    return grad, est_state, metrics

  key = jax.random.fold_in(jax.random.fold_in(run_key, _STEPS), state.step)
  step = outer.make_outer_step(estimate, tx, clip_norm)
  theta, opt_state, est_state, metrics = step(
    state.theta, state.opt_state, state.est_state, key
  )
  skipped = metrics["skipped"]
  state = OuterRunState(
    theta,
    opt_state,
    est_state,
    state.step + 1,
    state.num_skipped + skipped.astype(jnp.int32),
  )
  return state, (metrics["meta_loss"], skipped)


@jax.jit
def init_seeds(task, keys) -> tuple[Any, Any]:
  """Fresh thetas and ES states ``[S]``, one per seed key."""

  def one(key):
    theta = task.init(jax.random.fold_in(key, _THETA))
    return theta, task.init_state(theta, jax.random.fold_in(key, _EST_INIT))

  return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("factory", "hp_axis"))
def init_outer(factory, hparams, thetas, *, hp_axis) -> Any:
  """Outer-optimizer states of thetas ``[R]``."""
  return jax.vmap(lambda hp, th: factory(hp).init(th), in_axes=(hp_axis, 0))(
    hparams, thetas
  )


def init_runs(task, factory, hparams, seed_keys, *, hp_axis, grid: int):
  """Initial states of ``grid * S`` runs, grid-major (run ``g S + s``).

  Every grid value starts from the same theta and ES state per seed
  (common random numbers). Theta and the ES state are compiled once for
  all outer optimizers; only the small outer-optimizer init is not.

  Args:
    task: the self-training task.
    factory: builds the outer optimizer from one grid value.
    hparams: ``[grid * S]`` grid values (``hp_axis=0``), or one shared
      value (``hp_axis=None``).
    seed_keys: ``[S]`` run keys.
    hp_axis: 0 or None, as for ``jax.vmap``.
    grid: number of grid values.

  Returns:
    ``OuterRunState`` with leading ``[grid * S]``.
  """
  thetas, est_states = init_seeds(task, seed_keys)
  tile = lambda x: jnp.tile(x, (grid,) + (1,) * (x.ndim - 1))
  thetas, est_states = jax.tree.map(tile, (thetas, est_states))
  num = grid * seed_keys.shape[0]
  return OuterRunState(
    thetas,
    init_outer(factory, hparams, thetas, hp_axis=hp_axis),
    est_states,
    jnp.zeros([num], jnp.int32),
    jnp.zeros([num], jnp.int32),
  )


@functools.partial(
  jax.jit, static_argnames=("factory", "hp_axis", "num_steps", "clip_norm")
)
def advance_runs(
  task, factory, hparams, keys, states, *, hp_axis, num_steps, clip_norm
):
  """``num_steps`` outer steps of every run (one ``lax.scan``, vmapped).

  Returns:
    ``(states, (meta_loss [R, num_steps], skipped [R, num_steps]))``.
  """

  def one(hp, key, state):
    tx = factory(hp)
    return jax.lax.scan(
      lambda s, _: outer_step(task, tx, clip_norm, key, s),
      state,
      None,
      length=num_steps,
    )

  return jax.vmap(one, in_axes=(hp_axis, 0, 0))(hparams, keys, states)


@functools.partial(jax.jit, static_argnames=("num_runs", "num_steps"))
def evaluate_theta(task, theta, key, *, num_runs, num_steps) -> jax.Array:
  """``task.evaluate`` of one theta (one compilation serves every run)."""
  return task.evaluate(theta, key, num_runs, num_steps)


# --------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class SelfTrainConfig:
  """Settings of ``run`` (built from ``configs/self_train.py``).

  Attributes:
    spec: the self-training task.
    seed: root seed (theta inits, ES noise, evaluation); shared by every
      outer optimizer, so all see the same random numbers.
    num_seeds: independent runs per outer optimizer and learning rate.
    num_outer_steps: outer steps of every run (the budget).
    eval_every: outer steps between evaluations (must divide the budget).
    eval_runs: inner runs of each evaluation.
    eval_steps: inner steps of each evaluation run.
    clip_norm: global-norm clip of the meta-gradient (0: none), the same
      for every outer optimizer.
    pretrained: the learned outer optimizer: a shipped name or a checkpoint
      path (``learned_opt.pretrained`` or ``learned_opt.save`` format).
    adam_lrs: Adam learning-rate grid.
    sgd_lrs: SGD learning-rate grid.
    level_fractions: fractions of the way from the initial to the best
      final evaluation meta-loss that the table reports steps for.
  """

  spec: self_train_task.SelfTrainSpec = self_train_task.SelfTrainSpec()
  seed: int = 0
  num_seeds: int = 2
  num_outer_steps: int = 100
  eval_every: int = 10
  eval_runs: int = 8
  eval_steps: int = 100
  clip_norm: float = 0.0
  pretrained: str = "mlp_small_cpu"
  adam_lrs: tuple[float, ...] = (3e-2, 1e-1, 3e-1, 1.0)
  sgd_lrs: tuple[float, ...] = (1.0, 3.0, 10.0)
  level_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)

  def __post_init__(self):
    positive = ("num_seeds", "num_outer_steps", "eval_every", "eval_runs")
    checks.check_at_least(self, positive + ("eval_steps",), 1)
    divides = self.num_outer_steps % self.eval_every == 0
    allowed = f"a divisor of num_outer_steps={self.num_outer_steps}"
    checks.check(divides, self, "eval_every", allowed)
    for name in ("adam_lrs", "sgd_lrs"):
      ok = all(np.isfinite(lr) and lr > 0 for lr in getattr(self, name))
      checks.check(ok, self, name, "positive learning rates")
    ok = all(0 < f < 1 for f in self.level_fractions)
    checks.check(ok, self, "level_fractions", "in (0, 1)")
    checks.check(self.clip_norm >= 0, self, "clip_norm", ">= 0")


def from_config_dict(cd) -> SelfTrainConfig:
  """The typed config of an ml_collections ConfigDict (configs/self_train)."""
  d = cd.to_dict()
  spec = self_train_task.SelfTrainSpec(**d.pop("task"))
  tuples = ("adam_lrs", "sgd_lrs", "level_fractions")
  d = {k: tuple(map(float, v)) if k in tuples else v for k, v in d.items()}
  try:
    return SelfTrainConfig(spec=spec, **d)
  except ValueError as e:  # name the field as the config file does
    raise ValueError(str(e).replace("SelfTrainConfig.", "config.", 1)) from e


class Contender(NamedTuple):
  """One outer optimizer with its grid of hyperparameters."""

  kind: str  # "learned" | "adam" | "sgd"
  labels: tuple[str, ...]  # one per grid value
  factory: Any  # resolve.BaselineFactory | resolve.LearnedFactory
  hparams: Any  # [grid] LRs, or the learned optimizer's theta
  hp_axis: int | None


def contenders(
  cfg: SelfTrainConfig, outer_lopt, outer_theta, name: str
) -> list[Contender]:
  """The learned optimizer and the Adam and SGD grids."""
  out = [
    Contender(
      "learned",
      (f"learned ({name})",),
      # The outer run's length: optimizers with progress features read it.
      resolve.LearnedFactory(outer_lopt, cfg.num_outer_steps),
      outer_theta,
      None,
    )
  ]
  for kind, lrs in (("adam", cfg.adam_lrs), ("sgd", cfg.sgd_lrs)):
    if lrs:
      out.append(
        Contender(
          kind,
          tuple(f"{kind} lr={lr:g}" for lr in lrs),
          resolve.BaselineFactory(kind),
          jnp.asarray(lrs, jnp.float32),
          0,
        )
      )
  return out


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
  """``[num_seeds]`` run keys, shared by every outer optimizer."""
  root = jax.random.key(seed)
  return jnp.stack([jax.random.fold_in(root, s) for s in range(num_seeds)])


def grid_inputs(c: Contender, keys: jax.Array) -> tuple[Any, jax.Array]:
  """Per-run hyperparameters and keys ``[grid * S]`` (grid-major)."""
  grid = len(c.labels)
  hparams = c.hparams
  if c.hp_axis == 0:
    hparams = jnp.repeat(hparams, keys.shape[0])
  return hparams, jnp.concatenate([keys] * grid)


def _train_contender(task, c: Contender, cfg: SelfTrainConfig, progress):
  """Runs one contender's grid x seeds; returns its per-label curves."""
  grid = len(c.labels)
  keys = seed_keys(cfg.seed, cfg.num_seeds)
  hparams, run_keys = grid_inputs(c, keys)
  eval_key = jax.random.fold_in(jax.random.key(cfg.seed), _EVAL_STREAM)

  def evaluate(thetas):
    return np.asarray(
      [
        evaluate_theta(
          task,
          jax.tree.map(lambda x, r=r: x[r], thetas),
          eval_key,
          num_runs=cfg.eval_runs,
          num_steps=cfg.eval_steps,
        )
        for r in range(grid * cfg.num_seeds)
      ]
    )

  states = init_runs(
    task, c.factory, hparams, keys, hp_axis=c.hp_axis, grid=grid
  )
  evals, losses, skipped = [evaluate(states.theta)], [], []
  for _ in range(cfg.num_outer_steps // cfg.eval_every):
    states, (loss, skip) = advance_runs(
      task,
      c.factory,
      hparams,
      run_keys,
      states,
      hp_axis=c.hp_axis,
      num_steps=cfg.eval_every,
      clip_norm=cfg.clip_norm,
    )
    losses.append(np.asarray(loss))
    skipped.append(np.asarray(skip))
    evals.append(evaluate(states.theta))
    progress(c.kind, cfg.eval_every)
  shape = (grid, cfg.num_seeds, -1)
  train = np.concatenate(losses, axis=1).reshape(shape)
  ev = np.stack(evals, axis=1).reshape(shape)
  skips = np.concatenate(skipped, axis=1).reshape(shape).sum(axis=2)
  curves = {
    label: {
      "optimizer": c.kind,
      "learning_rate": None if c.hp_axis is None else float(c.hparams[i]),
      "train_meta_loss": train[i].tolist(),
      "eval_meta_loss": ev[i].tolist(),
      "num_skipped": skips[i].tolist(),
    }
    for i, label in enumerate(c.labels)
  }
  # Each label's trained theta of the first seed (run g * S).
  products = {
    label: jax.tree.map(lambda x, r=i * cfg.num_seeds: x[r], states.theta)
    for i, label in enumerate(c.labels)
  }
  return curves, products


def save_products(
  summary: dict[str, Any], products: dict[str, Any], lopt, out_dir
) -> dict[str, str]:
  """Saves the first seed's trained optimizer of each contender's best run.

  They are ``learned_opt.save`` directories (``OUT/products/learned``,
  ``.../adam``, ``.../sgd``), so ``lopt evaluate --optimizer DIR`` compares
  what each outer optimizer produced.

  Returns:
    kind -> the directory written.
  """
  written = {}
  for kind, label in summary["best"].items():
    path = pathlib.Path(out_dir) / "products" / kind
    meta = {
      "self_train_task": summary["task"],
      "outer_optimizer": label,
      "seed": 0,
      "final_eval_meta_loss": summary["runs"][label]["eval_meta_loss"][0][-1],
    }
    learned_opt.save(path, lopt, products[label], meta)
    written[kind] = str(path)
  return written


def run(cfg: SelfTrainConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
  """Self-trains with every outer optimizer; writes JSON, PNG and markdown.

  Args:
    cfg: the settings.
    out_dir: output folder (created).

  Returns:
    The summary written to ``self_train.json`` (see the module docstring).
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  source = resolve.resolve(cfg.pretrained, learned_only=True)
  outer_lopt, outer_theta = source.lopt, source.theta
  name = source.label
  if "name" not in source.info:  # not a pretrained manifest
    name = f"{cfg.pretrained} ({outer_lopt.architecture})"
  task = self_train_task.FAMILY.task(cfg.spec)
  todo = contenders(cfg, outer_lopt, outer_theta, name)
  total, done = cfg.num_outer_steps * len(todo), [0]

  def progress(kind, steps):
    done[0] += steps
    print(
      f"\r{_PROG}: {kind:<8} {done[0]}/{total} outer steps",
      end="",
      file=sys.stderr,
      flush=True,
    )

  runs, products = {}, {}
  for c in todo:
    curves, thetas = _train_contender(task, c, cfg, progress)
    runs.update(curves)
    products.update(thetas)
  print(file=sys.stderr)
  summary = self_train_report.summarize(runs, cfg)
  summary["config"] = dataclasses.asdict(cfg)
  summary["task"] = cfg.spec.name
  summary["pretrained"] = name
  summary["products"] = save_products(summary, products, task.lopt(), out_dir)
  (out_dir / "self_train.json").write_text(json.dumps(summary, indent=1))
  (out_dir / "self_train.md").write_text(self_train_report.markdown(summary))
  self_train_report.plot(summary, out_dir / "self_train.png")
  return summary
