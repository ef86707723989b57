"""The ``genrl_jax`` command line (also ``python -m genrl_jax``).

    genrl_jax list-tasks [--domain stickman]     # the task table
    genrl_jax import-reference SNAPSHOT.pt --out=DIR [--config=configs/walker.py] [--vlm-model=PT]
                                                 # a reference PyTorch snapshot as a workdir
    genrl_jax import-npz EPISODES_DIR --out=DATASET --domain=walker
                                                 # reference .npz episodes as a dataset
    genrl_jax dataset-info DATASET               # episodes, steps, shards, embeddings
    genrl_jax check-dataset DATASET              # damaged shards (exit status 1 if any)

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

  return import_reference.run_command(args.snapshot, args.out, args.config, args.vlm_model)


def _import_npz(args: argparse.Namespace) -> int:
  from genrl_jax.data import npz_import  # pylint: disable=g-import-not-at-top
  from genrl_jax.data.episodes import DatasetError  # pylint: disable=g-import-not-at-top

  try:
    count = npz_import.import_npz(args.source, args.out, args.domain,
                                  with_embeddings=False if args.no_embeddings else None,
                                  vlm=args.vlm, episodes_per_shard=args.episodes_per_shard)
  except (DatasetError, FileNotFoundError) as e:
    print(f"genrl_jax import-npz: {e}", file=sys.stderr)
    return 2
  print(f"imported {count} episodes into {args.out}")
  return _dataset_info(argparse.Namespace(dataset=args.out))


def _dataset_info(args: argparse.Namespace) -> int:
  from genrl_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.data import dataset_reader  # pylint: disable=g-import-not-at-top

  try:
    # Metadata only: a damaged shard is described too (`check-dataset` finds damage).
    dataset = dataset_reader.open_dataset(args.dataset, check_sizes=False)
  except dataset_lib.DatasetError as e:
    print(f"genrl_jax dataset-info: {e}", file=sys.stderr)
    return 2
  spec = dataset.spec
  print(f"{args.dataset}: domain {spec.domain}, actions {spec.action_dim}-d in [-1, 1], "
        f"frames {spec.image_size}x{spec.image_size}x3")
  print(f"  {dataset.num_episodes} episodes, {dataset.num_steps} steps, "
        f"{len(dataset.shards)} shards; episode length {dataset.lengths.min()}.."
        f"{dataset.lengths.max()}")
  sources = sorted({str(s.metadata.get("source")) for s in dataset.shards})
  print(f"  sources: {', '.join(sources)}")
  for name, emb in sorted(dataset.embedding_sets.items()):
    print(f"  embeddings {name}: dim {emb.embed_dim}, {emb.n_frames}-frame clips, "
          f"{len(emb.shards)}/{len(dataset.shards)} shards")
  if not dataset.embedding_sets:
    print("  no VLM embeddings")
  return 0


def _check_dataset(args: argparse.Namespace) -> int:
  from genrl_jax.data import dataset_check  # pylint: disable=g-import-not-at-top
  from genrl_jax.data.episodes import DatasetError  # pylint: disable=g-import-not-at-top

  try:
    reports = dataset_check.check_dataset(args.dataset)
  except DatasetError as e:
    print(f"genrl_jax check-dataset: {e}", file=sys.stderr)
    return 2
  for report in reports:
    if not report.intact:
      print(report.describe())
  print(dataset_check.summary(args.dataset, reports))
  return 0 if all(r.intact for r in reports) else 1


def _add_domain_option(parser: argparse.ArgumentParser, default=None) -> None:
  parser.add_argument("--domain",
                      default=default,
                      help="only the tasks of this domain (walker, stickman, cheetah, "
                      "quadruped, kitchen, jaco)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="genrl_jax", description="GenRL (multimodal foundation world models) in JAX/Flax.")
  # Deprecated alias of the `list-tasks` command, kept so that old command lines still work.
  parser.add_argument("--list-tasks", action="store_true",
                      help="deprecated: use `genrl_jax list-tasks`")
  _add_domain_option(parser)
  commands = parser.add_subparsers(dest="command", metavar="COMMAND")

  list_tasks = commands.add_parser(
      "list-tasks", help="print every task with its prompt, video prompt and score bounds")
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
  imports.add_argument("--vlm-model", default=None,
                       help="the InternVideo2 checkpoint that the printed next commands "
                       "embed prompts with; default: InternVideo2-stage2_1b-224p-f4.pt "
                       "next to the snapshot")
  imports.set_defaults(handler=_import_reference)

  npz = commands.add_parser(
      "import-npz",
      help="convert the reference's episode files (*.npz, searched recursively) into a "
      "dataset, keeping their 'clip_video' embeddings; resumes an interrupted import")
  npz.add_argument("source", help="folder of reference .npz episodes")
  npz.add_argument("--out", required=True, help="dataset folder to create or complete")
  npz.add_argument("--domain", required=True,
                   help="the environment domain of the episodes (walker, cheetah, ...)")
  npz.add_argument("--vlm", default=None,
                   help="identifier of the VLM that made 'clip_video' (default: the "
                   "reference's InternVideo2)")
  npz.add_argument("--no-embeddings", action="store_true",
                   help="drop 'clip_video' (embed the dataset later with the data stage)")
  npz.add_argument("--episodes-per-shard", type=int, default=16)
  npz.set_defaults(handler=_import_npz)

  info = commands.add_parser("dataset-info", help="describe a dataset")
  info.add_argument("dataset", help="dataset folder")
  info.set_defaults(handler=_dataset_info)

  check = commands.add_parser(
      "check-dataset",
      help="verify every episode and embedding shard (against its checksums, or by reading "
      "every record when it has none); names the damaged ones, exit status 1 if any")
  check.add_argument("dataset", help="dataset folder")
  check.set_defaults(handler=_check_dataset)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs the command line `argv` (default: ``sys.argv[1:]``); returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.list_tasks:
    print("genrl_jax: --list-tasks is deprecated; use `genrl_jax list-tasks`",
          file=sys.stderr)
    return _list_tasks(args)
  if args.command is None:
    if args.domain is not None:
      parser.error("--domain goes with the list-tasks command")
    parser.print_help()
    return 2
  return args.handler(args)
