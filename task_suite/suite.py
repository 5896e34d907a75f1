"""Deterministic suites of sampled task specs, split into train and test.

A suite is a stream of draws: draw ``i`` of seed ``s`` picks a family (by the
family weights) and a PRNG key, both from ``sha256(s, i)``, and the family
samples a spec from the key. So a suite is the same in every process, with
no dependence on Python's ``hash`` or on global RNG state.

Each spec belongs to exactly one split, decided by a hash of its name alone
(``TEST_FRACTION`` of all specs are "test"). ``sample_suite`` keeps the draws
of the requested split and skips duplicates, so the train and test lists of
any sizes, seeds and weights never share a spec.

With ``augment_prob > 0`` each drawn spec is wrapped in an
``augment.AugmentedSpec``, augmented with that probability from its own hash
stream (``AugmentConfig``): the inner specs are exactly the suite drawn
without augmentation.

Example:
  >>> specs = sample_suite(100, seed=0, split="train")
  >>> groups = group_by_signature(specs)  # {signature: [spec, ...]}
  >>> tasks = [get_task(s) for s in groups[next(iter(groups))]]
"""

import bisect
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import functools
import hashlib
import itertools
import re
from typing import Any

import jax
import numpy as np

from task_suite import augment, base, registry

SPLITS = ("train", "test")
TEST_FRACTION = 0.1

# A broad mix: real-data families dominate; analytic ones keep the suite
# cheap on average and cover extreme curvature and noise.
DEFAULT_WEIGHTS = {
  "mlp": 0.2,
  "conv": 0.12,
  "rnn_lm": 0.12,
  "vae": 0.08,
  "mlp_ae": 0.08,
  "quadratic": 0.15,
  "test_functions": 0.08,
  "regression": 0.17,
}

_NAME_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\((.*)\)\s*$")


def _hash_int(text: str) -> int:
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def split_of(spec: base.TaskSpec | str) -> str:
  """The split (``"train"`` or ``"test"``) a spec belongs to, by its name.

  An augmented spec belongs to the split of its inner spec.
  """
  name = spec if isinstance(spec, str) else spec.name
  name, _ = augment.split_name(name)
  return "test" if _hash_int(name) < TEST_FRACTION * 2**64 else "train"


