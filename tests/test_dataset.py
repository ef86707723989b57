"""Datasets (TFDS/RLDS episodes in ArrayRecord shards, embedding shards), the per-host
sequence pipeline, collection resume, the dataset embedding stage and the npz importer."""

from __future__ import annotations

import os

import numpy as np
import pytest

import synthetic
from genrl_jax.collect import random_policy
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.data import embed as embed_lib
from genrl_jax.data import input_pipeline
from genrl_jax.data import npz_import
from genrl_jax.data.episodes import DatasetError
from genrl_jax.vlm import embedder as embedder_lib

SPEC = dataset_lib.DatasetSpec("walker", 6)


def _tagged_dataset(root, lengths, per_shard=2):
  """Episodes whose reward encodes `(episode, t)` as `episode + t / 1000`."""
  rng = np.random.default_rng(0)
  with dataset_writer.EpisodeWriter(str(root), SPEC, per_shard) as writer:
    for i, n in enumerate(lengths):
      ep = synthetic.random_episode(rng, n)
      ep["reward"] = (i + np.arange(n) / 1000).astype(np.float32)
      writer.add(ep)
  return dataset_reader.open_dataset(str(root))


def test_dataset_round_trip_keeps_every_array_and_the_metadata(tmp_path):
  rng = np.random.default_rng(1)
  episodes = [synthetic.random_episode(rng, n, embed_dim=8) for n in (9, 12, 10)]
  with dataset_writer.EpisodeWriter(str(tmp_path), SPEC, 2, source={"collector": "test"},
                                    vlm="vlm-a") as writer:
    ids = [writer.add(e) for e in episodes]
  assert ids == [0, 1, 2]
  dataset = dataset_reader.open_dataset(str(tmp_path), embedding="vlm-a")
  assert [s.name for s in dataset.shards] == ["shard-00000", "shard-00001"]
  assert dataset.lengths.tolist() == [9, 12, 10] and dataset.num_steps == 31
  assert dataset.spec == SPEC and dataset.embed_dim == 8
  assert dataset.shards[0].metadata["source"] == {"collector": "test"}
  assert dataset.shards[0].metadata["domain"] == "walker"
  for i, original in enumerate(episodes):
    loaded = dataset.read_episode(i)
    assert set(loaded) == set(original)
    for key, value in original.items():
      np.testing.assert_array_equal(loaded[key], value, err_msg=key)
      assert loaded[key].dtype == value.dtype, key
  window = dataset.read_window(1, 3, 4)
  np.testing.assert_array_equal(window["observation"], episodes[1]["observation"][3:7])
  np.testing.assert_array_equal(window["vlm_embedding"], episodes[1]["vlm_embedding"][3:7])
  # Without choosing the embeddings, reads have frames only.
  assert "vlm_embedding" not in dataset_reader.open_dataset(str(tmp_path)).read_episode(0)
  # The shards are plain TFDS datasets.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(dataset.shards[1].path)
  assert builder.info.metadata["episode_ids"] == [2]
  assert len(builder.as_data_source("train")) == 1


def test_pipeline_windows_never_cross_episodes_and_cover_every_episode(tmp_path):
  dataset = _tagged_dataset(tmp_path, [10, 25, 40, 8])
  sampler = input_pipeline.SequenceSampler(dataset, 16, 8, seed=3, process_index=0,
                                           process_count=1)
  seen = set()
  for batch in sampler.batches(0, 20, num_threads=2):
    assert batch["observation"].shape == (16, 8, 64, 64, 3)
    ids = np.floor(batch["reward"]).astype(int)
    assert (ids == ids[:, :1]).all(), "a window crossed an episode boundary"
    t = np.round((batch["reward"] - ids) * 1000).astype(int)
    np.testing.assert_array_equal(np.diff(t, axis=1), 1)  # consecutive steps
    assert (t[:, -1] < dataset.lengths[ids[:, 0]]).all()
    seen |= set(ids[:, 0].tolist())
  assert seen == {0, 1, 2, 3}
  # Starts are uniform over [0, len - L]: both ends of the 8-step episode 3 are reached.
  starts = {sampler.locate(s, r)[1] for s in range(300) for r in range(4)
            if sampler.locate(s, r)[0] == 1}
  assert starts == set(range(25 - 8 + 1))


