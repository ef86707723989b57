"""A full disk (ENOSPC) during a checkpoint, a report, an episode shard and an embedding
shard write: one `DiskFullError` naming the path, the space needed and the space free;
nothing written before is lost or changed, no temporary is left, and once space is freed
the same writes continue to the result an uninterrupted run gives.

The checkpoint and the report are written to a real full filesystem (a small tmpfs, mounted
as root; elsewhere those two tests skip); the shards get the OSError injected where the
TFDS writer would meet it."""

from __future__ import annotations

import errno
import os
import subprocess

import numpy as np
import pytest

import fault_tally
import synthetic
from fault_tally import tally  # noqa: F401  (autouse: prints this module's rows)
from genrl_jax import files
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.data import embedding_shards
from genrl_jax.train import checkpoints


@pytest.fixture
def small_disk(tmp_path):
  """A 400 KiB tmpfs at `tmp_path/disk` (unmounted after the test); `remount(kib)` grows
  it, as freeing space would."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)],
                           capture_output=True, text=True, check=False)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")

  def remount(kib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={kib}k", str(disk)], check=True)

  try:
    yield disk, remount
  finally:
    subprocess.run(["umount", str(disk)], check=False)


def _listing(root) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, names in os.walk(root) for f in names)


def test_checkpoint_on_a_full_filesystem_names_it_and_continues_after_space_is_freed(
    small_disk, tmp_path):
  disk, remount = small_disk
  # One step holds ~256 KiB of parameters: the first fits, the second does not.
  rng = np.random.default_rng(0)  # random: incompressible (Orbax compresses its chunks)
  states = [{"w": rng.standard_normal(65536).astype(np.float32) + k} for k in (1, 2)]
  ckpt = checkpoints.Checkpointer(str(disk / "mfwm"), save_every=1, keep=5, config={})
  ckpt.save(1, states[0])
  before = {p: open(os.path.join(disk, p), "rb").read() for p in _listing(disk)}
  with pytest.raises(files.DiskFullError) as info:
    ckpt.save(2, states[1])
  message = str(info.value)
  assert message.startswith(f"[Errno {errno.ENOSPC}] no space left on the device of "
                            f"{disk / 'mfwm' / '2'}: writing it needs about 0.2 MiB, ")
  assert "MiB are free; nothing written before was changed" in message
  ckpt.close()
  # Step 1 as it was, nothing of step 2 left (not even Orbax's temporary).
  assert {p: open(os.path.join(disk, p), "rb").read() for p in _listing(disk)} == before
  assert checkpoints.newest_intact_step(str(disk / "mfwm")) == 1

  remount(4096)  # space freed: the same save now goes through
  again = checkpoints.Checkpointer(str(disk / "mfwm"), save_every=1, keep=5, config={})
  assert again.save(2, states[1])
  restored = again.restore(states[0])
  again.close()
  straight = checkpoints.Checkpointer(str(tmp_path / "straight"), save_every=1, keep=5, config={})
  for step, state in enumerate(states, 1):
    straight.save(step, state)
  want = straight.restore(states[0])
  straight.close()
  np.testing.assert_array_equal(restored["w"], want["w"])
  np.testing.assert_array_equal(restored["w"], states[1]["w"])
  fault_tally.record("full disk: checkpoint (tmpfs)", 1)


def test_report_on_a_full_filesystem_keeps_the_previous_one(small_disk):
  from genrl_jax.report import results  # pylint: disable=g-import-not-at-top
  disk, remount = small_disk
  files.write_text(str(disk / "results.md"), "# the previous table\n")
  with open(disk / "filler", "wb") as f:  # another job filled the disk
    with pytest.raises(OSError):
      while True:
        f.write(b"\0" * 65536)
        f.flush()
  with pytest.raises(files.DiskFullError, match=f"no space left on the device of "
                     f"{disk / 'results.md'}: writing it needs"):
    files.write_text(str(disk / "results.md"), "# a new table\n" * 10000)
  assert (disk / "results.md").read_text() == "# the previous table\n"
  assert sorted(os.listdir(disk)) == ["filler", "results.md"]  # no temporary left
  os.remove(disk / "filler")
  remount(1024)
  (disk / "behavior").mkdir()
  results.write_results(str(disk))  # the report of a workdir without behaviours
  assert (disk / "results.md").read_text().startswith("# Results (0 behaviours)")
  fault_tally.record("full disk: report (tmpfs)", 1)


def _disk_full_at(monkeypatch, shard_suffix: str) -> dict[str, bool]:
  """Makes the shard write whose folder ends with `shard_suffix` fail with ENOSPC where the
  TFDS writer would, until `state['full']` is set False."""
  state = {"full": True}
  original = files.write_checksums

  def write_checksums(folder: str):
    final = os.path.basename(folder).split(".")[1] if folder.count(".") >= 2 else folder
    if state["full"] and final.endswith(shard_suffix):
      raise OSError(errno.ENOSPC, "No space left on device", folder)
    return original(folder)

  monkeypatch.setattr(dataset_lib.files, "write_checksums", write_checksums)
  return state


def _episodes(root: str) -> list[dict[str, np.ndarray]]:
  dataset = dataset_reader.open_dataset(root)
  return [dataset.read_episode(i) for i in range(dataset.num_episodes)]


def test_episode_shard_write_on_a_full_disk_keeps_the_earlier_shards(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  episodes = [synthetic.random_episode(rng, 12) for _ in range(6)]
  spec = dataset_lib.DatasetSpec("walker", 6)
  straight = str(tmp_path / "straight")
  with dataset_writer.EpisodeWriter(straight, spec, 2) as writer:
    for e in episodes:
      writer.add(e)
  root = str(tmp_path / "data")
  disk = _disk_full_at(monkeypatch, "shard-00001")
  with pytest.raises(files.DiskFullError, match=f"device of {root}/episodes/shard-00001: "
                     r"writing it needs about 0\.\d MiB"):
    with dataset_writer.EpisodeWriter(root, spec, 2) as writer:
      for e in episodes:
        writer.add(e)
  assert sorted(os.listdir(os.path.join(root, "episodes"))) == ["shard-00000"]  # no temporary
  assert not files.folder_damage(os.path.join(root, "episodes", "shard-00000"))
  disk["full"] = False  # space freed: the collection resumes with the missing episodes
  with dataset_writer.EpisodeWriter(root, spec, 2) as writer:
    for i, e in enumerate(episodes):
      if i not in writer.episode_ids:
        writer.add(e, i)
  got, want = _episodes(root), _episodes(straight)
  assert len(got) == len(want) == 6
  for g, w in zip(got, want):
    for key in w:
      np.testing.assert_array_equal(g[key], w[key])
  fault_tally.record("full disk: episode shard (injected)", 1)


def test_embedding_shard_write_on_a_full_disk_keeps_the_episodes(tmp_path, monkeypatch):
  root = synthetic.write_episodes(str(tmp_path / "data"), num=4, length=12)
  episodes_before = _listing(os.path.join(root, "episodes"))
  embeddings = {0: np.ones((12, 8), np.float32), 1: np.zeros((12, 8), np.float32)}
  disk = _disk_full_at(monkeypatch, "shard-00000")
  with pytest.raises(files.DiskFullError, match="no space left on the device of "
                     f"{root}/embeddings/.*/shard-00000"):
    embedding_shards.write_embedding_shard(root, "shard-00000", "test-vlm", 8, embeddings)
  assert _listing(os.path.join(root, "episodes")) == episodes_before
  assert not any(n.endswith(files.TEMP_SUFFIX) for n in _listing(os.path.join(root, "embeddings")))
  disk["full"] = False  # space freed: the embedding step writes both shards
  embedding_shards.write_embedding_shard(root, "shard-00000", "test-vlm", 8, embeddings)
  embedding_shards.write_embedding_shard(root, "shard-00001", "test-vlm", 8,
                                         {2: embeddings[0] * 2, 3: embeddings[1] + 3})
  dataset = dataset_reader.open_dataset(root, embedding="test-vlm")
  got = [dataset.read_episode(i)["vlm_embedding"] for i in range(4)]
  for g, w in zip(got, [embeddings[0], embeddings[1], embeddings[0] * 2, embeddings[1] + 3]):
    np.testing.assert_array_equal(g, w)
  fault_tally.record("full disk: embedding shard (injected)", 1)


@pytest.mark.slow
def test_main_collecting_onto_a_full_disk_stops_in_one_line_and_resumes(small_disk, tmp_path):
  """`experiments/main.py --mode=collect` into a workdir on the full tmpfs: one `error:`
  line naming the shard and the space, no traceback; after the space is freed the same
  command collects the dataset an uninterrupted collection gives."""
  import sys  # pylint: disable=g-import-not-at-top
  disk, remount = small_disk
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def collect(workdir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(root, "experiments", "main.py"),
         "--config=configs/walker.py:tiny", f"--workdir={workdir}", "--mode=collect",
         "--config.data.collect_episodes=1", "--config.data.num_envs=1"],
        cwd=root, capture_output=True, text=True, timeout=600, check=False,
        env=dict(os.environ, GENRL_JAX_MALLOC="system"))

  full = collect(disk / "run")
  assert full.returncode != 0
  last = full.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: stage collect: [Errno {errno.ENOSPC}] no space left on the "
                         f"device of {disk / 'run' / 'dataset' / 'episodes' / 'shard-00000'}: "
                         "writing it needs about "), full.stderr[-3000:]
  assert "Traceback" not in full.stderr, full.stderr[-3000:]
  assert not os.path.exists(disk / "run" / "dataset" / "episodes" / "shard-00000")
  remount(65536)
  resumed = collect(disk / "run")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  straight = collect(tmp_path / "straight")
  assert straight.returncode == 0, straight.stderr[-3000:]
  got, want = _episodes(str(disk / "run" / "dataset")), _episodes(str(tmp_path / "straight" / "dataset"))
  assert len(got) == len(want) == 2
  for g, w in zip(got, want):
    for key in w:
      np.testing.assert_array_equal(g[key], w[key])
  fault_tally.record("full disk: main.py collecting (tmpfs)", 1)
