"""Atomic writes of files and directories: a reader sees the old content or the new one,
never half of it.

Everything is written under a temporary name in the target's own directory (so that the
final rename stays on one filesystem), unique per process and per call
(`.<name>.<pid>-<random>.tmp`, created exclusively, so that two writers of one target, or
two eval jobs of a sweep, never write into the same temporary), and renamed into place only
when complete. On any failure, Ctrl-C included, the temporary is removed and the error
re-raised; the target is then unchanged. A process killed outright cannot clean up: its
temporaries end with `TEMP_SUFFIX`, which never names a complete file, and cleaners that
scan for leftovers (`data/dataset.py`) recognise them by it.

Files and directories get the usual permissions (0o666 / 0o777 less the umask), as a plain
`open` or `os.mkdir` would give them.

A write that finds the disk full (ENOSPC) raises `DiskFullError`, naming the target, the
space it needed (at least what it had written) and the space free; the temporary is removed
first, so the space it took is free again and nothing written before changed.

Checksum records (`write_checksums`, `folder_damage`): the size and SHA-256 of every file
of a finished folder (a dataset shard, a checkpoint step), written as JSON into the
folder itself, so that a later reader can tell a damaged file (truncated, changed,
missing) from an intact one before using it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
from typing import Any, Callable

TEMP_SUFFIX = ".tmp"
CHECKSUM_FILE = "checksums.json"
# Read in pieces of this size when hashing (a checkpoint file may be gigabytes).
_HASH_CHUNK = 1 << 22


def temp_name(path: str) -> str:
  """A fresh temporary name next to `path` (not created)."""
  directory, name = os.path.split(path.rstrip(os.sep) or path)
  return os.path.join(directory,
                      f".{name}.{os.getpid()}-{secrets.token_hex(6)}{TEMP_SUFFIX}")


def temporary_of(entry: str, name: str) -> re.Match | None:
  """Whether the directory entry `entry` is a temporary of `name` (made by `temp_name`);
  the match's group 1 is the writer's pid."""
  return re.fullmatch(re.escape(f".{name}.") + r"(\d+)-[0-9a-f]+" + re.escape(TEMP_SUFFIX),
                      entry)


def remove_dead_temporaries(path: str) -> list[str]:
  """Removes the temporaries of `path` (`temp_name`) whose writer process is gone: its pid,
  part of the name, names no running process on this host. For writers that run as one
  process on one host (a temporary of a live process, e.g. a concurrent run, is kept).
  Returns what was removed."""
  directory, name = os.path.split(path.rstrip(os.sep) or path)
  removed = []
  for entry in sorted(os.listdir(directory or ".")) if os.path.isdir(directory or ".") else []:
    match = temporary_of(entry, name)
    if match is None or _process_runs(int(match.group(1))):
      continue
    target = os.path.join(directory, entry)
    if os.path.isdir(target) and not os.path.islink(target):
      shutil.rmtree(target, ignore_errors=True)
    else:
      with contextlib.suppress(FileNotFoundError):
        os.remove(target)
    removed.append(target)
  return removed


def _process_runs(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def _exclusive(path: str, create: Callable[[str], None]) -> str:
  """Creates (with `create`, which raises FileExistsError on a taken name) a temporary next
  to `path`; returns its name. Makes the parent directory if needed."""
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  while True:
    tmp = temp_name(path)
    try:
      create(tmp)
      return tmp
    except FileExistsError:  # a 48-bit collision: draw again
      continue


class DiskFullError(OSError):
  """No space left for a write: the message names the target, the space the write needed
  and the space free on that filesystem (`errno` is ENOSPC)."""


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (or an error it was raised from) is a full disk (ENOSPC); libraries
  (Orbax, TensorStore, TFDS) wrap the OSError or only keep its text."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _free_bytes(path: str) -> int:
  """Free bytes on the filesystem of `path` (or of its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


def folder_size(path: str) -> int:
  """Bytes of the file or directory tree `path` (0 if gone)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path)
             for f in names if os.path.isfile(os.path.join(d, f)))


def disk_full_error(path: str, needed: int, written: int = 0) -> DiskFullError:
  """The `DiskFullError` of a write of `path` that needed `needed` bytes (0: unknown) and
  had written `written` of them when the disk filled up (measure before removing the
  temporary); say it after cleaning up, so that the free space is what a rerun finds."""
  mib = lambda n: f"{n / 2**20:.1f} MiB"
  need = (f"about {mib(needed)}" if needed > written else
          f"more than the {mib(written)} it had written")
  return DiskFullError(errno.ENOSPC,
                       f"no space left on the device of {path}: writing it needs {need}, "
                       f"{mib(_free_bytes(path))} are free; nothing written before was "
                       "changed: free space and run the same command again, it continues "
                       "from what was written")


def _new_file(path: str) -> None:
  os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def write_with(path: str, writer: Callable[[str], None], size: int = 0) -> None:
  """Makes the file `path` by `writer(tmp)`, which writes the whole content to the (empty,
  existing) file `tmp`; `tmp` then replaces `path`. `writer` may reopen `tmp` as it likes,
  but must not rely on its name's extension (pass formats explicitly). `size`: the bytes
  it will write, if known (for the `DiskFullError` message)."""
  tmp = _exclusive(path, _new_file)
  try:
    writer(tmp)
    os.replace(tmp, path)
  except BaseException as e:
    written = folder_size(tmp) if os.path.exists(tmp) else 0
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if is_disk_full(e) and not isinstance(e, DiskFullError):
      raise disk_full_error(path, size, written) from e
    raise


def write_bytes(path: str, data: bytes) -> None:
  def writer(tmp: str) -> None:
    with open(tmp, "wb") as f:
      f.write(data)
  write_with(path, writer, len(data))


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, payload: Any, *, sort_keys: bool = True, indent: int = 2) -> None:
  """`payload` as JSON text (no trailing newline)."""
  write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys))


def write_directory(path: str, fill: Callable[[str], None], size: int = 0) -> None:
  """Makes the directory `path` by `fill(tmp)`, which writes everything into the (empty,
  existing) directory `tmp`; `tmp` is then renamed to `path`.

  The rename replaces an empty directory `path` and fails with `OSError` when `path` is a
  non-empty directory (another writer finished first) or a file; `tmp` is removed then too.
  `size`: the bytes it will write, if known (for the `DiskFullError` message).
  """
  tmp = _exclusive(path, os.mkdir)
  try:
    fill(tmp)
    os.replace(tmp, path)
  except BaseException as e:
    written = folder_size(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    if is_disk_full(e) and not isinstance(e, DiskFullError):
      raise disk_full_error(path, size, written) from e
    raise


def file_sha256(path: str) -> str:
  """The SHA-256 hex digest of the file `path`."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_HASH_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def folder_files(folder: str) -> list[str]:
  """Paths relative to `folder` of its files (recursively, sorted), the record excluded."""
  out = []
  for root, dirs, names in os.walk(folder):
    dirs.sort()
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), folder)
      if rel != CHECKSUM_FILE:
        out.append(rel)
  return sorted(out)


