"""The ``lopt`` command: one entry point, one module per subcommand.

Each subcommand module defines ``main(argv: list[str]) -> int`` and a
one-line ``__doc__``; it is imported only when used, so ``lopt tasks`` does
not pay for importing the meta-training engine.
"""

import importlib
import sys

# subcommand -> module implementing it.
SUBCOMMANDS = {
  "demo": "meta_train.cli.demo",
  "tasks": "meta_train.cli.tasks",
  "meta-train": "meta_train.cli.meta_train",
  "evaluate": "meta_train.cli.evaluate",
  "self-train": "meta_train.cli.self_train",
}


def _usage() -> str:
  lines = ["usage: lopt SUBCOMMAND [options]", "", "subcommands:"]
  for name, module in SUBCOMMANDS.items():
    try:
      doc = (importlib.import_module(module).__doc__ or "").strip()
      summary = doc.splitlines()[0] if doc else ""
    except ImportError:
      continue
    lines.append(f"  {name:<12} {summary}")
  lines.append("")
  lines.append("Run `lopt SUBCOMMAND --help` for a subcommand's options.")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """Dispatches ``lopt SUBCOMMAND ...`` to its module."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(_usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in SUBCOMMANDS:
    print(
      f"lopt: unknown subcommand {name!r}; valid: {', '.join(SUBCOMMANDS)}",
      file=sys.stderr,
    )
    return 2
  module = importlib.import_module(SUBCOMMANDS[name])
  return int(module.main(rest) or 0)


if __name__ == "__main__":
  sys.exit(main())
