"""Atomic writes (`genrl_jax.files`): content, unique temporaries, nothing left on failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from genrl_jax import files


def test_writes_bytes_text_and_json_making_the_parent(tmp_path):
  files.write_bytes(str(tmp_path / "a" / "b.bin"), b"\x00\x01")
  files.write_text(str(tmp_path / "t.txt"), "h\u00e9\n")
  files.write_json(str(tmp_path / "j.json"), {"b": 1, "a": [2]})
  files.write_json(str(tmp_path / "u.json"), {"b": 1, "a": 2}, sort_keys=False)
  assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
  assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "h\u00e9\n"
  assert (tmp_path / "j.json").read_text() == json.dumps({"b": 1, "a": [2]}, indent=2,
                                                          sort_keys=True)
  assert (tmp_path / "u.json").read_text() == '{\n  "b": 1,\n  "a": 2\n}'
  files.write_text(str(tmp_path / "t.txt"), "new")  # replaces
  assert (tmp_path / "t.txt").read_text() == "new"
  assert sorted(os.listdir(tmp_path)) == ["a", "j.json", "t.txt", "u.json"]


def test_two_writes_in_flight_use_different_temporaries(tmp_path):
  path = str(tmp_path / "x.txt")
  seen, both_open = [], threading.Barrier(2, timeout=10)

  def writer(text):
    def write(tmp):
      seen.append(tmp)
      with open(tmp, "w") as f:
        f.write(text)
      both_open.wait()  # both temporaries exist at once
    files.write_with(path, write)

  threads = [threading.Thread(target=writer, args=(t,)) for t in ("one", "two")]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(set(seen)) == 2 and all(os.path.dirname(s) == str(tmp_path) for s in seen)
  assert all(s.endswith(files.TEMP_SUFFIX) for s in seen)
  assert open(path).read() in ("one", "two")
  assert os.listdir(tmp_path) == ["x.txt"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
  path = str(tmp_path / "x.txt")
  files.write_text(path, "old")

  def fail(tmp):
    with open(tmp, "w") as f:
      f.write("half")
    raise error("stop")

  with pytest.raises(error):
    files.write_with(path, fail)
  assert open(path).read() == "old"
  assert os.listdir(tmp_path) == ["x.txt"]


def test_files_get_the_usual_permissions(tmp_path):
  umask = os.umask(0o022)
  try:
    files.write_text(str(tmp_path / "x.txt"), "x")
    files.write_directory(str(tmp_path / "d"), lambda tmp: None)
  finally:
    os.umask(umask)
  assert os.stat(tmp_path / "x.txt").st_mode & 0o777 == 0o644
  assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o755


def test_write_directory(tmp_path):
  target = str(tmp_path / "out")

  def fill(tmp):
    assert os.path.isdir(tmp) and not os.listdir(tmp) and not os.path.exists(target)
    with open(os.path.join(tmp, "a.txt"), "w") as f:
      f.write("a")

  files.write_directory(target, fill)
  assert os.listdir(target) == ["a.txt"]
  # A non-empty target is never replaced, and the temporary is removed.
  with pytest.raises(OSError):
    files.write_directory(target, lambda tmp: open(os.path.join(tmp, "b.txt"), "w").close())
  assert os.listdir(target) == ["a.txt"] and os.listdir(tmp_path) == ["out"]
  # A failing fill leaves nothing; an empty target directory is replaced.
  empty = str(tmp_path / "empty")
  os.mkdir(empty)

  def fail(tmp):
    open(os.path.join(tmp, "half"), "w").close()
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    files.write_directory(empty, fail)
  assert sorted(os.listdir(tmp_path)) == ["empty", "out"] and not os.listdir(empty)
  files.write_directory(empty, lambda tmp: open(os.path.join(tmp, "c.txt"), "w").close())
  assert os.listdir(empty) == ["c.txt"]


def test_remove_dead_temporaries_keeps_those_of_running_processes(tmp_path):
  target = str(tmp_path / "out")
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()  # its pid names no running process now
  left = tmp_path / f".out.{dead.pid}-0a1b2c3d4e5f{files.TEMP_SUFFIX}"
  (left / "mfwm").mkdir(parents=True)
  live = tmp_path / f".out.{os.getpid()}-0a1b2c3d4e5f{files.TEMP_SUFFIX}"
  live.mkdir()
  other = tmp_path / f".other.{dead.pid}-0a1b2c3d4e5f{files.TEMP_SUFFIX}"
  other.write_text("another target's")
  assert files.remove_dead_temporaries(target) == [str(left)]
  assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])
