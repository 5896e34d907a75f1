"""Meta-training a fresh learned optimizer, as a task family.

``SelfTrainFamily`` makes "meta-train a freshly initialised ``MLPLOpt`` by
antithetic truncated ES on a small group of inner tasks" a ``Task``: its
params are the fresh optimizer's theta, its loss is the meta-loss (mean
normalized inner training loss over a truncation) and its ``value_and_grad``
is the engine's ES estimate (``meta_train.estimators``).

Where the inner-run state lives: truncated ES needs inner runs that persist
across truncations (DESIGN.md §8), which the stateless ``Task`` API
(``value_and_grad(params, key, batch)``) cannot return. The estimator state
is therefore the task's *batch*: ``task.batch(key, split)`` starts a
population of staggered inner runs, ``value_and_grad(theta, key, batch)``
estimates from it, and a self-training loop carries the state forward with
``task.estimate(theta, state, key)``, which returns the new state too
(``meta_train.self_training.self_train`` does).

As a family of the suite ("self_train", ``FAMILY``; ``task_suite.registry``
imports this module when the name is first used) it puts "training a
learned optimizer" into the meta-training task distribution, as VeLO's task
sampler does: each inner step of such a task is one ES estimate from fresh
inner runs (its ``batch``), so it fits the stateless ``Task`` API.

Example:
  >>> family = task.SelfTrainFamily()  # or task_suite.get_family(...)
  >>> task = family.task(family.sample(jax.random.key(0)))
  >>> theta = task.init(jax.random.key(1))
  >>> state = task.init_state(theta, jax.random.key(2))
  >>> meta_loss, grad, state, metrics = task.estimate(theta, state, key)
"""

import dataclasses
import functools
import typing
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

import learned_opt
from meta_train import estimators, unroll
from meta_train.estimators import reductions
from meta_train.evaluation import rollout
from task_suite import base, registry
from task_suite.families import common


@dataclasses.dataclass(frozen=True)
class SelfTrainSpec(base.TaskSpec):
  """Meta-training a fresh ``MLPLOpt`` by truncated ES, as a task.

  Attributes:
    lopt_hidden: hidden width of the fresh learned optimizer.
    lopt_layers: its number of hidden layers.
    inner_family: task family of the inner problems (any registered one;
      "quadratic", "regression" and "test_functions" need no dataset).
    inner_static: the inner tasks' static fields as ``name:value`` pairs
      joined by ``/`` (tuples as in spec names: ``hidden:16x16``), e.g.
      ``"dim:8"`` or ``"input_dim:4/hidden:16/output_dim:1/batch_size:32"``.
    num_inner_specs: inner specs (drawn from ``seed``) stacked into the group.
    num_pairs: antithetic pairs of the ES population.
    unroll_length: inner steps per truncation.
    min_horizon: shortest inner run.
    max_horizon: longest inner run.
    std: ES perturbation std.
    seed: draws the inner specs.
  """

  family: ClassVar[str] = "self_train"
  lopt_hidden: int = base.static_field(default=8)
  lopt_layers: int = base.static_field(default=1)
  inner_family: str = base.static_field(default="quadratic")
  inner_static: str = base.static_field(default="dim:8")
  num_inner_specs: int = base.static_field(default=8)
  num_pairs: int = base.static_field(default=8)
  unroll_length: int = base.static_field(default=10)
  min_horizon: int = base.static_field(default=50)
  max_horizon: int = base.static_field(default=200)
  std: float = base.static_field(default=0.01)
  seed: int = base.dynamic_field(default=0)

  def __post_init__(self):
    for name in ("lopt_hidden", "lopt_layers", "num_inner_specs"):
      if getattr(self, name) < 1:
        raise ValueError(
          f"SelfTrainSpec.{name} must be >= 1, got {getattr(self, name)}"
        )
    registry.get_family(self.inner_family)  # lists the valid names
    parse_inner_static(self.inner_family, self.inner_static)
    self.estimator_config()  # validates the estimator sizes

  def estimator_config(self) -> estimators.EstimatorConfig:
    """The antithetic-ES settings of this spec."""
    return estimators.EstimatorConfig(
      name="es",
      num_pairs=self.num_pairs,
      unroll_length=self.unroll_length,
      std=self.std,
      min_horizon=self.min_horizon,
      max_horizon=self.max_horizon,
      valid_every=0,  # MLPLOpt has no validation-loss feature
    )

  def lopt(self) -> learned_opt.MLPLOpt:
    """The fresh learned optimizer being meta-trained."""
    return learned_opt.MLPLOpt(
      hidden_size=self.lopt_hidden, num_hidden_layers=self.lopt_layers
    )


