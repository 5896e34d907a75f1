"""Self-train: the pretrained optimizer, Adam and SGD meta-train a fresh one.

Usage:
  lopt self-train --config configs/self_train.py[:ARG] --out DIR \\
      [--config.x.y=VALUE ...]

See ``meta_train.self_training.self_train`` for what it runs and writes.
"""

import sys

import learned_opt
from meta_train import config as config_lib
from meta_train.cli import out_dir
from meta_train.self_training import report as self_train_report
from meta_train.self_training import self_train

_PROG = "lopt self-train"
_USAGE = (
  f"usage: {_PROG} --config configs/self_train.py[:ARG] --out DIR "
  "[--config.x=VALUE ...]"
)


def main(argv: list[str]) -> int:
  """Entry point of ``lopt self-train``; returns the exit status."""
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  try:
    cd, values = config_lib.parse_command_line(argv, _USAGE, required=("out",))
    cfg = self_train.from_config_dict(cd)
    out = out_dir.prepare(values["out"])
  except (ValueError, TypeError) as e:
    print(f"{_PROG}: {e}", file=sys.stderr)
    return 2
  try:
    summary = self_train.run(cfg, out)
  except (FileNotFoundError, learned_opt.CheckpointError) as e:
    print(f"{_PROG}: {e}", file=sys.stderr)
    return 2
  print(self_train_report.markdown(summary))
  print(f"wrote {out}/self_train.{{json,md,png}}")
  for kind, path in summary["products"].items():
    print(f"trained by {kind}: {path} (lopt evaluate --optimizer {path})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
