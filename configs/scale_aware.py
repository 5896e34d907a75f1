"""The scale-aware HierarchicalLOpt campaign (issue 19), in resumable legs.

The optimizer: the paper's HierarchicalLOpt with ``step_scale="init_rms"``
(each tensor's step is relative to its RMS at the start of the run and
multiplied by a per-tensor LSTM head, so it can both shrink and grow per
task) and progress features (the fraction of the run done, so it can
anneal). It warm-starts from the shipped ``hierarchical_small_cpu``: the
new inputs read zero rows and the step head starts at zero, so at step 0 it
takes the shipped steps times ``RMS(initial tensor) * step_mult / 1e-3``
(``learned_opt.warm_start``).

Meta-training: the shipped runs' task mix (the 16 largest signature groups
of <= 11k parameters, 6 of the 8 families: no autoencoder or VAE),
antithetic truncated ES with 16 pairs, K=20, log-uniform horizons
100-2000, the linear normalized meta-loss, outer
Adam at a constant 1e-3 after a warm-up (legs can be appended without a
schedule that ends).

Variants (comma-separated, e.g. ``configs/scale_aware.py:paper``), for the
ablations at equal compute:
  paper   the paper's absolute step (no progress features), same recipe;
  log     the log meta-loss (``estimator.meta_loss_transform="log"``);
  aug     half of the train specs augmented (weights reparameterized by
          log-uniform scales in [1e-3, 1e3], losses scaled);
  aug_narrow  global and per-tensor scales in [1e-2, 1e2] only, outer
          learning rate 3e-4 (leg 2b);
  adaptive    ``step_adaptation=0.5``, floor -2 (the default optimizer's
          online step-size adaptation) inside meta-training; with the
          default variant (``init_rms``) its starting point is the shipped
          ``hierarchical_small_cpu_init_rms_adaptive``;
  default     the previous shipped default (``hierarchical_small_cpu_adaptive_ref0.1``:
          the absolute step at twice the learned size, the traced step
          adaptation at rate 0.1 with its annealed floor, the reference
          RMS) meta-trained with the adaptation in the loop, at a
          fine-tuning outer learning rate of 1e-4, end-weighted meta-loss;
          use it alone (``configs/scale_aware.py:default``) in its own
          workdir (``runs/default_ft``; it starts from the shipped theta,
          not from ``state/``). Its legs: ``campaigns/scale_aware/README.md``;
  self_train  64 train-split specs of the "self_train" family (training a
          learned optimizer) added to the mix: ~4% of the outer steps, at
          ~15 s each on 2 busy cores against ~1 s for the other groups;
  smoke   a few outer steps on two signature groups.

Measured (20 held-out test tasks of <= 11k parameters, 500 steps, 1 seed:
``lopt evaluate --optimizer DIR --split test --num-tasks 20 --max-params
11000 --steps 500 --seeds 1``; wins against per-task tuned Adam, mean
normalized final loss; tuned Adam's mean is 0.264):
  shipped hierarchical_small_cpu (absolute step)        6/20  0.329
  its warm start into init_rms, no meta-training         0/20  0.300
  the same warm start into param_rms (VeLO's rule)       0/20  2.48
  init_rms, log meta-loss, 750 outer steps               4/20  0.338
  init_rms, linear meta-loss, 1250 outer steps           see campaigns/
The in-run evaluation (4 test tasks) at 750 outer steps read 0.310 with the
log meta-loss and 0.263 with the linear one (0.254 at step 0), so the
linear meta-loss is the default. The param_rms warm start diverged on 5 of
7 MLP classifiers: steps that follow the weights' RMS and weights that
follow the steps grow each other.

Command, one leg (re-running it resumes; SIGTERM checkpoints and stops):
  export LOPT_DATA_DIR=/path/to/shared/data
  mkdir -p runs/scale_aware && cp campaigns/scale_aware/state/* \
      runs/scale_aware/            # the small state of the last leg
  timeout -s TERM 7200 nice uv run lopt meta-train \
      --config configs/scale_aware.py --workdir runs/scale_aware
and afterwards, to commit the leg's state (``meta_train/leg_state.py``:
theta, outer Adam state and step, 0.5 MB; the orbax checkpoints also hold
every inner run, 32 MB, and stay in the workdir):
  cp runs/scale_aware/{config.json,metrics.jsonl,leg_state.npz} \
      campaigns/scale_aware/state/
``campaigns/scale_aware/README.md`` records the legs and their numbers.

Expected runtime: ~5 minutes compiling, then 0.2-0.5 s per outer step on 2
CPU cores (~1,200-7,000 outer steps in a 30-45 minute leg). Expected
outcome, measured: neither campaign has moved the held-out evaluation off
its warm start. The first stopped after leg 2b (three legs in a row
without a gain); the second (``default``) ran 8,240 outer steps in two
legs: in-run evaluation 0.220 -> 0.209, but 38 wins against tuned Adam on
the 56 train-split design tasks where the default wins 44.
"""

