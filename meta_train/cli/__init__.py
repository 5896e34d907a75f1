"""The ``lopt`` command: one entry point, one module per subcommand.

Each subcommand module defines ``main(argv: list[str]) -> int`` and a
one-line ``__doc__``; it is imported only when used, so ``lopt tasks`` does
not pay for importing the meta-training engine.
"""

import importlib
import os
import sys
import traceback

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


# Set to 1 to see the traceback of an unexpected error instead of one line.
DEBUG_ENV = "LOPT_DEBUG"


def run_guarded(prog: str, main_fn, argv: list[str]) -> int:
  """``main_fn(argv)``, with any escaping error printed as one line.

  Subcommands report the errors they expect themselves; anything else
  (a bad input found late, or a bug) becomes ``PROG: error: ...`` on stderr
  and exit status 1, unless ``LOPT_DEBUG=1`` asks for the traceback.

  Args:
    prog: e.g. ``lopt meta-train``.
    main_fn: the subcommand's ``main``.
    argv: its arguments.

  Returns:
    The exit status.
  """
  try:
    return int(main_fn(argv) or 0)
  except KeyboardInterrupt:
    print(f"{prog}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001 (the point: no traceback)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:
      traceback.print_exc()
    message = " ".join(str(e).split()) or type(e).__name__
    hint = "" if debug else f"; set {DEBUG_ENV}=1 for the traceback"
    print(
      f"{prog}: error: {message} ({type(e).__name__}{hint})", file=sys.stderr
    )
    return 1


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
  return run_guarded(f"lopt {name}", module.main, rest)


if __name__ == "__main__":
  sys.exit(main())
