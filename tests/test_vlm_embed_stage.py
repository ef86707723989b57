"""The dataset embedding stage with a tiny local CLIP: aligned per-step embeddings,
cross-episode batching, resume, the data stage with `config.vlm.name='clip'`, and the
behaviour stage reading prompt embeddings from the cache without loading the VLM."""

from __future__ import annotations

import os

import numpy as np
import pytest

import synthetic
from genrl_jax.stages import data as data_stage
from genrl_jax.stages import workdir as workdir_lib
from genrl_jax.prompts import behavior_prompt
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.data import embedding_shards
from genrl_jax.data import embed as embed_lib
from genrl_jax.vlm import clip
from genrl_jax.vlm import embedder as embedder_lib


@pytest.fixture(scope="module")
def embedder(tiny_clip_dir):
  return clip.ClipEmbedder(tiny_clip_dir, batch_size=8)


def _video_dataset(root, frames_per_episode, seed=0):
  rng = np.random.default_rng(seed)
  with dataset_writer.EpisodeWriter(str(root), dataset_lib.DatasetSpec("walker", 6), 2) as w:
    for frames in frames_per_episode:
      ep = synthetic.random_episode(rng, len(frames))
      ep["observation"] = frames
      w.add(ep)
  return str(root)


def test_embed_stage_row_t_depends_only_on_frames_t_minus_7_to_t(tmp_path, embedder):
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
  other = rng.integers(0, 256, (11, 64, 64, 3), dtype=np.uint8)
  changed = frames.copy()
  changed[10] = 255 - changed[10]
  a = _video_dataset(tmp_path / "a", [frames, other])
  b = _video_dataset(tmp_path / "b", [changed, other])
  for root in (a, b):
    stats = embed_lib.embed_dataset(root, embedder, 8, batch_size=5, progress=False)
    assert stats["clips"] == 13 + 4 and stats["clips_per_second"] > 0
  ea = dataset_reader.open_dataset(a, embedder.identifier).read_episode(0)["vlm_embedding"]
  eb = dataset_reader.open_dataset(b, embedder.identifier).read_episode(0)["vlm_embedding"]
  np.testing.assert_array_equal(ea[:7], 0.0)
  np.testing.assert_allclose(np.linalg.norm(ea[7:], axis=-1), 1.0, rtol=1e-5)
  differs = np.abs(ea - eb).max(axis=-1) > 1e-6
  assert np.flatnonzero(differs).tolist() == list(range(10, 18))
  np.testing.assert_allclose(ea[12], embedder.embed_video(frames[None, 5:13])[0], atol=1e-5)


def test_embed_stage_cross_episode_batches_equal_per_episode_embedding(embedder):
  rng = np.random.default_rng(2)
  episodes = [rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) for n in (9, 5, 14)]
  joint = embed_lib.embed_episodes(episodes, embedder, 8, batch_size=4)
  for frames, out in zip(episodes, joint):
    np.testing.assert_allclose(out, embed_lib.embed_episode(frames, embedder, 8, 64),
                               atol=1e-5)
  np.testing.assert_array_equal(joint[1], 0.0)  # 5 < 8 frames: no clip


def test_embed_stage_resumes_shard_by_shard(tmp_path, embedder):
  rng = np.random.default_rng(3)
  root = _video_dataset(tmp_path / "d", [rng.integers(0, 256, (9, 64, 64, 3), np.uint8)
                                         for _ in range(5)])
  dataset = dataset_reader.open_dataset(root)
  first = dataset.shards[0]
  out = embed_lib.embed_episodes([dataset.read_episode(i)["observation"] for i in range(2)],
                                 embedder, 8)
  embedding_shards.write_embedding_shard(root, first.name, embedder.identifier, 8,
                                         dict(zip(first.episode_ids, out)))
  written = os.path.join(root, "embeddings", embedding_shards.embedding_key(embedder.identifier),
                         first.name)
  mtime = os.path.getmtime(written)
  stats = embed_lib.embed_dataset(root, embedder, 8, progress=False)
  assert (stats["shards"], stats["episodes"]) == (2, 3)
  assert os.path.getmtime(written) == mtime
  other = embedder_lib.RandomProjectionEmbedder(32, identifier=embedder.identifier)
  with pytest.raises(dataset_lib.DatasetError, match="have dimension 16, the embedder gives 32"):
    embed_lib.embed_dataset(root, other, 8, progress=False)