def parse_inner_static(family_name: str, text: str) -> dict[str, Any]:
  """Parses ``inner_static`` (``"name:value/..."``) into spec field values.

  Raises:
    ValueError: naming the field if it is not a static field of the family
      or its value does not parse.
  """
  spec_type = registry.get_family(family_name).spec_type
  hints = typing.get_type_hints(spec_type)
  static = spec_type.static_names()
  out = {}
  for part in filter(None, text.split("/")):
    name, sep, value = part.partition(":")
    if not sep or name not in static:
      raise ValueError(
        f"inner_static {text!r}: {part!r} is not name:value with a static "
        f"field of {family_name} (static fields: {list(static) or 'none'})"
      )
    try:
      if hints[name] is int:
        out[name] = int(value)
      elif hints[name] is str:
        out[name] = value
      else:  # tuple[int, ...], written like spec names: 16x16, "-" = ()
        out[name] = () if value == "-" else tuple(map(int, value.split("x")))
    except ValueError:
      raise ValueError(
        f"inner_static {text!r}: bad value {value!r} for {name}"
      ) from None
  return out


def inner_specs(spec: SelfTrainSpec) -> list[base.TaskSpec]:
  """The inner specs of ``spec``: drawn from its seed, statics overridden."""
  family = registry.get_family(spec.inner_family)
  static = parse_inner_static(spec.inner_family, spec.inner_static)
  root = jax.random.key(spec.seed)
  return [
    dataclasses.replace(family.sample(jax.random.fold_in(root, i)), **static)
    for i in range(spec.num_inner_specs)
  ]


@functools.lru_cache(maxsize=32)
def _inner_template(signature: tuple[Any, ...]) -> base.Task:
  """A task of the inner signature: its class and metadata for ``replace``."""
  static = dict(signature[1:], num_inner_specs=1)
  spec = SelfTrainSpec(**static)
  # Host-side spec sampling, also when first reached inside a jit trace.
  with jax.ensure_compile_time_eval():
    return registry.get_family(spec.inner_family).task(inner_specs(spec)[0])


class SelfTrainTask(base.Task):
  """Meta-training a fresh learned optimizer: params are its theta.

  ``dynamic`` holds the spec's seed and the stacked inner task's dynamic
  values (leading ``[num_inner_specs]``); ``data`` holds its data. So the
  inner problems are jit arguments, never compile-time constants.
  """

  def spec_static(self) -> SelfTrainSpec:
    """The spec's static fields (seed 0)."""
    return SelfTrainSpec(**dict(self.signature[1:]))

  def lopt(self) -> learned_opt.MLPLOpt:
    """The fresh learned optimizer being meta-trained."""
    return self.spec_static().lopt()

  def estimator(self) -> estimators.Estimator:
    """The truncated-ES estimator of the meta-gradient."""
    return estimators.make_estimator(
      self.lopt(), self.spec_static().estimator_config()
    )

  def inner_tasks(self) -> base.Task:
    """The stacked inner task group."""
    return _inner_template(self.signature).replace(
      dynamic=self.dynamic["inner"], data=self.data["inner"]
    )

  def init(self, key: jax.Array) -> Any:
    """A fresh theta of the learned optimizer."""
    return self.lopt().init(key)

  def init_state(self, theta: Any, key: jax.Array) -> Any:
    """A population of staggered inner runs (the ES state) for ``theta``."""
    return self.estimator().init(theta, self.inner_tasks(), key)

  def estimate(self, theta: Any, state: Any, key: jax.Array):
    """One truncated-ES step from ``state``, returning the new state too.

    Returns:
      ``(meta_loss, grad, state, metrics)``: the truncation's meta-loss
      (mean over the antithetic members), the ES gradient (theta's tree),
      the carried inner runs and the estimator's metrics.
    """
    grad, state, metrics = self.estimator().estimate(
      theta, self.inner_tasks(), state, key
    )
    return metrics["meta_loss"], grad, state, metrics

  def batch(self, key: jax.Array, split: str) -> Any:
    """A fresh ES state: staggered inner runs (the loop carries its own)."""
    common.check_split(split)
    k_theta, k_state = jax.random.split(jax.random.fold_in(key, 0))
    return self.init_state(self.init(k_theta), k_state)

  def value_and_grad(self, params, key, batch):
    """Meta-loss and its ES gradient from the inner runs in ``batch``."""
    meta_loss, grad, _, _ = self.estimate(params, batch, key)
    return meta_loss, grad

  def loss(self, params, key, batch) -> jax.Array:
    """Meta-loss of one unperturbed truncation from ``batch``'s inner runs."""
    del key  # the runs carry their own data keys
    lopt = self.lopt()
    cfg = self.spec_static().estimator_config().unroll_config()
    _, out = unroll.unroll(
      lopt.optimizer,
      params,
      self.inner_tasks(),
      batch.inner,
      cfg,
      theta_axis=None,
    )
    return reductions.masked_mean(reductions.mean_loss(out), out.finite)

  def evaluate(
    self, theta: Any, key: jax.Array, num_runs: int, num_steps: int
  ) -> jax.Array:
    """Mean normalized train loss of fresh ``num_steps``-step inner runs.

    A lower-variance meta-loss than the ES truncations: full runs from
    initialisation, the same ``key`` (specs, inits, data) for every theta.
    Each run is ``rollout.train_scan``, the inner-training loop of the
    evaluations. A non-finite run counts as ``NORMALIZED_CAP``.
    """
    lopt, tasks = self.lopt(), self.inner_tasks()
    tx = lopt.optimizer(theta)
    num_inner = unroll.num_specs(tasks)

    def one_run(k):
      k_spec, k_init, k_data = jax.random.split(k, 3)
      index = jax.random.randint(k_spec, (), 0, num_inner)
      task = base.index_task(tasks, index)
      params = task.init(k_init)
      losses = rollout.train_scan(task, tx, params, k_data, num_steps)[1]
      losses = jnp.asarray(losses, jnp.float32)  # [num_steps]
      normalized = jax.vmap(task.normalize)(losses).astype(jnp.float32)
      # normalize() may cap an inf loss: check the raw losses too.
      finite = jnp.all(jnp.isfinite(losses) & jnp.isfinite(normalized))
      return jnp.where(finite, jnp.mean(normalized), common.NORMALIZED_CAP)

    return jnp.mean(jax.vmap(one_run)(jax.random.split(key, num_runs)))

  def normalize(self, loss: jax.Array) -> jax.Array:
    """The meta-loss is already a mean of normalized losses (~1 at init)."""
    return common.cap(loss)