def test_pipeline_is_deterministic_resumable_and_independent_of_threads(tmp_path):
  dataset = _tagged_dataset(tmp_path, [12, 20, 16])
  make = lambda seed: input_pipeline.SequenceSampler(dataset, 4, 6, seed, 0, 1)
  one = list(make(5).batches(0, 6, num_threads=1))
  many = list(make(5).batches(0, 6, num_threads=4, prefetch=2))
  resumed = list(make(5).batches(3, 6, num_threads=3))
  for a, b in zip(one, many):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  for a, b in zip(one[3:], resumed):
    np.testing.assert_array_equal(a["action"], b["action"])
  np.testing.assert_array_equal(one[2]["action"], make(5).sample(2)["action"])
  assert not np.array_equal(one[0]["action"], list(make(6).batches(0, 1))[0]["action"])


def test_pipeline_two_processes_read_disjoint_episode_sets_covering_the_dataset(tmp_path):
  dataset = _tagged_dataset(tmp_path, [10] * 7, per_shard=3)
  shares = [dataset.process_share(p, 2) for p in range(2)]
  assert not set(shares[0]) & set(shares[1])
  assert sorted(set(shares[0]) | set(shares[1])) == list(range(7))
  for p in range(2):
    sampler = input_pipeline.SequenceSampler(dataset, 8, 4, seed=0, process_index=p,
                                             process_count=2)
    read = set()
    for batch in sampler.batches(0, 10, num_threads=2):
      read |= set(np.floor(batch["reward"][:, 0]).astype(int).tolist())
    assert read == set(shares[p].tolist()), p
  with pytest.raises(DatasetError, match="7 episodes, fewer than the 8 processes"):
    dataset.process_share(0, 8)


def test_pipeline_worker_processes_give_the_same_batches(tmp_path):
  dataset = _tagged_dataset(tmp_path, [12, 20])
  sampler = input_pipeline.SequenceSampler(dataset, 3, 5, seed=1, process_index=0,
                                           process_count=1)
  for step, batch in enumerate(sampler.batches(0, 4, num_workers=2)):
    np.testing.assert_array_equal(batch["reward"], sampler.sample(step)["reward"])


class _CountingEnv:
  """A 5-step environment whose frames encode the seed."""
  action_dim = 6

  def __init__(self, seed):
    self.seed, self.t = seed, 0

  def _step(self, action, reward):
    return dict(observation=np.full((64, 64, 3), self.seed, np.uint8), action=action,
                reward=np.float32(reward), discount=np.float32(1), is_first=self.t == 0,
                is_last=self.t == 5, is_terminal=False)

  def reset(self):
    self.t = 0
    return self._step(np.zeros(6, np.float32), 0.0)

  def step(self, action):
    self.t += 1
    if self.seed == 13 and self.t == 3:
      raise KeyboardInterrupt  # the user stops the collection during episode 3
    return self._step(action, 1.0)


def test_dataset_interrupted_collection_keeps_finished_episodes_and_resumes(tmp_path):
  root = str(tmp_path)
  with pytest.raises(KeyboardInterrupt):
    with dataset_writer.EpisodeWriter(root, SPEC, episodes_per_shard=10) as writer:
      random_policy.collect_random(_CountingEnv, writer, 5, seed=10, progress=False)
  dataset = dataset_reader.open_dataset(root)
  assert dataset.episode_ids.tolist() == [0, 1, 2]  # finished before the interrupt
  shard = dataset.shards[0].path
  mtime = os.path.getmtime(shard)
  with dataset_writer.EpisodeWriter(root, SPEC, episodes_per_shard=10) as writer:
    # Episode 3 (seed 13) fails again at its 3rd step unless the env is patched.
    assert random_policy.collect_random(lambda s: _CountingEnv(s + 100 * (s == 13)), writer, 5,
                                  seed=10, progress=False) == [3, 4]
  dataset = dataset_reader.open_dataset(root)
  assert sorted(dataset.episode_ids.tolist()) == [0, 1, 2, 3, 4]
  assert os.path.getmtime(shard) == mtime
  first = [int(dataset.read_episode(i)["observation"][0, 0, 0, 0]) for i in range(5)]
  assert first == [10, 11, 12, 113, 14]


def test_dataset_half_written_shards_are_invisible_and_cleaned_up(tmp_path):
  dataset = _tagged_dataset(tmp_path, [10, 10])
  leftover = tmp_path / "episodes" / "shard-00001.tmp"
  leftover.mkdir()
  (leftover / "genrl_episodes-train.array_record-00000").write_bytes(b"half")
  orphan = tmp_path / "embeddings" / "x" / "shard-00001"
  orphan.mkdir(parents=True)
  assert dataset_reader.open_dataset(str(tmp_path)).num_episodes == dataset.num_episodes
  with dataset_writer.EpisodeWriter(str(tmp_path), SPEC) as writer:
    writer.add(synthetic.random_episode(np.random.default_rng(0), 10))
  assert not leftover.exists() and not orphan.exists()
  assert dataset_reader.open_dataset(str(tmp_path)).num_episodes == 3


