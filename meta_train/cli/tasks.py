"""List task families, show a task, sample suites of task names.

The subcommand lives with the suite it describes, in ``task_suite.cli``;
this module only hands over to it.
"""

from task_suite import cli as _task_cli


def main(argv: list[str]) -> int:
  """Entry point of ``lopt tasks``; returns the exit status."""
  return _task_cli.main(argv)