import ml_collections

from configs import base, shipped_mlp

# The step options of the shipped defaults (checkpoints/
# hierarchical_small_cpu_adaptive_ref0.1 and hierarchical_width8_cpu, which
# adds the deep floor after meta-training): the absolute step at twice the
# learned size, the traced step adaptation at rate 0.1 with its annealed
# floor, the reference RMS.
DEFAULT_STEP = {
  "step_mult": 0.002,
  "step_adaptation": 0.1,
  "step_adaptation_floor": -1.0,
  "step_adaptation_final_floor": -5.0,
  "step_adaptation_anneal_start": 0.75,
  "step_adaptation_memory": 0.95,
  "step_adaptation_reference_rms": 0.1,
}


def _paper(c: ml_collections.ConfigDict) -> None:
  c.lopt.kwargs = ml_collections.ConfigDict({})


_VARIANTS = {
  "paper": _paper,
  "log": {"estimator.meta_loss_transform": "log"},
  "aug": {"suite.augment_prob": 0.5},
  # Leg 2b: scales the init_rms step is equivariant to (global and per
  # tensor, not per entry) over a narrower range, and the recipe's outer
  # learning rate.
  "aug_narrow": {
    "suite.augment_prob": 0.5,
    "suite.augment_range": (1e-2, 1e2),
    "suite.augment_kinds": ("global", "per_tensor"),
    "outer.learning_rate": 3e-4,
  },
  # The next campaign's candidates (not run yet): the step adaptation of
  # the default optimizer in the loop, and learned-optimizer training
  # (the "self_train" family, both presets) in the task mix.
  "adaptive": {
    "lopt.kwargs.step_adaptation": 0.5,
    "lopt.kwargs.step_adaptation_floor": -2.0,
  },
  # The previous shipped default (hierarchical_small_cpu_adaptive_ref0.1: the
  # absolute step at twice the learned size, the traced step adaptation at
  # rate 0.1 with its annealed floor, the reference RMS) meta-trained with
  # the adaptation in the loop, at a fine-tuning learning rate (the shipped
  # run ended at 5e-5 on its cosine schedule), with the end-weighted
  # meta-loss of the shipped run (the evaluation counts the final loss).
  "default": {
    "lopt.init_from": "hierarchical_small_cpu_adaptive_ref0.1",
    "lopt.kwargs": ml_collections.ConfigDict(DEFAULT_STEP),
    "outer.learning_rate": 1e-4,
    "estimator.meta_loss_weighting": "end",
  },
  "self_train": {"suite.extra_specs": ("self_train:64",)},
  # This run's specs and population, 2 of its groups, 4 outer steps.
  "smoke": lambda c: base.smoke(
    c, suite=False, evaluate=False, overrides={"suite.max_groups": 2}
  ),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The campaign config; ``arg``: comma-separated variants."""
  c = shipped_mlp.get_config()
  c.lopt.name = "hierarchical"
  c.lopt.init_from = "hierarchical_small_cpu"
  c.lopt.kwargs = ml_collections.ConfigDict(
    {"step_scale": "init_rms", "progress_features": True, "step_mult": 0.01}
  )
  c.update_from_flattened_dict(
    {
      "estimator.valid_every": 10,
      # Constant after a warm-up, so that legs can be appended.
      "outer.num_steps": 20_000,
      "outer.learning_rate": 1e-3,
      "outer.schedule": "constant",
      "outer.warmup_steps": 100,
      "eval.every": 250,
      "checkpoint.every": 50,
    }
  )
  base.apply_variants(c, arg, _VARIANTS, "scale_aware")
  return c
