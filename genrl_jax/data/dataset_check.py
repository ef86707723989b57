"""Finding damaged shards of a dataset: `check_dataset` (`genrl_jax check-dataset DIR`),
`check_shard`, and the quick `shard_size_damage` that `open_dataset` runs on every shard.

Every shard folder (episodes, or one VLM's embeddings) written since checksums exist holds
`checksums.json`, the size and SHA-256 of each of its files (`files.write_checksums`,
written before the folder's atomic rename). A shard with that record is intact when every
file matches it; a shard written before records existed ('no checksum') is checked by
reading every record (ArrayRecord checksums each chunk) and comparing its episode ids with
the shard's metadata, which costs a full decode of the shard.
"""

from __future__ import annotations

import dataclasses
import os

from genrl_jax import files
from genrl_jax.data.dataset import (EMBEDDINGS_DIR, EPISODES_DIR, open_shard,
                                    read_shard_metadata, read_spec, shard_names)
from genrl_jax.data.episodes import DatasetError

CHECKSUM = "checksum"
NO_CHECKSUM = "no checksum"


@dataclasses.dataclass(frozen=True)
class ShardReport:
  """The check of one shard folder: `kind` 'episodes' or 'embeddings <vlm key>', `how`
  it was checked (`CHECKSUM`, or `NO_CHECKSUM`: every record read), `problems` (one
  phrase each; empty when intact) and the ids of the episodes it holds (from its metadata;
  empty when that is unreadable)."""
  path: str
  kind: str
  how: str
  problems: tuple[str, ...]
  episode_ids: tuple[int, ...]

  @property
  def intact(self) -> bool:
    return not self.problems

  def describe(self) -> str:
    """One line naming the shard and its damage."""
    ids = list(self.episode_ids)
    more = "..." if len(ids) > 5 else ""
    held = (f"{len(ids)} episode{'' if len(ids) == 1 else 's'}, ids {ids[:5]}{more}" if ids
            else "episodes unknown")
    return (f"{self.path} ({self.kind}, {self.how}, {held}): damaged: "
            f"{'; '.join(self.problems)}")


def shard_size_damage(path: str) -> list[str]:
  """The files of the shard at `path` whose size differs from its checksum record (a stat
  per file; [] when none, or when the shard has no record)."""
  return files.folder_damage(path, contents=False)


def shard_content_damage(path: str) -> list[str]:
  """The files of the shard at `path` that differ from its checksum record (sizes and
  SHA-256; each intact shard is read once per process, `files.folder_damage`)."""
  return files.folder_damage(path, contents=True)


def _episode_ids(path: str) -> tuple[tuple[int, ...], list[str]]:
  try:
    return tuple(int(i) for i in read_shard_metadata(path)["episode_ids"]), []
  except (DatasetError, KeyError, TypeError, ValueError) as e:
    return (), [f"metadata.json: unreadable ({e})"]


def _read_every_record(path: str, ids: tuple[int, ...]) -> list[str]:
  """Reads each record of the shard at `path`; the problems found (at most the first)."""
  try:
    source = open_shard(path)
    if len(source) != len(ids):
      return [f"{len(source)} records, its metadata lists {len(ids)} episodes"]
    for row, want in enumerate(ids):
      record = source[row]
      if int(record["episode_id"]) != want:
        return [f"record {row} holds episode {int(record['episode_id'])}, its metadata "
                f"says {want}"]
  except DatasetError as e:
    return [str(e)]
  except Exception as e:  # pylint: disable=broad-except  (ArrayRecord's read errors)
    return [f"a record cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})"]
  return []


def check_shard(path: str, kind: str) -> ShardReport:
  """Checks the shard folder `path` against its checksum record, or, without one, by
  reading every record."""
  ids, problems = _episode_ids(path)
  if files.has_checksums(path):
    return ShardReport(path, kind, CHECKSUM, tuple(shard_content_damage(path)), ids)
  if not problems:
    problems = _read_every_record(path, ids)
  return ShardReport(path, kind, NO_CHECKSUM, tuple(problems), ids)


def shard_folders(root: str) -> list[tuple[str, str]]:
  """`(path, kind)` of every shard of the dataset at `root`: its episode shards, then the
  embedding shards of each VLM (those of committed episode shards; orphans are ignored
  by readers and removed by the next writer)."""
  episodes = shard_names(os.path.join(root, EPISODES_DIR))
  out = [(os.path.join(root, EPISODES_DIR, n), "episodes") for n in episodes]
  folder = os.path.join(root, EMBEDDINGS_DIR)
  for key in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    out += [(os.path.join(folder, key, n), f"embeddings {key}")
            for n in shard_names(os.path.join(folder, key)) if n in episodes]
  return out


def check_dataset(root: str) -> list[ShardReport]:
  """Checks every shard of the dataset at `root` (`check_shard`). Raises `DatasetError`
  when `root` is no dataset."""
  read_spec(root)
  return [check_shard(path, kind) for path, kind in shard_folders(root)]


def summary(root: str, reports: list[ShardReport]) -> str:
  """One line: how many shards and episodes were checked, how, and how many are damaged."""
  episodes = {i for r in reports if r.kind == "episodes" for i in r.episode_ids}
  damaged = [r for r in reports if not r.intact]
  lost = {i for r in damaged for i in r.episode_ids}
  unchecked = sum(r.how == NO_CHECKSUM for r in reports)
  read = f"; {unchecked} without checksums were read in full" if unchecked else ""
  if not damaged:
    return (f"{root}: all {len(reports)} shards intact ({len(episodes)} episodes){read}")
  return (f"{root}: {len(damaged)} of {len(reports)} shards damaged, holding {len(lost)} of "
          f"{len(episodes)} episodes{read}")
