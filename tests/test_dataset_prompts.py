"""Video prompts cut from a run's own episodes (behavior/dataset_clips.py), the prompt
source a config resolves to, and the locally built random-weight CLIP (vlm/random_clip.py)."""

import json
import os

import imageio.v3 as iio
import numpy as np
import pytest

import synthetic
from genrl_jax import experiment_config
from genrl_jax.collect import random_policy
from genrl_jax.prompts import dataset_clips
from genrl_jax.stages import data as data_stage
from genrl_jax.prompts import behavior_prompt
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.vlm import embedder as embedder_lib
from genrl_jax.vlm import random_clip


def _episode(length, reward, colour):
  t = np.arange(length)
  obs = np.zeros((length, 64, 64, 3), np.uint8)
  obs[:, :, :, 0] = (t * 5 % 250)[:, None, None]  # frame t is told apart by its red level
  obs[:, :, :, 1] = colour
  return dict(observation=obs, action=np.zeros((length, 6), np.float32),
              reward=np.asarray(reward, np.float32), discount=np.ones(length, np.float32),
              is_first=t == 0, is_last=t == length - 1, is_terminal=np.zeros(length, bool))


def _write(root, task, episodes, first_id):
  spec = dataset_lib.DatasetSpec("walker", 6)
  with dataset_writer.EpisodeWriter(root, spec, 8, source={"collector": "random",
                                                           "task": task}) as writer:
    for i, episode in enumerate(episodes):
      writer.add(episode, episode_id=first_id + i)


@pytest.fixture
def two_task_dataset(tmp_path):
  root = str(tmp_path / "ds")
  stand = np.zeros(30)
  stand[10:18] = 1.0  # the best 8-step window of walker_stand: episode 101, steps 10..17
  stand_other = np.zeros(30)
  stand_other[3:11] = 0.5
  lying = np.zeros(30)
  lying[20:28] = 3.0  # higher, but another task's reward
  _write(root, "walker_stand", [_episode(30, stand_other, 10), _episode(30, stand, 20)], 100)
  _write(root, "walker_lying_down", [_episode(30, lying, 30)], 200)
  return dataset_reader.open_dataset(root)


def test_best_clip_picks_highest_reward_window_of_the_tasks_own_episodes(two_task_dataset):
  assert dataset_clips.task_episodes(two_task_dataset, "walker_stand") == [0, 1]
  assert dataset_clips.task_episodes(two_task_dataset, "walker_lying_down") == [2]
  clip = dataset_clips.best_clip(two_task_dataset, "walker_stand", n_frames=8)
  assert (clip.episode_id, clip.start, clip.reward_sum) == (101, 10, 8.0)
  assert clip.frames.shape == (8, 64, 64, 3)
  np.testing.assert_array_equal(clip.frames[:, 0, 0, 0], np.arange(10, 18) * 5)
  assert (clip.frames[..., 1] == 20).all()
  lying = dataset_clips.best_clip(two_task_dataset, "walker_lying_down", n_frames=8)
  assert (lying.episode_id, lying.start, lying.reward_sum) == (200, 20, 24.0)


def test_best_clip_without_the_tasks_episodes_names_the_tasks_it_has(two_task_dataset):
  with pytest.raises(dataset_lib.DatasetError, match=r"walker_walk.*walker_lying_down, "
                     r"walker_stand.*collect_tasks"):
    dataset_clips.best_clip(two_task_dataset, "walker_walk")


def test_ensure_prompt_video_writes_gif_and_sidecar_once_and_keeps_foreign_files(
    two_task_dataset, tmp_path):
  workdir = str(tmp_path / "w")
  path = dataset_clips.ensure_prompt_video(workdir, "walker_stand", two_task_dataset)
  assert path == os.path.join(workdir, "prompts", "walker_stand.gif")
  frames = np.asarray(iio.imread(path, index=None))
  assert frames.shape[:3] == (8, 64, 64)
  # Few colours: the GIF palette keeps the frames (close to) exactly.
  assert np.abs(frames[..., :3].astype(int)
                - dataset_clips.best_clip(two_task_dataset, "walker_stand").frames).max() <= 8
  with open(os.path.join(workdir, "prompts", "walker_stand.json")) as f:
    meta = json.load(f)
  assert meta["episode_id"] == 101 and meta["start"] == 10 and meta["source"] == "dataset clip"
  assert dataset_clips.is_dataset_clip(path)
  mtime = os.path.getmtime(path)
  assert dataset_clips.ensure_prompt_video(workdir, "walker_stand", two_task_dataset) == path
  assert os.path.getmtime(path) == mtime  # a resumed run keeps its prompt
  foreign = os.path.join(workdir, "prompts", "walker_lying_down.gif")
  iio.imwrite(foreign, np.zeros((2, 8, 8, 3), np.uint8))
  with pytest.raises(FileExistsError, match="left as it is"):
    dataset_clips.ensure_prompt_video(workdir, "walker_lying_down", two_task_dataset)
  assert not dataset_clips.is_dataset_clip(foreign)