def test_embed_stage_in_the_data_stage_and_cached_prompts_need_no_vlm(tmp_path, tiny_clip_dir,
                                                                      monkeypatch):
  root = synthetic.write_episodes(str(tmp_path / "d"), num=2, length=16)
  config = synthetic.micro_config(root, **{"vlm.name": "clip", "vlm.model": tiny_clip_dir,
                                           "vlm.batch_size": 8})
  data_stage.run(config, str(tmp_path / "w"), progress=False)
  identifier = clip.clip_identifier(tiny_clip_dir)
  dataset = workdir_lib.open_run_dataset(config, str(tmp_path / "w"), with_embeddings=True)
  assert dataset.embedding == identifier and dataset.embed_dim == 16
  # The behaviour stage's prompt: embedded once (VLM loaded), then read from the cache.
  cache = str(tmp_path / "w" / "prompt_cache")
  embedder = behavior_prompt.prompt_embedder(config, cache)
  assert embedder is not None and embedder.identifier == identifier
  from genrl_jax.prompts import prompt as prompts_lib  # pylint: disable=g-import-not-at-top
  prompt = behavior_prompt.config_prompt(config)
  first = prompts_lib.embed_prompt(prompt, embedder, 16, cache_dir=cache)
  monkeypatch.setattr(embedder_lib, "make_embedder",
                      lambda c: pytest.fail("the VLM was loaded despite a cached prompt"))
  assert behavior_prompt.prompt_embedder(config, cache) is None
  again = prompts_lib.embed_prompt(prompt, None, 16, cache_dir=cache, identifier=identifier)
  np.testing.assert_array_equal(first, again)
  # An embedded dataset needs no VLM: the data stage does not load it again.
  data_stage.run(config, str(tmp_path / "w"), progress=False)


def test_data_stage_loads_the_vlm_only_for_episodes_without_its_embeddings(tmp_path,
                                                                            monkeypatch):
  """InternVideo2 named by the official file, no checkpoint here: a dataset that carries
  its embeddings (as an imported reference dataset does) passes, one without them stops
  with a one-line error naming config.vlm.model, before anything is written."""
  root = synthetic.write_episodes(str(tmp_path / "d"), num=2, length=16)
  stand_in = embedder_lib.RandomProjectionEmbedder(16)
  stand_in.identifier = "internvideo2:InternVideo2-stage2_1b-224p-f4"
  config = synthetic.micro_config(root, **{"vlm.name": "internvideo2", "vlm.model": "",
                                           "connector.embed_dim": 16})
  assert embedder_lib.embedder_identifier(config) == stand_in.identifier
  with pytest.raises(FileNotFoundError, match=r"config\.vlm\.model='' is not a file"):
    data_stage.run(config, str(tmp_path / "w"), progress=False)
  with pytest.raises(FileNotFoundError, match=r"config\.vlm\.model=''.*the data stage"):
    workdir_lib.check_vlm_files(config, str(tmp_path / "w"), ("data",))
  embed_lib.embed_dataset(root, stand_in, 8, progress=False)
  monkeypatch.setattr(embedder_lib, "make_embedder",
                      lambda c: pytest.fail("the VLM was loaded for an embedded dataset"))
  workdir_lib.check_vlm_files(config, str(tmp_path / "w"), ("data",))
  assert data_stage.run(config, str(tmp_path / "w"), progress=False) == root
  dataset = workdir_lib.open_run_dataset(config, str(tmp_path / "w"), with_embeddings=True)
  assert dataset.embedding == stand_in.identifier
