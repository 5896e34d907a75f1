"""Builds a shipped checkpoint that is another one with changed options.

Each entry of ``SHIPPED`` is a checkpoint of ``checkpoints/`` made of the
theta of its ``base`` (no further meta-training) with some step-adaptation
options changed. REPORT_SEED0 and REPORT_SEED1 are the output folders of

  uv run lopt evaluate --optimizer <a copy> --split test --num-tasks 100 \
      --max-params 11000 --steps 1000 --seeds 2 --horizon-multiple 2 \
      --seed {0,1} --out REPORT_SEED{0,1}

where the copy comes from ``default_variant.py DIR --base BASE OPTION=VALUE
...`` with the entry's base and options (same theta and options). Usage:

  uv run python campaigns/step_adaptation/ship_default.py NAME \
      REPORT_SEED0 REPORT_SEED1 [--evaluation-only]

``--evaluation-only`` replaces the evaluation of an existing checkpoint
(``EVALUATION_T1000*.md``, the scatter plot and the manifest's
``evaluation``) and leaves its weights as they are (the checkpoint writer
names its files at random, so rewriting them would churn the repository).
"""

import dataclasses
import json
import pathlib
import shutil
import sys
from typing import NamedTuple

from learned_opt import pretrained


class Shipped(NamedTuple):
  # The shipped checkpoint whose theta and other options it keeps, or a
  # theta exported by ``lopt meta-train`` (a folder of the repository).
  base: str
  options: dict  # what changes from base
  notes: str  # the manifest's notes


_WEIGHTS = (
  "The weights of hierarchical_small_cpu (4,500 outer ES steps; see its "
  "manifest), unchanged, "
)
_HELD_OUT = (
  "on the held-out test split of suite seeds 0 and 1 at T=1000 "
  "(EVALUATION_T1000.md, EVALUATION_T1000_seed1.md)"
)

SHIPPED = {
  "hierarchical_small_cpu_adaptive_memory": Shipped(
    base="hierarchical_small_cpu_adaptive_x2",
    options={
      "step_adaptation_memory": 0.95,
      "step_adaptation_final_floor": -5.0,
      "step_adaptation_anneal_start": 0.75,
    },
    notes=_WEIGHTS + "with the options of hierarchical_small_cpu_adaptive_x2 "
    "(step_adaptation=0.5, floor -2, step_mult=2e-3) plus "
    "step_adaptation_memory=0.95 (the hypergradient cosine is taken against "
    "a trace of past updates) and step_adaptation_final_floor=-5 (in a run "
    "whose num_steps is given, the floor falls from -2 to -5 over its last "
    "quarter). No meta-training. Chosen on 56 train-split tasks at T=500 "
    "(32 wins against tuned Adam where adaptive_x2 won 24; see "
    "campaigns/step_adaptation/default_variant.py), then compared with "
    "adaptive_x2 " + _HELD_OUT + " once evaluations reported the expected "
    "loss of the noisy quadratics and 2-d test functions. Built by "
    "campaigns/step_adaptation/ship_default.py.",
  ),
  "hierarchical_small_cpu_adaptive_rate0.1": Shipped(
    base="hierarchical_small_cpu_adaptive_memory",
    options={"step_adaptation": 0.1},
    notes=_WEIGHTS
    + "with the options of hierarchical_small_cpu_adaptive_memory except "
    "the adaptation's rate: step_adaptation=0.1 instead of 0.5 (the rate "
    "was chosen when the cosine was a single step's; against the trace of "
    "updates it is larger, and 0.5 let the steps grow 3-10x in 10 steps and "
    "kill deep ReLU autoencoders). No meta-training. Chosen among 0.05, "
    "0.1, 0.2, 0.3 and 0.5 on the 56 train-split tasks at T=500 (39, 42, "
    "34, 35 and 31 wins against tuned Adam; see "
    "campaigns/step_adaptation/rate.md), then compared with "
    "adaptive_memory " + _HELD_OUT + ". Built by "
    "campaigns/step_adaptation/ship_default.py.",
  ),
  "hierarchical_small_cpu_adaptive_ref0.1": Shipped(
    base="hierarchical_small_cpu_adaptive_rate0.1",
    options={
      "step_adaptation_floor": -1.0,
      "step_adaptation_reference_rms": 0.1,
    },
    notes=_WEIGHTS
    + "with the options of hierarchical_small_cpu_adaptive_rate0.1 plus "
    "two: the adaptation's floor at -1 instead of -2 (it still falls to -5 "
    "over the last quarter of a run of known length), and "
    "step_adaptation_reference_rms=0.1 (a model whose parameters' RMS at "
    "init is below 0.1 takes steps smaller by that ratio, so its steps "
    "follow a reparameterization of the weights down as the adaptation "
    "follows it up). No meta-training. The floor was chosen on the 56 "
    "train-split tasks at T=500 (45 wins against tuned Adam where -2 won "
    "42; campaigns/step_adaptation/rate.md); the reference RMS is the "
    "smallest of 0.03, 0.05 and 0.1 that trains the Fashion-MNIST MLP of "
    "tests/learned_opt/test_scale_equivariance.py at s = 1e2 (44 of the 56 "
    "train-split tasks; campaigns/step_adaptation/reference_rms.md). Then "
    "compared with adaptive_rate0.1 " + _HELD_OUT + ". Built by "
    "campaigns/step_adaptation/ship_default.py.",
  ),
  "hierarchical_width8_cpu": Shipped(
    base="campaigns/scale_width8/thetas/step19400",
    options={"step_adaptation_deep_floor": -15.0},
    notes="Meta-trained: the width-8 campaign's theta at outer step 19,400 "
    "(configs/scale_width8.py, campaigns/scale_width8/README.md): the "
    "default's scale-aware step rule (step adaptation at rate 0.1 over a "
    "trace of updates, floor -1 falling to -5 over the last quarter of a "
    "run of known length, reference RMS 0.1) with a per-parameter MLP of "
    "width 8: 6,000 ES steps from scratch (the design ablation's arm), "
    "9,200 more on the 16 largest signature groups, then 10,200 on all 33 "
    "groups of <= 11k parameters (outer_steps counts the campaign's 19,400, "
    "not the ablation's 6,000 before them). Shipped with one option "
    "changed from its meta-training: step_adaptation_deep_floor=-15 (a tensor whose traced cosine shows a "
    "consistent overshoot may shrink its steps below the floor, so exact "
    "problems converge). Chosen on train-split tasks at T=1000 (40 2-d "
    "test functions: geometric-mean final loss 0.80x, the same 25 wins "
    "against tuned Adam; 24 regression, autoencoder and quadratic tasks: 22 "
    "moved by less than 1%), then evaluated " + _HELD_OUT + ". Built by "
    "campaigns/step_adaptation/ship_default.py.",
  ),
}


