"""What a meta-training run is made of, built from its config.

The learned optimizer and its initial theta (random, or warm-started from a
trained optimizer), the outer optimizer, and the train and held-out tasks.
Each function reads one section of ``config.Config`` and returns plain
values; ``train.run`` calls them in order. Everything here fails, naming the
field, before any compute.
"""

from typing import Any

import jax
import optax

import learned_opt
from learned_opt import warm_start
from meta_train import config as config_lib
from meta_train import estimators
from meta_train import mesh as mesh_lib
from meta_train.estimators import restrict
from meta_train.evaluation import resolve
import task_suite


def make_lopt(cfg: config_lib.LOptConfig) -> learned_opt.LearnedOptimizer:
  """The learned optimizer named by the config."""
  return config_lib.lopt_class(cfg.name)(**cfg.kwargs)


def initial_theta_fn(lopt: learned_opt.LearnedOptimizer, init_from: str):
  """``key -> theta``: ``lopt.init``, or a warm start from ``init_from``.

  The source is loaded (and checked against ``lopt``) here, before any
  compute, so a wrong ``config.lopt.init_from`` fails early.
  """
  if not init_from:
    return lopt.init
  try:
    found = resolve.resolve(init_from, learned_only=True)
    source, source_theta = found.lopt, found.theta
    # Checks compatibility now, on abstract values.
    jax.eval_shape(
      lambda k: warm_start.warm_start_theta(lopt, k, source, source_theta),
      jax.random.key(0),
    )
  except (FileNotFoundError, ValueError) as e:
    raise config_lib.ConfigError(f"config.lopt.init_from: {e}") from None
  return lambda key: warm_start.warm_start_theta(
    lopt, key, source, source_theta
  )


def make_estimator(
  lopt: learned_opt.LearnedOptimizer, cfg: config_lib.Config, num_devices: int
) -> estimators.Estimator:
  """The meta-gradient estimator, over ``cfg.lopt.trainable`` if set."""
  try:
    return estimators.make_estimator(
      lopt, cfg.estimator, num_devices, trainable=cfg.lopt.trainable
    )
  except ValueError as e:
    if not cfg.lopt.trainable:
      raise
    raise config_lib.ConfigError(f"config.lopt.trainable: {e}") from None


def freeze_untrainable(
  tx: optax.GradientTransformationExtraArgs,
  lopt: learned_opt.LearnedOptimizer,
  trainable: tuple[str, ...],
) -> optax.GradientTransformationExtraArgs:
  """``tx`` with zero updates outside ``trainable`` (unchanged if empty).

  The restricted estimator's meta-gradient is already zero there; this
  keeps weight decay or a learned outer optimizer from moving them.
  """
  if not trainable:
    return tx
  theta_shape = jax.eval_shape(lopt.init, jax.random.key(0))
  mask = restrict.trainable_mask(theta_shape, trainable)
  frozen = jax.tree.map(lambda m: not m, mask)
  return optax.chain(tx, optax.masked(optax.set_to_zero(), frozen))


def make_outer_optimizer(
  cfg: config_lib.OuterConfig,
) -> optax.GradientTransformationExtraArgs:
  """The outer optimizer: a baseline by name, or a trained learned one."""
  if cfg.optimizer == "learned":
    lopt, theta, _ = learned_opt.load(cfg.learned_path)
    return lopt.optimizer(theta)
  schedule = {"schedule": "constant", "warmup_steps": cfg.warmup_steps}
  if cfg.schedule == "cosine":
    schedule.update(
      schedule="cosine",
      decay_steps=max(cfg.num_steps, cfg.warmup_steps + 1),
      final_lr_scale=cfg.final_lr_fraction,
    )
  return learned_opt.baseline(
    cfg.optimizer, learning_rate=cfg.learning_rate, **schedule, **cfg.hparams
  )


def sample_train_groups(cfg: config_lib.SuiteConfig) -> list[list[Any]]:
  """Train specs grouped by signature, filtered and capped by the config."""
  aug = cfg.augment_config()
  specs = task_suite.sample_suite(
    cfg.num_specs, seed=cfg.seed, split="train", weights=_weights(cfg),
    augment_prob=aug.prob, augment_range=aug.scale_range,
    augment_kinds=aug.kinds, augment_loss_prob=aug.loss_prob,
  )  # fmt: skip
  groups = [
    g
    for g in task_suite.group_by_signature(specs).values()
    if not cfg.max_params or task_suite.num_params(g[0]) <= cfg.max_params
  ]
  if not groups:
    raise config_lib.ConfigError(
      f"no train signature has <= config.suite.max_params={cfg.max_params} "
      "parameters; raise it or config.suite.num_specs."
    )
  groups.sort(key=len, reverse=True)  # stable: ties keep signature order
  groups = groups[: cfg.max_groups or None]
  for family, count in cfg.extra_counts().items():
    extra = task_suite.sample_suite(
      count, seed=cfg.seed, split="train", weights={family: 1.0}
    )
    groups += list(task_suite.group_by_signature(extra).values())
  return groups


def sample_test_specs(cfg: config_lib.SuiteConfig, num: int) -> list[Any]:
  """Held-out (test-split) specs passing the same filters as training.

  Raises:
    ValueError: if no test-split spec passes them.
  """
  for pool in (20 * num, 4 * num, num):  # small families run out of specs
    try:
      specs = task_suite.sample_suite(
        pool, seed=cfg.seed, split="test", weights=_weights(cfg)
      )
      break
    except ValueError:
      specs = []
  if cfg.max_params:
    specs = [s for s in specs if task_suite.num_params(s) <= cfg.max_params]
  if not specs:
    raise ValueError(
      "no test-split task passes config.suite's filters (families, "
      f"max_params={cfg.max_params}) for evaluation; relax them or set "
      "config.eval.every=0."
    )
  return specs[:num]


def _weights(cfg: config_lib.SuiteConfig) -> dict[str, float] | None:
  """Listed families with equal weights; none listed: the default mix.

  Raises:
    ConfigError: for a family name not in the registry (checked now, after
      the config file ran, so families it registered count).
  """
  unknown = [f for f in cfg.families if f not in task_suite.registry.names()]
  if unknown:
    raise config_lib.ConfigError(
      f"config.suite.families: unknown famil{'ies' if len(unknown) > 1 else 'y'}"
      f" {', '.join(map(repr, unknown))}; valid families: "
      f"{', '.join(task_suite.registry.names())}"
    )
  return {f: 1.0 for f in cfg.families} if cfg.families else None


def stack_groups(groups, sharding) -> list[Any]:
  """One stacked task per signature group, placed on the mesh."""
  return [
    mesh_lib.put(
      task_suite.stack_tasks([task_suite.get_task(s) for s in g]), sharding
    )
    for g in groups
  ]
