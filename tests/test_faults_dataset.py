"""Damaged dataset shards (docs/reliability.md): every shard records the size and SHA-256 of
its files; `genrl_jax check-dataset` names the damaged shards (exit status 1), training
refuses them with the shard named, and `data.skip_damaged` trains on the others, saying
how many episodes were left out.
"""

from __future__ import annotations

import glob
import json
import os
import types

import numpy as np
import pytest

import synthetic
from genrl_jax import cli
from genrl_jax import files
from genrl_jax.data import dataset_check
from genrl_jax.data import dataset_reader
from genrl_jax.data import input_pipeline
from genrl_jax.data.episodes import DatasetError
from genrl_jax.report.metrics import read_metrics
from genrl_jax.stages import mfwm as mfwm_stage
from genrl_jax.stages import workdir as workdir_lib

VLM = synthetic.SYNTHETIC_VLM


def _dataset(tmp_path) -> str:
  """5 episodes with embeddings, 2 to a shard: shards 0 and 1 of 2 episodes, 2 of 1."""
  return synthetic.write_episodes(str(tmp_path / "d"), num=5, length=12, embed_dim=16)


def _record_file(root: str, shard: str, embeddings: bool = False) -> str:
  pattern = (f"embeddings/*/{shard}/*.array_record-*" if embeddings
             else f"episodes/{shard}/*.array_record-*")
  return glob.glob(os.path.join(root, pattern))[0]


def _flip(path: str) -> None:
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x5A
  open(path, "wb").write(bytes(data))


def test_each_shard_records_its_files_checksums_before_it_appears(tmp_path):
  root = _dataset(tmp_path)
  for path, _ in dataset_check.shard_folders(root):
    with open(os.path.join(path, files.CHECKSUM_FILE)) as f:
      record = json.load(f)["files"]
    assert set(record) == set(files.folder_files(path))
    assert "metadata.json" in record and any(".array_record-" in n for n in record)