def _load_base(base: str):
  """``(lopt, theta, info)`` of a shipped name or an exported theta."""
  folder = pathlib.Path(__file__).resolve().parents[2] / base
  lopt, theta, info = pretrained.load_any(folder if folder.is_dir() else base)
  if "meta_train_step" in info:  # the metadata of a meta-training export
    config = info["config"]
    info = {
      "config": config,
      "outer_steps": info["meta_train_step"],
      "suite_seed": config["suite"]["seed"],
    }
  return lopt, theta, info


def _evaluation_entry(reports) -> dict:
  """The manifest's ``evaluation``: the seed-0 report's summary."""
  summary = json.loads((reports[0] / "report.json").read_text())
  return {k: summary[k] for k in ("meta", "horizons", "drift")}


def _write_evaluation(out: pathlib.Path, name: str, reports) -> None:
  """The EVALUATION files and the scatter plot, into the checkpoint."""
  label = _evaluation_entry(reports)["meta"]["optimizer"]  # the copy's name
  for report, file_name in zip(
    reports, ("EVALUATION_T1000", "EVALUATION_T1000_seed1")
  ):
    text = (report / "report.md").read_text().replace(label, name)
    (out / f"{file_name}.md").write_text(text)
  shutil.copy(reports[0] / "scatter.png", out / "evaluation_scatter.png")


def main(
  name: str, report_seed0: str, report_seed1: str, evaluation_only=False
) -> None:
  if name not in SHIPPED:
    sys.exit(f"unknown name {name!r}; expected one of {sorted(SHIPPED)}")
  reports = [pathlib.Path(report_seed0), pathlib.Path(report_seed1)]
  out = pretrained.checkpoints_root() / name
  if evaluation_only:
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["evaluation"] = _evaluation_entry(reports)
    _write_evaluation(out, name, reports)
    # As pretrained.save_pretrained writes it.
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    print("rewrote the evaluation of", out)
    return
  entry = SHIPPED[name]
  lopt, theta, info = _load_base(entry.base)
  lopt = dataclasses.replace(lopt, **entry.options)
  pretrained.save_pretrained(
    out,
    lopt,
    theta,
    config=info["config"],
    outer_steps=info["outer_steps"],
    suite_seed=info["suite_seed"],
    evaluation=_evaluation_entry(reports),
    notes=entry.notes,
  )
  _write_evaluation(out, name, reports)
  print("wrote", out)


if __name__ == "__main__":
  args = [a for a in sys.argv[1:] if a != "--evaluation-only"]
  if len(args) != 3:
    sys.exit(__doc__)
  main(*args, evaluation_only="--evaluation-only" in sys.argv[1:])
