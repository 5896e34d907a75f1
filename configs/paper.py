"""The paper's scale: thousands of tasks, large populations, many hosts.

Metz et al. 2020 ("Tasks, stability, architecture, and compute") trained
the hierarchical optimizer on a TaskSet-like suite of thousands of tasks with
large ES populations spread over many machines. Here that is one
``jax.distributed`` job: every host runs the same command, the population
axis is sharded over all devices of all hosts, and checkpoints are written
by all processes together.

Command (on every host; the coordinator is host 0):
  JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i \\
  uv run lopt meta-train --config configs/paper.py --workdir /shared/lopt_paper
(on TPU pods, Slurm or Open MPI, ``jax.distributed.initialize`` finds the
cluster itself and the variables can be left out). The workdir must be on a
filesystem all hosts share.

Expected runtime: weeks of a pod slice (e.g. 64-256 accelerators) for
200,000 outer steps with 1,024 antithetic pairs per step.

Expected outcome: a hierarchical optimizer that generalizes across the suite
and beyond it (the paper's headline: it beats tuned Adam on most held-out
TaskSet tasks and stays stable far past its training horizons).
``estimator.num_pairs`` (the population) must be a multiple of the total device count.
The ``smoke`` arg shrinks everything to check a multi-host setup quickly.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper-scale config; ``arg="smoke"`` shrinks it."""
  c = base.base()
  c.suite.num_specs = 6000

  c.estimator.name = "pes"
  c.estimator.num_pairs = 1024
  c.estimator.min_horizon = 200
  c.estimator.max_horizon = 20_000
  c.estimator.meta_loss_weighting = "end"

  c.outer.num_steps = 200_000
  c.outer.learning_rate = 3e-4
  c.outer.warmup_steps = 2000
  c.outer.final_lr_fraction = 0.05
  c.outer.clip_norm = 10.0

  c.eval.every = 2000
  c.eval.num_eval_tasks = 64
  c.eval.num_steps = 10_000

  c.checkpoint.keep = 5
  c.log.every = 100
  c.mesh.distributed = True

  smoke = {
    "estimator.num_pairs": 16,
    "estimator.max_horizon": 2000,
    "mesh.distributed": False,  # still joins hosts given the JAX_* env vars
  }
  base.apply_variants(
    c, arg, {"smoke": lambda c: base.smoke(c, overrides=smoke)}, "paper"
  )
  return c
