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
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from typing import Any, Callable

TEMP_SUFFIX = ".tmp"


def temp_name(path: str) -> str:
  """A fresh temporary name next to `path` (not created)."""
  directory, name = os.path.split(path.rstrip(os.sep) or path)
  return os.path.join(directory,
                      f".{name}.{os.getpid()}-{secrets.token_hex(6)}{TEMP_SUFFIX}")


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


def _new_file(path: str) -> None:
  os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def write_with(path: str, writer: Callable[[str], None]) -> None:
  """Makes the file `path` by `writer(tmp)`, which writes the whole content to the (empty,
  existing) file `tmp`; `tmp` then replaces `path`. `writer` may reopen `tmp` as it likes,
  but must not rely on its name's extension (pass formats explicitly)."""
  tmp = _exclusive(path, _new_file)
  try:
    writer(tmp)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_bytes(path: str, data: bytes) -> None:
  def writer(tmp: str) -> None:
    with open(tmp, "wb") as f:
      f.write(data)
  write_with(path, writer)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, payload: Any, *, sort_keys: bool = True, indent: int = 2) -> None:
  """`payload` as JSON text (no trailing newline)."""
  write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys))


def write_directory(path: str, fill: Callable[[str], None]) -> None:
  """Makes the directory `path` by `fill(tmp)`, which writes everything into the (empty,
  existing) directory `tmp`; `tmp` is then renamed to `path`.

  The rename replaces an empty directory `path` and fails with `OSError` when `path` is a
  non-empty directory (another writer finished first) or a file; `tmp` is removed then too.
  """
  tmp = _exclusive(path, os.mkdir)
  try:
    fill(tmp)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
