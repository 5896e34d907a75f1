"""Self-train: the pretrained optimizer, Adam and SGD meta-train a fresh one.

Usage:
  lopt self-train --config configs/self_train.py[:ARG] --out DIR \\
      [--config.x.y=VALUE ...]

See ``meta_train.self_training.self_train`` for what it runs and writes.
"""

import sys

import learned_opt
from meta_train import config as config_lib
from meta_train.self_training import report as self_train_report
from meta_train.self_training import self_train

_PROG = "lopt self-train"


def main(argv: list[str]) -> int:
  """Entry point of ``lopt self-train``; returns the exit status."""
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  try:
    config_spec, out, overrides = _parse_argv(argv)
    cd = config_lib.load_config_file(config_spec)
    cd.lock()
    for path, text in overrides:
      config_lib.apply_override(cd, path, text)
    cfg = self_train.from_config_dict(cd)
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
  return 0


def _parse_argv(argv):
  usage_error = config_lib.UsageError
  usage = (
    f"usage: {_PROG} --config configs/self_train.py[:ARG] --out DIR "
    "[--config.x=VALUE ...]"
  )
  config_spec, out, overrides = None, None, []
  for name, value in config_lib.flag_pairs(argv, usage):
    if name == "config":
      config_spec = value
    elif name.startswith("config."):
      overrides.append((name, value))
    elif name == "out":
      out = value
    else:
      raise usage_error(f"unknown option --{name}\n{usage}")
  if config_spec is None or out is None:
    raise usage_error(f"--config and --out are required\n{usage}")
  return config_spec, out, overrides


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
