"""A real meta-training run on a 2-core CPU: HierarchicalLOpt, cheap suite.

Command (on CPU the process makes one JAX device per core and shards the
population over them, the fast way on a multi-core CPU; see
bench/meta_throughput.py, part "cpu_layout"):
  uv run lopt meta-train --config configs/small_cpu.py \\
      --workdir ~/lopt_runs/small_cpu

Variants, combinable with commas (e.g. ``configs/small_cpu.py:pes,long``):
  pes    persistent ES instead of truncated ES (unbiased over truncations;
         higher variance, so 4x the population);
  long   50-step truncations of runs of 500-5000 steps (less short-horizon
         bias, fewer outer steps per hour);
  end    end-weighted meta-loss (later steps of each inner run count more);
  valid  meta-loss on validation batches instead of training batches;
  smoke  a few outer steps on two signature groups, to check the setup.

Expected runtime: under 2 hours on 2 idle CPU cores (about 2.5 hours with
``--config.mesh.cpu_devices=1``, one device using both cores), longer on a
busy machine. Measured here with one device: 0.30 s per outer step on
average over the 12 signature groups (0.014 s for quadratics and 2-D
functions, up to 1.7 s for the ~10k-parameter MLP/conv groups: 8 pairs x 20
steps x 2 = 320 inner steps per outer step), ~15-30 s of compilation per
group on its first step, plus evaluations and checkpoints; 30,000 outer
steps in all. One device per core ran the same outer steps 1.3-1.9x faster
(0.15 vs 0.28 s per outer step on one group; 17k vs 10k inner steps/s).

Expected outcome: the meta-loss (``meta_loss`` in WORKDIR/metrics.jsonl,
about 1.0 at the start: normalized losses of barely-moving inner runs) and
the held-out ``eval/final_loss`` (mean normalized loss of 8 test-split tasks
after 500 inner steps) fall over the first few thousand steps and then
improve slowly; theta is exported to WORKDIR/theta every 500 steps
(``learned_opt.load``). Not yet verified end to end: during development only
the first 300 outer steps were run (no skipped steps, meta-loss ~1.0).
Resuming after an interruption: re-run the command.
"""

import ml_collections

from configs import base

_VARIANTS = {
  "pes": {"estimator.name": "pes", "estimator.num_pairs": 32},
  "long": {
    "estimator.unroll_length": 50,
    "estimator.min_horizon": 500,
    "estimator.max_horizon": 5000,
    "outer.num_steps": 12_000,
  },
  "end": {"estimator.meta_loss_weighting": "end"},
  "valid": {"estimator.meta_loss_split": "valid"},
  "smoke": base.smoke,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The small CPU config; ``arg`` is a comma-separated list of variants."""
  c = base.base()
  # The default family mix, restricted to signatures of <= 20k parameters
  # (about 1-2 ms per inner step here) and to the 12 largest groups.
  c.suite.num_specs = 400
  c.suite.max_params = 20_000
  c.suite.max_groups = 12

  c.estimator.num_pairs = 8
  c.estimator.min_horizon = 200
  c.estimator.max_horizon = 2000

  c.outer.num_steps = 30_000
  c.outer.learning_rate = 2e-3
  c.outer.warmup_steps = 200

  c.eval.every = 500
  c.eval.num_eval_tasks = 8
  c.eval.num_steps = 500
  c.log.every = 20

  base.apply_variants(c, arg, _VARIANTS, "small_cpu")
  return c