def test_check_dataset_passes_an_intact_dataset_with_one_line(tmp_path, capsys):
  root = _dataset(tmp_path)
  assert cli.main(["check-dataset", root]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert out == [f"{root}: all 6 shards intact (5 episodes)"]


def test_check_dataset_names_each_damaged_shard_and_exits_non_zero(tmp_path, capsys):
  root = _dataset(tmp_path)
  _flip(_record_file(root, "shard-00001"))
  os.truncate(_record_file(root, "shard-00002", embeddings=True), 100)
  assert cli.main(["check-dataset", root]) == 1
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 3, out
  assert out[0].startswith(f"{root}/episodes/shard-00001 (episodes, checksum, 2 episodes, "
                           "ids [2, 3]): damaged: genrl_episodes-train.array_record-00000: "
                           "content changed")
  assert "/shard-00002 (embeddings " in out[1] and "truncated (100 of" in out[1]
  assert out[2] == f"{root}: 2 of 6 shards damaged, holding 3 of 5 episodes"


def test_check_dataset_reads_shards_without_checksums_in_full(tmp_path, capsys):
  root = _dataset(tmp_path)
  for record in glob.glob(os.path.join(root, "**", files.CHECKSUM_FILE), recursive=True):
    os.remove(record)  # as written before checksum records
  assert cli.main(["check-dataset", root]) == 0
  assert capsys.readouterr().out.strip() == (
      f"{root}: all 6 shards intact (5 episodes); 6 without checksums were read in full")
  _flip(_record_file(root, "shard-00000"))
  assert cli.main(["check-dataset", root]) == 1
  out = capsys.readouterr().out.strip().splitlines()
  assert out[0].startswith(f"{root}/episodes/shard-00000 (episodes, no checksum, 2 "
                           "episodes, ids [0, 1]): damaged: a record cannot be read")
  assert out[1].startswith(f"{root}: 1 of 6 shards damaged, holding 2 of 5 episodes")


def test_check_dataset_refuses_a_folder_that_is_no_dataset(tmp_path, capsys):
  assert cli.main(["check-dataset", str(tmp_path)]) == 2
  assert "not a genrl_jax dataset" in capsys.readouterr().err


def test_reading_refuses_a_damaged_shard_naming_it(tmp_path):
  root = _dataset(tmp_path)
  os.truncate(_record_file(root, "shard-00002"), 1000)
  # A size that differs from the record: refused when the dataset is opened ...
  with pytest.raises(DatasetError, match=r"episodes/shard-00002: damaged shard \("
                     r"genrl_episodes-train.array_record-00000: truncated \(1000 of .*"
                     r"check-dataset .*skip_damaged=True"):
    dataset_reader.open_dataset(root)
  # ... changed content: when the shard is first read, before any record is decoded.
  os.remove(os.path.join(root, "episodes", "shard-00002", files.CHECKSUM_FILE))
  _flip(_record_file(root, "shard-00001"))
  dataset = dataset_reader.open_dataset(root, VLM)
  np.testing.assert_array_equal(dataset.read_episode(0)["is_first"][:2], [True, False])
  with pytest.raises(DatasetError, match=r"episodes/shard-00001: damaged shard \(.*content "
                     "changed"):
    dataset.read_episode(3)
  sampler = input_pipeline.SequenceSampler(dataset, 4, 8, 0, 0, 1)
  with pytest.raises(DatasetError, match="damaged shard|corrupted or truncated"):
    list(sampler.batches(0, 4))


def test_skip_damaged_leaves_the_damaged_shards_out_and_counts_their_episodes(tmp_path):
  root = _dataset(tmp_path)
  _flip(_record_file(root, "shard-00001"))
  os.truncate(_record_file(root, "shard-00002", embeddings=True), 100)
  dataset = dataset_reader.open_dataset(root, VLM, skip_damaged=True)
  assert [s.name for s in dataset.shards] == ["shard-00000"]
  assert dataset.episode_ids.tolist() == [0, 1]
  assert dataset.skipped_episodes == 3 and len(dataset.skipped) == 2
  assert dataset.read_episode(1)["vlm_embedding"].shape == (12, 16)
  # Without the embeddings, only the episode shard is damaged.
  frames_only = dataset_reader.open_dataset(root, skip_damaged=True)
  assert frames_only.episode_ids.tolist() == [0, 1, 4] and frames_only.skipped_episodes == 2


def test_skip_damaged_may_be_turned_on_when_resuming_a_workdir(tmp_path):
  config = synthetic.micro_config("")
  workdir_lib.prepare_workdir(config, str(tmp_path))
  workdir_lib.prepare_workdir(synthetic.micro_config("", **{"data.skip_damaged": True}),
                              str(tmp_path))


@pytest.mark.slow
def test_mfwm_refuses_a_damaged_shard_and_trains_on_the_rest_when_told(tmp_path):
  root = synthetic.write_episodes(str(tmp_path / "d"), num=4, embed_dim=16)
  _flip(_record_file(root, "shard-00001"))
  workdir = str(tmp_path / "w")
  with pytest.raises(DatasetError, match="shard-00001: damaged shard"):
    mfwm_stage.run(synthetic.micro_config(root), workdir, progress=False)
  config = synthetic.micro_config(root, **{"data.skip_damaged": True})
  state = mfwm_stage.run(config, workdir, progress=False)
  assert int(state.step) == config.mfwm.num_steps
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  skipped = [r for r in rows if "data_skipped_episodes" in r]
  assert len(skipped) == 1 and skipped[0]["data_skipped_episodes"] == 2
  assert skipped[0]["data_skipped_shards"] == 1 and skipped[0]["stage"] == "mfwm"


def test_training_stages_record_the_episodes_left_out(tmp_path):
  # The mfwm stage and the behaviour stage (offline starts) record, at the step they start
  # from, what config.data.skip_damaged left out; without it nothing is recorded.
  config = synthetic.micro_config("")
  dataset = types.SimpleNamespace(skipped_episodes=2, skipped=("shard report",))
  workdir_lib.write_skipped_metrics(config, str(tmp_path), "behavior_walker_walk", 4, dataset)
  assert read_metrics(str(tmp_path)) == []
  with config.unlocked():
    config.data.skip_damaged = True
  workdir_lib.write_skipped_metrics(config, str(tmp_path), "behavior_walker_walk", 4, dataset)
  [row] = read_metrics(str(tmp_path), "behavior_walker_walk")
  assert (row["step"], row["data_skipped_episodes"], row["data_skipped_shards"]) == (4, 2, 1)
