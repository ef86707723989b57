"""Video prompts cut from a run's own episodes, picked by the task's reward.

With a stand-in VLM (random weights, no semantics) a text prompt names nothing, but a clip
of the domain's own frames still does: the connector was trained on the same VLM's
embeddings of such clips. For a task, `best_clip` scans the dataset's episodes that were
collected in that task's environment (each shard's metadata names its task; see
`genrl_jax.stages.data.collect`) and returns the `n_frames` consecutive frames with the
highest summed task reward, e.g. the agent still standing for `stickman_stand`, or on the
ground for `stickman_lying_down`. The learned behaviour can then be judged against the
environment's reward although the VLM understands nothing.

`ensure_prompt_video` writes the clip to `<workdir>/prompts/<task>.gif` (the video prompt
the behaviour stage reads, so a person sees exactly what the agent was asked to do) with a
sidecar `<task>.json` naming the episode, the window and its reward.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from genrl_jax import files
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.report import tensorboard

PROMPTS_DIR = "prompts"
SOURCE = "dataset clip"
# Episodes scanned per task at most (each read decodes a whole episode).
MAX_EPISODES = 64


@dataclasses.dataclass(frozen=True)
class Clip:
  """A window of one episode: `frames` uint8 `(n_frames, H, W, 3)`."""
  task: str
  episode_id: int
  start: int
  reward_sum: float
  frames: np.ndarray


def _shard_task(shard: dataset_reader.Shard) -> str | None:
  """The task a shard's episodes were collected in (its metadata's `source.task`)."""
  source = shard.metadata.get("source")
  return source.get("task") if isinstance(source, dict) else None


def task_episodes(dataset: dataset_reader.EpisodeDataset, task: str) -> list[int]:
  """Positions (in `dataset`) of the episodes collected in `task`'s environment."""
  out, position = [], 0
  for shard in dataset.shards:
    if _shard_task(shard) == task:
      out.extend(range(position, position + len(shard.episode_ids)))
    position += len(shard.episode_ids)
  return out


def _collected_tasks(dataset: dataset_reader.EpisodeDataset) -> list[str]:
  return sorted({t for t in map(_shard_task, dataset.shards) if t})


def best_clip(dataset: dataset_reader.EpisodeDataset, task: str, n_frames: int = 8,
              max_episodes: int = MAX_EPISODES) -> Clip:
  """The `n_frames`-step window of `task`'s episodes with the highest summed reward.

  Step `t`'s reward is the one received on reaching frame `t`, so a window scores exactly
  the frames it shows; the first step (no reward yet) is never part of a window. Ties go to
  the earliest episode and start, so the choice is deterministic.
  """
  positions = task_episodes(dataset, task)[:max_episodes]
  if not positions:
    raise dataset_lib.DatasetError(
        f"{dataset.root} holds no episodes collected in {task}'s environment (its shards "
        f"name: {', '.join(_collected_tasks(dataset)) or 'no task'}), so no video prompt "
        f"can be cut for {task}. Add {task} to config.data.collect_tasks and run the data "
        "stage, or give a prompt (config.behavior.prompt.text / .video / .embedding), or "
        "use a real VLM and text prompts (config.vlm.model, behavior.prompt.source='text').")
  best = None
  for position in positions:
    reward = dataset.read_episode(position)["reward"].astype(np.float64)
    if len(reward) < n_frames + 1:
      continue
    sums = np.convolve(reward[1:], np.ones(n_frames), "valid")  # sums[s]: steps s+1..s+n
    start = int(np.argmax(sums)) + 1
    if best is None or sums[start - 1] > best[0]:
      best = (float(sums[start - 1]), position, start)
  if best is None:
    raise dataset_lib.DatasetError(f"{dataset.root}: every episode of {task} is shorter than "
                                   f"{n_frames + 1} steps; cannot cut a {n_frames}-frame clip")
  reward_sum, position, start = best
  frames = dataset.read_window(position, start, n_frames)["observation"]
  return Clip(task, int(dataset.episode_ids[position]), start, reward_sum, frames)


def prompt_video_path(workdir: str, task: str) -> str:
  return os.path.join(workdir, PROMPTS_DIR, f"{task}.gif")


def is_dataset_clip(path: str) -> bool:
  """Whether the video at `path` was cut by `ensure_prompt_video` (it has the sidecar)."""
  sidecar = os.path.splitext(path)[0] + ".json"
  if not os.path.isfile(sidecar):
    return False
  with open(sidecar) as f:
    return json.load(f).get("source") == SOURCE


def write_clip(clip: Clip, path: str, dataset_root: str) -> None:
  """Writes `clip.frames` as a GIF at `path` and its description next to it (atomically)."""
  tensorboard.write_gif(path, clip.frames, duration_ms=100)
  meta = {"source": SOURCE, "task": clip.task, "dataset": os.path.abspath(dataset_root),
          "episode_id": clip.episode_id, "start": clip.start, "n_frames": len(clip.frames),
          "reward_sum": clip.reward_sum}
  files.write_json(os.path.splitext(path)[0] + ".json", meta)


def ensure_prompt_video(workdir: str, task: str, dataset: dataset_reader.EpisodeDataset,
                        n_frames: int = 8) -> str:
  """`<workdir>/prompts/<task>.gif`, cut from `dataset` unless it is already there (a
  resumed run keeps the prompt its behaviour was trained for). Returns the path."""
  path = prompt_video_path(workdir, task)
  if os.path.exists(path) and not is_dataset_clip(path):
    raise FileExistsError(f"{path} exists but was not cut from the dataset (no {SOURCE} "
                          f"sidecar {os.path.splitext(path)[0]}.json); it was left as it is. "
                          "Move it away, or give it as config.behavior.prompt.video.")
  if not os.path.exists(path):
    write_clip(best_clip(dataset, task, n_frames), path, dataset.root)
  return path
