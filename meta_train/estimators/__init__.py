"""Meta-gradient estimators: truncated ES, PES and truncated backprop.

Public API:
  ``EstimatorConfig``, ``Estimator``, ``make_estimator(lopt, cfg, ...)``,
  ``population_size(cfg)``, ``NAMES``.

Modules: ``base`` (the config, the ``Estimator`` pair and the name registry),
``es``, ``pes``, ``tbptt`` (one estimator each) and ``reductions`` (what they
share: meta-losses of a truncation, antithetic differences, metrics).
Add an estimator as a module with ``init`` and ``estimate`` and register it in
``base._REGISTRY``.
"""

from meta_train.estimators.base import (  # noqa: F401
  NAMES,
  Estimator,
  EstimatorConfig,
  make_estimator,
  population_size,
)