# The statics the family samples: one signature each, the tasks of
# configs/self_train.py (8-dimensional quadratics) and
# configs/self_train_mlp.py (MLP classifiers on 8x8 images). Meta-training
# draws these with other seeds; the configs' own seeds are test-split names
# (tests/meta_train/test_self_train.py checks it), so their exact tasks are
# never trained on.
PRESETS = (
  SelfTrainSpec(),
  SelfTrainSpec(
    inner_family="mlp", inner_static="hidden:16/image_size:8/batch_size:32"
  ),
)


class SelfTrainFamily:
  """Self-training tasks: one of ``presets``' statics, the seed sampled.

  Args:
    presets: specs whose static fields (architecture, estimator, inner
      group) the samples take, drawn uniformly; ``task`` builds any spec.
  """

  name = "self_train"
  spec_type = SelfTrainSpec

  def __init__(self, presets: typing.Sequence[SelfTrainSpec] = PRESETS):
    if not presets:
      raise ValueError("SelfTrainFamily needs at least one preset spec")
    self.presets = tuple(presets)
    self._cache: dict[SelfTrainSpec, SelfTrainTask] = {}

  def sample(self, key: jax.Array) -> SelfTrainSpec:
    """A preset's statics with a seed, both drawn from ``key``."""
    rng = common.host_rng(key)
    preset = self.presets[int(rng.integers(len(self.presets)))]
    return dataclasses.replace(preset, seed=int(rng.integers(0, 2**31 - 1)))

  def task(self, spec: SelfTrainSpec) -> SelfTrainTask:
    """Builds (and memoizes) the task of ``spec``."""
    if not isinstance(spec, SelfTrainSpec):
      raise TypeError(
        f"SelfTrainFamily.task needs a SelfTrainSpec, got {spec!r}"
      )
    if spec not in self._cache:
      family = registry.get_family(spec.inner_family)
      inner = base.stack_tasks([family.task(s) for s in inner_specs(spec)])
      dynamic = {
        "seed": jnp.asarray(spec.seed, jnp.int32),
        "inner": inner.dynamic,
      }
      self._cache[spec] = SelfTrainTask(
        spec.signature, dynamic, {"inner": inner.data}
      )
    return self._cache[spec]


# The instance ``task_suite.registry`` serves as the "self_train" family.
FAMILY = SelfTrainFamily()
