"""Collection of random-policy episodes from environments into a dataset.

Episode `i` of a collection (its id in the dataset) uses an environment seeded `seed + i`
and actions from `np.random.default_rng([seed, i])`, so a collection is deterministic and
an interrupted one resumes by collecting only the missing ids. Episodes go through an
`EpisodeWriter`, which keeps every finished episode when the collection is interrupted
(finished episodes still buffered are written on the way out). `collect_random_parallel`
runs several environments at once (one subprocess each) and writes the same episodes as
`collect_random`, whatever the number of environments. The agents that learn while
they collect are `collect.online`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tqdm

from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.data import episodes as episodes_lib


def collect_tasks(config: Any) -> list[str]:
  """The environments the data stage collects from (`config` the whole config):
  `data.collect_tasks`, else `data.collect_task`, else `config.task`."""
  return list(config.data.collect_tasks) or [config.data.collect_task or config.task]


def run_episode(env, policy: Callable[[dict], np.ndarray]) -> episodes_lib.Episode:
  """Runs one episode; returns it in the episode layout of `genrl_jax.data.episodes`."""
  steps = [env.reset()]
  while not steps[-1]["is_last"]:
    steps.append(env.step(policy(steps[-1])))
  return {k: np.stack([np.asarray(s[k]) for s in steps]) for k in episodes_lib.EPISODE_KEYS}


def collect_random(make_env: Callable[[int], object], writer: dataset_writer.EpisodeWriter,
                   num_episodes: int, seed: int, progress: bool = True) -> list[int]:
  """Collects episodes `0 .. num_episodes - 1` missing from `writer`'s dataset with uniform
  random actions in [-1, 1].

  `make_env(env_seed)` builds an environment. Returns the ids collected by this call.
  """
  todo = [i for i in range(num_episodes) if i not in writer.episode_ids]
  for i in tqdm.tqdm(todo, desc="collect (random policy)", disable=not progress or not todo):
    env = make_env(seed + i)
    rng = np.random.default_rng([seed, i])
    policy = lambda _, env=env, rng=rng: rng.uniform(-1, 1, env.action_dim).astype(np.float32)
    writer.add(run_episode(env, policy), episode_id=i)
    close = getattr(env, "close", None)
    if close is not None:
      close()
  return todo


def _todo(num_episodes: int, episode_ids: Sequence[int] | None, done: set[int]) -> list[int]:
  ids = range(num_episodes) if episode_ids is None else episode_ids
  if episode_ids is not None and len(ids) != num_episodes:
    raise ValueError(f"{len(ids)} episode ids for {num_episodes} episodes")
  return [int(i) for i in ids if int(i) not in done]


def collect_random_envs(envs, writer: dataset_writer.EpisodeWriter, num_episodes: int,
                        seed: int, progress: bool = True,
                        episode_ids: Sequence[int] | None = None) -> list[int]:
  """`collect_random` on the environments of `envs` (`genrl_jax.envs.vector`), each
  running one episode at a time; episodes may end at different steps.

  `episode_ids`: the ids of the `num_episodes` episodes (default `0 .. num_episodes - 1`);
  episode `i` uses the seeds `seed + i` and `[seed, i]` whatever its position.
  Returns the ids collected by this call.
  """
  # Imported on use, as in `collect_random_parallel`: importing `genrl_jax.envs` selects the
  # OpenGL backend.
  from genrl_jax.envs import driver as driver_lib  # pylint: disable=g-import-not-at-top

  todo = _todo(num_episodes, episode_ids, writer.episode_ids)
  driver = driver_lib.EpisodeDriver(envs, todo, seeds=lambda e: seed + e)
  rngs = {}  # env index -> the action rng of its episode
  bar = tqdm.tqdm(total=len(todo), desc=f"collect (random policy, {envs.num_envs} envs)",
                  disable=not progress or not todo)
  with bar:
    while True:
      for i, e in driver.start():
        rngs[i] = np.random.default_rng([seed, e])
      if not driver.active:
        break
      actions = np.stack(
          [rngs[i].uniform(-1, 1, envs.action_dim).astype(np.float32) for i in driver.rows])
      _, finished = driver.step(actions)
      for f in finished:
        writer.add(f.arrays(episodes_lib.EPISODE_KEYS), episode_id=f.episode)
        bar.update()
  return todo


def collect_random_parallel(task: str,
                            root: str,
                            num_episodes: int,
                            seed: int,
                            num_envs: int = 1,
                            *,
                            episodes_per_shard: int = 16,
                            parallel: bool | None = None,
                            progress: bool = True,
                            episode_ids: Sequence[int] | None = None,
                            **env_kwargs) -> list[int]:
  """`collect_random` for `make_env(task, ...)` with `num_envs` environments at once, into
  the dataset at `root` (created if needed).

  The dataset is identical to `collect_random(lambda s: make_env(task, seed=s, ...))`'s
  for any `num_envs`. `parallel`: one subprocess per environment (default: when
  `num_envs > 1`), else all in this process. `env_kwargs`: `fast_render`, `action_repeat`,
  `size` and domain options of `make_env` (e.g. `time_limit`). `episode_ids`: as in
  `collect_random_envs` (several tasks can share a dataset with disjoint ids).
  Returns the ids collected by this call.
  """
  from genrl_jax.envs import vector as vector_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.envs import tasks  # pylint: disable=g-import-not-at-top

  todo = _todo(num_episodes, episode_ids, dataset_reader.existing_episode_ids(root))
  if not todo:
    return []
  num_envs = max(1, min(num_envs, len(todo)))
  make_kwargs = {k: env_kwargs.pop(k) for k in ("fast_render", "action_repeat", "size")
                 if k in env_kwargs}
  # Built with the seeds of the first episodes, so that their first reset needs no rebuild.
  with vector_lib.make_envs(task, num_envs, seed + todo[0],
                            parallel=num_envs > 1 if parallel is None else parallel,
                            env_kwargs=env_kwargs, **make_kwargs) as envs:
    spec = dataset_lib.DatasetSpec(tasks.task_info(task).domain, envs.action_dim,
                                   make_kwargs.get("size", 64))
    source = {"collector": "random", "task": task, "seed": seed}
    with dataset_writer.EpisodeWriter(root, spec, episodes_per_shard, source) as writer:
      return collect_random_envs(envs, writer, num_episodes, seed, progress, episode_ids)