def test_dataset_corrupted_or_truncated_shards_fail_naming_the_file(tmp_path):
  _tagged_dataset(tmp_path, [10, 10, 10, 10])
  # Shards written before checksum records: ArrayRecord's own checks find the damage on
  # read (with records, it is found before: tests/test_faults_dataset.py).
  for record in tmp_path.glob("episodes/shard-*/checksums.json"):
    record.unlink()
  files = sorted(tmp_path.glob("episodes/shard-*/*.array_record-*"))
  data = bytearray(files[0].read_bytes())
  for k in range(200, len(data), 997):
    data[k] ^= 0x5A
  files[0].write_bytes(bytes(data))
  files[1].write_bytes(files[1].read_bytes()[:len(files[1].read_bytes()) // 2])
  fresh = dataset_reader.open_dataset(str(tmp_path))
  with pytest.raises(DatasetError, match="shard-00000.*corrupted or truncated"):
    fresh.read_episode(0)
  with pytest.raises(DatasetError, match="shard-00001.*corrupted or truncated"):
    fresh.read_episode(2)
  sampler = input_pipeline.SequenceSampler(fresh, 4, 5, 0, 0, 1)
  with pytest.raises(DatasetError, match="corrupted or truncated"):
    list(sampler.batches(0, 2))


def test_dataset_bad_input_gives_clear_errors(tmp_path):
  with pytest.raises(DatasetError, match="not a genrl_jax dataset"):
    dataset_reader.open_dataset(str(tmp_path))
  (tmp_path / "a.npz").write_bytes(b"")
  with pytest.raises(DatasetError, match="import-npz"):
    dataset_reader.open_dataset(str(tmp_path))
  root = str(tmp_path / "d")
  rng = np.random.default_rng(0)
  ep = synthetic.random_episode(rng, 6)
  with dataset_writer.EpisodeWriter(root, SPEC) as writer:
    with pytest.raises(DatasetError, match="missing keys \\['reward'\\]"):
      writer.add({k: v for k, v in ep.items() if k != "reward"})
    with pytest.raises(DatasetError, match="'observation' is uint8\\(6, 32, 64, 3\\)"):
      writer.add(dict(ep, observation=ep["observation"][:, :32]))
    with pytest.raises(DatasetError, match="'action' has shape \\(6, 4\\); expected \\(T, 6\\)"):
      writer.add(dict(ep, action=ep["action"][:, :4]))
    with pytest.raises(DatasetError, match="'vlm_embedding' exactly when"):
      writer.add(dict(ep, vlm_embedding=np.zeros((6, 4), np.float32)))
  with pytest.raises(DatasetError, match="no episodes"):
    dataset_reader.open_dataset(root)
  with pytest.raises(DatasetError, match="holds a dataset of"):
    dataset_writer.EpisodeWriter(root, dataset_lib.DatasetSpec("cheetah", 6))
  with dataset_writer.EpisodeWriter(root, SPEC) as writer:
    writer.add(ep, episode_id=4)
    with pytest.raises(DatasetError, match="already has an episode with this id"):
      writer.add(ep, episode_id=4)
  dataset = dataset_reader.open_dataset(root)
  with pytest.raises(DatasetError, match="shorter than the sequence length 8"):
    input_pipeline.SequenceSampler(dataset, 2, 8, 0, 0, 1)
  with pytest.raises(DatasetError, match="no embeddings of VLM 'clip'"):
    dataset_reader.open_dataset(root, embedding="clip")
  with dataset_writer.EpisodeWriter(root, SPEC, vlm="v") as writer:
    writer.add(dict(ep, vlm_embedding=np.zeros((6, 4), np.float32)))
    with pytest.raises(DatasetError, match="dimension 5; the dataset's embeddings of 'v' have 4"):
      writer.add(dict(ep, vlm_embedding=np.zeros((6, 5), np.float32)))
  with pytest.raises(DatasetError, match="embeddings of 'v' are missing for shards"):
    dataset_reader.open_dataset(root, embedding="v")


def test_embed_dataset_writes_aligned_embeddings_and_resumes(tmp_path):
  root = synthetic.write_episodes(str(tmp_path), num=3, length=[12, 9, 7])
  embedder = embedder_lib.RandomProjectionEmbedder(16)
  stats = embed_lib.embed_dataset(root, embedder, 8, batch_size=3, progress=False)
  assert (stats["shards"], stats["episodes"], stats["clips"]) == (2, 3, 5 + 2 + 0)
  assert embed_lib.embed_dataset(root, embedder, 8, progress=False)["shards"] == 0
  dataset = dataset_reader.open_dataset(root, embedding=embedder.identifier)
  episode = dataset.read_episode(0)
  emb = episode["vlm_embedding"]
  assert emb.shape == (12, 16)
  np.testing.assert_array_equal(emb[:7], 0.0)
  for t in range(7, 12):
    expected = embedder.embed_video(episode["observation"][None, t - 7:t + 1])[0]
    np.testing.assert_allclose(emb[t], expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(dataset.read_episode(2)["vlm_embedding"], 0.0)  # < 8 steps
  # Frames were not rewritten: the episode shards are the same files.
  assert sorted(os.listdir(os.path.join(root, "embeddings"))) == ["random-projection"]


def _reference_file(path, rng, length, reward_2d, extra=True, chw=True, **changes):
  ep = synthetic.random_episode(rng, length, embed_dim=512)
  obs = ep["observation"].transpose(0, 3, 1, 2) if chw else ep["observation"]
  arrays = dict(observation=obs, action=ep["action"],
                reward=ep["reward"][:, None] if reward_2d else ep["reward"],
                discount=ep["discount"][:, None], is_first=ep["is_first"],
                is_last=ep["is_last"], is_terminal=ep["is_terminal"],
                clip_video=ep["vlm_embedding"])
  if extra:
    arrays["clip_img"] = np.zeros((length, 768), np.float32)
  arrays.update(changes)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez_compressed(path, **arrays)
  return ep


def test_npz_import_of_reference_episode_files_keeps_frames_and_embeddings(tmp_path):
  src = tmp_path / "buffer" / "sub"
  src.mkdir(parents=True)
  rng = np.random.default_rng(0)
  eps = [_reference_file(src / "0-20240101T000000-aa-20.npz", rng, 20, reward_2d=True),
         _reference_file(src / "1-20240101T000001-bb-16.npz", rng, 16, reward_2d=False,
                         discount=None),
         _reference_file(src / "2-20240101T000002-cc-16.npz", rng, 16, reward_2d=True)]
  out = str(tmp_path / "dataset")
  assert npz_import.import_npz(str(tmp_path / "buffer"), out, "walker", episodes_per_shard=2,
                               progress=False) == 3
  dataset = dataset_reader.open_dataset(out, embedding=npz_import.REFERENCE_VLM)
  assert dataset.spec == SPEC and dataset.embed_dim == 512
  for i, ep in enumerate(eps):
    loaded = dataset.read_episode(i)
    for key, value in ep.items():
      np.testing.assert_array_equal(loaded[key], value, err_msg=f"{i} {key}")
  assert npz_import.import_npz(str(tmp_path / "buffer"), out, "walker",
                               progress=False) == 0  # resumable: nothing twice


def test_npz_import_bad_files_name_the_file_and_the_problem(tmp_path):
  rng = np.random.default_rng(0)
  with pytest.raises(DatasetError, match="no episode files"):
    npz_import.import_npz(str(tmp_path), str(tmp_path / "o"), "walker", progress=False)
  cases = {
      "missing": (dict(is_last=None), "missing keys \\['is_last'\\]"),
      "shape": (dict(observation=np.zeros((8, 3, 32, 32), np.uint8)),
                "'observation' is uint8\\(8, 32, 32, 3\\)"),
      "dim": (dict(clip_video=np.zeros((8, 256), np.float32)), "dimension 256"),
  }
  for name, (changes, message) in cases.items():
    src = tmp_path / name
    src.mkdir()
    _reference_file(src / "0-a-8.npz", rng, 8, True)
    _reference_file(src / "1-b-8.npz", rng, 8, True, **changes)
    out = str(tmp_path / f"out_{name}")
    with pytest.raises(DatasetError, match=f"1-b-8.npz.*{message}"):
      npz_import.import_npz(str(src), out, "walker", episodes_per_shard=1, progress=False)
    assert dataset_reader.open_dataset(out).num_episodes == 1  # the good file is kept
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "0-x-8.npz").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(DatasetError, match="0-x-8.npz: cannot be read"):
    npz_import.import_npz(str(broken), str(tmp_path / "o2"), "walker", progress=False)


def test_npz_import_command_line_and_dataset_info(tmp_path, capsys):
  from genrl_jax import cli  # pylint: disable=g-import-not-at-top
  src = tmp_path / "buffer"
  src.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    _reference_file(src / f"{i}-x-{10 + i}.npz", rng, 10 + i, reward_2d=True)
  out = str(tmp_path / "ds")
  assert cli.main(["import-npz", str(src), "--out", out, "--domain", "walker",
                   "--episodes-per-shard", "2"]) == 0
  text = capsys.readouterr().out
  assert "imported 3 episodes" in text and "3 episodes, 33 steps, 2 shards" in text
  assert f"embeddings {npz_import.REFERENCE_VLM}: dim 512, 8-frame clips, 2/2 shards" in text
  assert cli.main(["import-npz", str(src), "--out", str(tmp_path / "plain"), "--domain",
                   "walker", "--no-embeddings"]) == 0
  assert "no VLM embeddings" in capsys.readouterr().out
  assert cli.main(["dataset-info", str(tmp_path / "missing")]) == 2
  assert "not a genrl_jax dataset" in capsys.readouterr().err


def test_episode_cache_gives_the_decoded_windows_and_stays_within_its_budget(tmp_path):
  plain = _tagged_dataset(tmp_path, [12, 20, 16])
  episode_bytes = sum(v.nbytes for v in plain.read_episode(1).values())
  cached = dataset_reader.open_dataset(str(tmp_path), cache_mib=1.5 * episode_bytes / (1 << 20))
  for index, start, length in ((0, 3, 6), (1, 0, 20), (1, 7, 5), (2, 10, 6), (0, 0, 12)):
    a, b = plain.read_window(index, start, length), cached.read_window(index, start, length)
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # 1.5 times the 20-step episode holds the 16- and 12-step ones, read last (LRU order).
  assert cached._cached_bytes <= cached.cache_bytes  # pylint: disable=protected-access
  assert list(cached._cache) == [2, 0]  # pylint: disable=protected-access
  window = cached.read_window(0, 0, 4)
  window["reward"][:] = -1  # a copy: the cached episode is not changed
  assert cached.read_window(0, 0, 4)["reward"][0] == 0.0
  sampler = lambda d: input_pipeline.SequenceSampler(d, 4, 6, seed=1, process_index=0,
                                                     process_count=1)
  import pickle  # pylint: disable=g-import-not-at-top
  restored = pickle.loads(pickle.dumps(cached))  # worker processes get an empty cache
  assert not restored._cache  # pylint: disable=protected-access
  for d in (cached, restored):
    np.testing.assert_array_equal(sampler(plain).sample(3)["reward"], sampler(d).sample(3)["reward"])


def test_heldout_split_keeps_the_largest_ids_out_of_the_sampler(tmp_path):
  dataset = _tagged_dataset(tmp_path, [12, 12, 12, 12])
  train, heldout = input_pipeline.heldout_split(dataset, 2)
  order = np.argsort(dataset.episode_ids)
  assert sorted(heldout) == sorted(order[-2:]) and sorted(train) == sorted(order[:2])
  sampler = input_pipeline.SequenceSampler(dataset, 32, 4, seed=0, process_index=0,
                                           process_count=1, episodes=train)
  seen = {int(r) for r in np.floor(sampler.sample(0)["reward"][:, 0])}  # reward = position + t
  assert seen == set(train.tolist())
  assert input_pipeline.heldout_split(dataset, 0)[1].size == 0
  with pytest.raises(DatasetError, match="config.mfwm.heldout_episodes"):
    input_pipeline.heldout_split(dataset, 4)


def test_a_folder_of_npz_episodes_gets_the_full_import_command(tmp_path):
  from genrl_jax.data.episodes import DatasetError  # pylint: disable=g-import-not-at-top
  (tmp_path / "episode_0.npz").write_bytes(b"")
  with pytest.raises(DatasetError, match=r"not a genrl_jax dataset .*`genrl_jax import-npz "
                     rf"{tmp_path} --out={tmp_path}_dataset --domain=DOMAIN`"):
    dataset_lib.read_spec(str(tmp_path))


def test_remove_leftovers_of_named_shards_only(tmp_path):
  # Processes of a job embed different shards into one folder: each removes only what an
  # interrupted run left of its own shards, never another's write in progress.
  for name in ("shard-00000", ".shard-00001.123-abc.tmp", ".shard-00002.55-ff.tmp",
               ".shard-000010.7-aa.tmp"):
    os.makedirs(tmp_path / name)
  dataset_lib.remove_leftovers(str(tmp_path), of=["shard-00001"])
  assert sorted(os.listdir(tmp_path)) == [".shard-000010.7-aa.tmp", ".shard-00002.55-ff.tmp",
                                          "shard-00000"]
  dataset_lib.remove_leftovers(str(tmp_path))
  assert os.listdir(tmp_path) == ["shard-00000"]
