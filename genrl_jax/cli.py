"""The ``genrl_jax`` command line (also ``python -m genrl_jax``).

    genrl_jax --list-tasks [--domain stickman]   # the task table
    genrl_jax list-tasks [--domain stickman]     # the same, as a command
    genrl_jax import-reference SNAPSHOT.pt --out=DIR [--config=configs/walker.py]
                                                 # a reference PyTorch snapshot as a workdir

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


def _import_reference(args: argparse.Namespace) -> int:
  # Imported here: JAX and Orbax are slow to import and other commands do not need them.
  from genrl_jax.reference import import_reference

  return import_reference.run_command(args.snapshot, args.out, args.config)


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

  imports = commands.add_parser(
      "import-reference",
      help="import a reference PyTorch snapshot (world model, connector, aligner, "
      "actor-critics) as a new workdir; nothing from the file is executed")
  imports.add_argument("snapshot", help="reference .pt snapshot (or .npz of torch arrays)")
  imports.add_argument("--out", required=True, help="new (or empty) workdir to write")
  imports.add_argument("--config", default=None,
                       help="configs/<domain>.py[:variant] whose sizes must match the "
                       "snapshot; default: the snapshot's domain with its sizes")
  imports.set_defaults(handler=_import_reference)
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
