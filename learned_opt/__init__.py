"""Learned optimizers (hierarchical LSTM+MLP, per-parameter MLP) and baselines.

Every optimizer is used through optax: ``lopt.optimizer(theta)`` or
``baseline(name, ...)`` returns an ``optax.GradientTransformationExtraArgs``
whose ``update`` takes the training loss as ``value``.
"""

from learned_opt.base import (  # noqa: F401
  LearnedOptimizer,
  check_params,
  for_vmapped_instances,
)
from learned_opt.baselines import BASELINE_NAMES, baseline  # noqa: F401
from learned_opt.checkpoint import (  # noqa: F401
  CheckpointError,
  load,
  load_theta,
  save,
)
from learned_opt.hierarchical import HierarchicalLOpt  # noqa: F401
from learned_opt.mlp_lopt import MLPLOpt  # noqa: F401
from learned_opt.pretrained import (  # noqa: F401
  load_pretrained,
  load_pretrained_with_info,
)
from learned_opt.registry import ARCHITECTURES  # noqa: F401
