"""The ``genrl_jax`` command line (also ``python -m genrl_jax``).

    genrl_jax --list-tasks [--domain stickman]   # the task table
    genrl_jax list-tasks [--domain stickman]     # the same, as a command

Each command is a subparser whose ``handler`` takes the parsed arguments and returns
the exit status; new commands are added in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import sys


def _list_tasks(args: argparse.Namespace) -> int:
  # Imported here: listing imports dm_control and MuJoCo, which other commands may not need.
  from genrl_jax.envs.tasks import describe_tasks

  try:
    print(describe_tasks(args.domain))
  except ValueError as e:
    print(f"genrl_jax: {e}", file=sys.stderr)
    return 2
  return 0


def _add_domain_option(parser: argparse.ArgumentParser, default=None) -> None:
  parser.add_argument("--domain",
                      default=default,
                      help="only the tasks of this domain (walker, stickman, cheetah, "
                      "quadruped, kitchen, jaco)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="genrl_jax", description="GenRL (multimodal foundation world models) in JAX/Flax.")
  parser.add_argument("--list-tasks",
                      action="store_true",
                      help="print every task with its prompt, video prompt and score bounds")
  _add_domain_option(parser)
  commands = parser.add_subparsers(dest="command", metavar="COMMAND")

  list_tasks = commands.add_parser("list-tasks", help="the same as --list-tasks")
  # SUPPRESS: a --domain given before the command is not reset by the command's default.
  _add_domain_option(list_tasks, default=argparse.SUPPRESS)
  list_tasks.set_defaults(handler=_list_tasks)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs the command line `argv` (default: ``sys.argv[1:]``); returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.list_tasks:
    return _list_tasks(args)
  if args.command is None:
    if args.domain is not None:
      parser.error("--domain goes with --list-tasks")
    parser.print_help()
    return 2
  return args.handler(args)