def _config(**overrides):
  c = experiment_config.load_config("configs/walker.py:tiny")
  c.task = "walker_stand"
  c.behavior.prompt.update(overrides)
  return c


def test_prompt_source_auto_uses_clips_only_for_stand_in_vlms():
  c = _config()
  assert c.vlm.name == "clip" and not c.vlm.model  # tiny: the random-weight CLIP
  assert not embedder_lib.has_semantics(c)
  assert behavior_prompt.prompt_source(c) == "dataset_video"
  c.vlm.model = "openai/clip-vit-base-patch32"
  assert embedder_lib.has_semantics(c) and behavior_prompt.prompt_source(c) == "text"
  c.vlm.name = ""
  assert behavior_prompt.prompt_source(c) == "text"
  assert behavior_prompt.prompt_source(_config(text="walk")) == "custom"
  assert behavior_prompt.prompt_source(_config(source="text")) == "text"
  with pytest.raises(ValueError, match="prompt.source='sometimes'"):
    behavior_prompt.prompt_source(_config(source="sometimes"))


def test_resolve_prompt_sets_the_clip_and_falls_back_to_text_only_on_auto(
    two_task_dataset, tmp_path):
  workdir = str(tmp_path / "w")
  resolved = behavior_prompt.resolve_prompt(_config(), workdir, two_task_dataset)
  prompt = behavior_prompt.config_prompt(resolved)
  assert prompt.kind == "video" and prompt.value.endswith("prompts/walker_stand.gif")
  assert behavior_prompt.prompt_kind(prompt) == "video (dataset clip)"
  walk = _config()
  walk.task = "walker_walk"  # no episodes of it: auto falls back to the text prompt
  assert behavior_prompt.config_prompt(
      behavior_prompt.resolve_prompt(walk, workdir, two_task_dataset)).kind == "text"
  explicit = _config(source="dataset_video")
  explicit.task = "walker_walk"
  with pytest.raises(dataset_lib.DatasetError, match="no episodes collected in walker_walk"):
    behavior_prompt.resolve_prompt(explicit, workdir, two_task_dataset)
  with pytest.raises(ValueError, match="run the data stage first"):
    behavior_prompt.resolve_prompt(_config(source="dataset_video"), workdir, None)
  with pytest.raises(ValueError, match="resolve_prompt"):
    behavior_prompt.config_prompt(_config(source="dataset_video"))


def test_random_clip_is_built_once_in_the_cache_and_named_as_random(tmp_path, monkeypatch):
  monkeypatch.setenv("GENRL_JAX_CACHE", str(tmp_path))
  c = _config()
  c.connector.embed_dim = 16
  assert embedder_lib.embedder_identifier(c) == "clip:random-weights(seed=0,dim=16,recipe=2)"
  embedder = embedder_lib.make_embedder(c)
  assert embedder.identifier == embedder_lib.embedder_identifier(c)
  assert embedder.embed_dim == 16
  directory = tmp_path / "random_clip" / "seed0-dim16-px32-r2"
  assert (directory / "model.safetensors").is_file()
  mtime = os.path.getmtime(directory / "model.safetensors")
  clips = np.random.default_rng(0).integers(0, 255, (3, 8, 64, 64, 3), dtype=np.uint8)
  first = embedder.embed_video(clips)
  again = embedder_lib.make_embedder(c)
  assert os.path.getmtime(directory / "model.safetensors") == mtime
  np.testing.assert_allclose(again.embed_video(clips), first, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(first, axis=-1), 1.0, atol=1e-5)
  # Random, but it tells different frames apart (the clips can act as prompts).
  assert np.abs(first[0] @ first[1]) < 0.99
  assert not any(p.name.endswith(".tmp") for p in directory.parent.iterdir())
  assert random_clip.ensure_random_clip(0, 16, str(tmp_path)) == str(directory)


def test_collect_tasks_interleave_ids_and_name_their_task_in_shards(tmp_path):
  c = synthetic.micro_config()
  c.data.collect_tasks = ("walker_stand", "walker_walk")
  c.data.collect_episodes = 2
  c.data.num_envs = 1
  c.data.update(dict(action_repeat=2, fast_render=True))
  c.eval.time_limit = 0.0
  assert random_policy.collect_tasks(c) == ["walker_stand", "walker_walk"]
  root = data_stage.collect(c, str(tmp_path), progress=False)
  dataset = dataset_reader.open_dataset(root)
  assert sorted(dataset.episode_ids.tolist()) == [0, 1, 2, 3]
  ids = lambda task: sorted(int(dataset.episode_ids[p])
                            for p in dataset_clips.task_episodes(dataset, task))
  assert (ids("walker_stand"), ids("walker_walk")) == ([0, 2], [1, 3])
  c.data.collector = "plan2explore"
  with pytest.raises(ValueError, match="collects in one environment"):
    data_stage.collect(c, str(tmp_path), progress=False)
