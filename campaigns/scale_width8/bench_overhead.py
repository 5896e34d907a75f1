"""bench/overhead.py with leg 3's step 19,400 beside Adam and the default.

  uv run python campaigns/scale_width8/bench_overhead.py

Prints bench/overhead.py's JSON lines (medians over 9 interleaved repeats,
ratios to Adam timed in the same process) at 10k and 1M parameters for
Adam, the paper's HierarchicalLOpt, the straightforward yardstick, the
shipped default and this campaign's theta. ``bench_model`` takes its
optimizers from ``overhead.optimizers``, so this swaps in the short list.
"""

import pathlib
import sys

import optax

import learned_opt

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "bench"))
import overhead  # noqa: E402

THETA = pathlib.Path(__file__).parent / "thetas" / "step19400"


# ``full``: bench/overhead.py's own list, bound before __main__ swaps it out.
def optimizers(full=overhead.optimizers):
  base = full()
  lopt, theta = learned_opt.load(THETA)[:2]
  return {
    "adam": optax.adam(1e-3),
    "hierarchical": base["hierarchical"],
    "straightforward": base["straightforward"],
    "default_pretrained": base["default_pretrained"],
    "width8_step19400": lopt.optimizer(theta, num_steps=10_000),
  }


if __name__ == "__main__":
  overhead.optimizers = optimizers
  sys.exit(overhead.main(["--sizes", "10k,1M", "--repeats", "9"]))