def write_checksums(folder: str) -> dict[str, dict[str, Any]]:
  """Records `{relative path: {'bytes', 'sha256'}}` of every file under `folder` in its
  `CHECKSUM_FILE` (atomically); returns the record's `files`."""
  record = {rel: {"bytes": os.path.getsize(os.path.join(folder, rel)),
                  "sha256": file_sha256(os.path.join(folder, rel))}
            for rel in folder_files(folder)}
  write_json(os.path.join(folder, CHECKSUM_FILE), {"algorithm": "sha256", "files": record})
  with _INTACT_LOCK:  # just hashed: a check in this process need not read it again
    _INTACT[folder] = _signature(folder)
  return record


def has_checksums(folder: str) -> bool:
  return os.path.exists(os.path.join(folder, CHECKSUM_FILE))


def folder_damage(folder: str, contents: bool = True) -> list[str]:
  """What differs between `folder` and its checksum record, one phrase per damaged file
  (`'<file>: truncated (1000 of 82518 bytes)'`, `'... content changed (SHA-256
  differs from the record)'`, `'... missing'`); [] when intact. Files added since are not
  damage. Without `contents` only the sizes are compared (a stat per file, no reading). A
  folder without a record has nothing to compare (`has_checksums`): [].

  A folder whose contents matched before, in this process, and whose files have the same
  names, sizes and modification times since, is not read again.
  """
  path = os.path.join(folder, CHECKSUM_FILE)
  if not os.path.exists(path):
    return []
  signature = _signature(folder)
  with _INTACT_LOCK:
    if _INTACT.get(folder) == signature:
      return []
  try:
    with open(path) as f:
      record = json.load(f)["files"]
    expected = {rel: (int(v["bytes"]), str(v["sha256"])) for rel, v in record.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return [f"{CHECKSUM_FILE}: unreadable ({type(e).__name__}: {e})"]
  problems = []
  for rel, (size, sha) in sorted(expected.items()):
    file = os.path.join(folder, rel)
    try:
      have = os.path.getsize(file)
    except OSError:
      problems.append(f"{rel}: missing")
      continue
    if have < size:
      problems.append(f"{rel}: truncated ({have} of {size} bytes)")
    elif have > size:
      problems.append(f"{rel}: longer than recorded ({have} of {size} bytes)")
    elif contents:
      try:
        if file_sha256(file) != sha:
          problems.append(f"{rel}: content changed (SHA-256 differs from the record)")
      except OSError as e:
        problems.append(f"{rel}: unreadable ({e.strerror or e})")
  if contents and not problems:
    with _INTACT_LOCK:
      _INTACT[folder] = signature
  return problems


# Folder -> its `_signature` when its contents last matched its record (this process).
_INTACT: dict[str, tuple] = {}
_INTACT_LOCK = threading.Lock()


def _signature(folder: str) -> tuple:
  out = []
  for rel in folder_files(folder) + [CHECKSUM_FILE]:
    try:
      stat = os.stat(os.path.join(folder, rel))
    except OSError:
      continue
    out.append((rel, stat.st_size, stat.st_mtime_ns))
  return tuple(out)
