"""Evaluation: train tasks with any optimizer, compare, report.

Modules:
  ``rollout``: the inner-training loops (vectorized over seeds and
    learning-rate grids, with held-out checkpoints; the demo's plain scan;
    meta-training's held-out evaluator), all built on one step loop.
  ``resolve``: a shipped name, a checkpoint directory or a baseline name
    -> an optimizer (``resolve.resolve``), and the optimizer factories.
  ``report``, ``plots``: win rates, loss ratios, markdown, JSON and PNGs.
"""