def resolve_weights(
  weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
  """Family weights normalized to sum 1, over registered families only.

  Args:
    weights: family name -> non-negative weight; ``None`` for the default
      mix (restricted to the registered families).

  Raises:
    ValueError: on an unknown family, a negative or non-finite weight, or
      weights that sum to zero.
  """
  if weights is None:
    weights = {
      n: w for n, w in DEFAULT_WEIGHTS.items() if n in registry.FAMILIES
    }
  for name, w in weights.items():
    registry.get_family(name)  # raises with the valid names
    if not np.isfinite(w) or w < 0:
      raise ValueError(f"weight of family {name!r} must be >= 0, got {w}")
  total = sum(weights.values())
  if total <= 0:
    raise ValueError(f"family weights must not all be zero: {dict(weights)}")
  return {n: w / total for n, w in weights.items() if w > 0}


def _draw(seed: int, index: int) -> tuple[float, np.ndarray]:
  """A uniform for the family choice and a raw key for the family sampler.

  The key is a legacy raw ``uint32[2]`` key held in numpy: families sample
  specs on the host, so this avoids two device round trips per draw (~0.5
  ms, which made the default suite take ~13 s instead of ~1 s).
  """
  digest = hashlib.sha256(f"suite:{seed}:{index}".encode()).digest()
  u = int.from_bytes(digest[:8], "little") / 2**64
  return u, np.frombuffer(digest[8:16], dtype=np.uint32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """How ``sample_suite`` augments the specs it draws (``task_suite.augment``).

  Attributes:
    prob: probability that a drawn spec is augmented. 0 (the default)
      leaves the suite exactly as without augmentation. Above 0, every
      spec is wrapped: those not augmented get ``augment.IDENTITY``, so an
      augmented suite has as many signatures (compilations) as a plain one.
    scale_range: ``(low, high)`` of the log-uniform weight and loss scales.
    kinds: the weight-scale kinds drawn from, uniformly (``augment.KINDS``).
    loss_prob: probability that an augmented spec also scales its loss.
  """

  prob: float = 0.0
  scale_range: tuple[float, float] = augment.MAX_RANGE
  kinds: tuple[str, ...] = ("global", "per_tensor", "per_param")
  loss_prob: float = 0.5

  def __post_init__(self):
    for name in ("prob", "loss_prob"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"augment {name} must be in [0, 1]")
    if not self.kinds or any(k not in augment.KINDS for k in self.kinds):
      raise ValueError(
        f"augment kinds must be a non-empty subset of {augment.KINDS}, got "
        f"{self.kinds}"
      )
    augment.Augmentation(low=self.scale_range[0], high=self.scale_range[1])

  def draw(self, seed: int, index: int) -> augment.Augmentation:
    """The augmentation of draw ``index`` of suite ``seed``.

    Its own hash stream, so the drawn specs do not depend on it.
    """
    digest = hashlib.sha256(f"suite:{seed}:{index}:augment".encode()).digest()
    u_apply, u_kind, u_loss = (
      int.from_bytes(digest[i : i + 8], "little") / 2**64 for i in (0, 8, 16)
    )
    if u_apply >= self.prob:
      return augment.IDENTITY
    return augment.Augmentation(
      kind=self.kinds[min(int(u_kind * len(self.kinds)), len(self.kinds) - 1)],
      loss_scale=u_loss < self.loss_prob,
      seed=int.from_bytes(digest[24:28], "little") >> 1,
      low=float(self.scale_range[0]),
      high=float(self.scale_range[1]),
    )


def sample_suite(
  num_tasks: int,
  seed: int = 0,
  split: str = "train",
  weights: Mapping[str, float] | None = None,
  *,
  augment_prob: float = 0.0,
  augment_range: tuple[float, float] = augment.MAX_RANGE,
  augment_kinds: Sequence[str] = ("global", "per_tensor", "per_param"),
  augment_loss_prob: float = 0.5,
) -> list[base.TaskSpec]:
  """A deterministic list of distinct task specs of one split.

  Args:
    num_tasks: number of specs.
    seed: selects the stream of draws.
    split: ``"train"`` (meta-training) or ``"test"`` (held out).
    weights: family name -> weight (default ``DEFAULT_WEIGHTS``). Other
      weights give another stream of draws (not a re-weighting of the same
      specs); the split of each spec does not depend on them.
    augment_prob: probability that a spec is augmented (``AugmentConfig``);
      0 gives exactly the specs of a suite without augmentation.
    augment_range: ``(low, high)`` of the log-uniform scales.
    augment_kinds: weight-scale kinds to draw from (``augment.KINDS``).
    augment_loss_prob: probability that an augmented spec scales its loss.

  Returns:
    ``num_tasks`` distinct specs, all of ``split``.

  Raises:
    ValueError: on a bad split, count, weights or augmentation setting, or
      if the families cannot supply that many distinct specs.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if not isinstance(num_tasks, int) or num_tasks < 0:
    raise ValueError(f"num_tasks must be an int >= 0, got {num_tasks!r}")
  augmenter = AugmentConfig(
    augment_prob, tuple(augment_range), tuple(augment_kinds), augment_loss_prob
  )
  probs = resolve_weights(weights)
  names = list(probs)
  cumulative = list(itertools.accumulate(probs[n] for n in names))
  fraction = TEST_FRACTION if split == "test" else 1 - TEST_FRACTION
  max_draws = int(20 * num_tasks / fraction) + 1000
  specs, seen = [], set()
  for index in range(max_draws):
    if len(specs) == num_tasks:
      return specs
    u, key = _draw(seed, index)
    name = names[min(bisect.bisect_right(cumulative, u), len(names) - 1)]
    spec = registry.get_family(name).sample(key)
    spec_name = spec.name
    if spec_name in seen or split_of(spec_name) != split:
      continue
    seen.add(spec_name)
    if augmenter.prob > 0:
      spec = augment.AugmentedSpec(spec, augmenter.draw(seed, index))
    specs.append(spec)
  if len(specs) == num_tasks:
    return specs
  raise ValueError(
    f"found only {len(specs)} distinct {split} specs in {max_draws} draws "
    f"with weights {probs}; ask for fewer tasks or weight more families."
  )


def parse_name(name: str) -> base.TaskSpec:
  """Parses a spec name ``family(static;dynamic)`` back into its spec.

  A name ending in ``+augment(...)`` gives an ``augment.AugmentedSpec``.

  Raises:
    ValueError: if the name is malformed, the family unknown (the message
      lists valid families) or a field missing or bad.
  """
  inner_name, augmentation = augment.split_name(name)
  if augmentation is not None:
    return augment.AugmentedSpec(
      parse_name(inner_name), augment.parse_augmentation(augmentation)
    )
  match = _NAME_RE.match(name)
  if not match:
    raise ValueError(
      f"malformed task name {name!r}; expected family(k=v,...;k=v,...), "
      "e.g. one printed by `lopt tasks sample`"
    )
  family = registry.get_family(match.group(1))
  return base.parse_spec_fields(family.spec_type, match.group(2))


def get_task(spec_or_name: base.TaskSpec | str) -> base.Task:
  """Builds the task of a spec or of a spec name (memoized per spec)."""
  spec = (
    parse_name(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
  )
  if not isinstance(spec, base.TaskSpec):
    raise TypeError(
      f"get_task needs a TaskSpec or a name string, got {type(spec).__name__}"
    )
  if isinstance(spec, augment.AugmentedSpec):
    return augment.augment_task(
      get_task(spec.task), spec.augmentation, spec.signature
    )
  return registry.get_family(spec.family).task(spec)


def group_by_signature(
  specs: Iterable[base.TaskSpec],
) -> dict[tuple[Any, ...], list[base.TaskSpec]]:
  """Groups specs by static signature, for one compilation per group.

  Groups are ordered by the signature's repr (the same in every process);
  within a group the input order is kept.
  """
  groups: dict[tuple[Any, ...], list[base.TaskSpec]] = {}
  for spec in specs:
    groups.setdefault(spec.signature, []).append(spec)
  return {sig: groups[sig] for sig in sorted(groups, key=repr)}


def num_params(spec: base.TaskSpec) -> int:
  """Number of inner parameters of a spec's task (shapes only, no compute).

  The count depends only on the static signature, so it is computed once per
  signature, however many specs share it.
  """
  return _num_params_of_signature(_SignatureKey(spec))


class _SignatureKey:
  """Carries a spec into the cache below, hashing as its signature only."""

  def __init__(self, spec: base.TaskSpec):
    self.spec = spec

  def __hash__(self) -> int:
    return hash(self.spec.signature)

  def __eq__(self, other) -> bool:
    return self.spec.signature == other.spec.signature


@functools.cache
def _num_params_of_signature(key: _SignatureKey) -> int:
  task = get_task(key.spec)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
