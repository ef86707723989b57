"""Collection of episodes from environments into an episode directory.

Episode `i` of a collection uses the environment seed `seed + i` and actions from
`np.random.default_rng([seed, i])`, so a collection is deterministic and an interrupted one
resumes by collecting only the missing indices; finished episodes are never rewritten.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tqdm

from genrl_jax.data import episodes as episodes_lib


def run_episode(env, policy: Callable[[dict], np.ndarray]) -> episodes_lib.Episode:
  """Runs one episode; returns it in the episode layout of `genrl_jax.data.episodes`."""
  steps = [env.reset()]
  while not steps[-1]["is_last"]:
    steps.append(env.step(policy(steps[-1])))
  return {k: np.stack([np.asarray(s[k]) for s in steps]) for k in episodes_lib.EPISODE_KEYS}


def collect_random(make_env: Callable[[int], object], directory: str, num_episodes: int,
                   seed: int, progress: bool = True) -> list[int]:
  """Collects `num_episodes` episodes with uniform random actions in [-1, 1].

  `make_env(env_seed)` builds an environment. Returns the indices collected by this call.
  """
  done = episodes_lib.episode_indices(directory)
  todo = [i for i in range(num_episodes) if i not in done]
  for i in tqdm.tqdm(todo, desc="collect (random policy)", disable=not progress or not todo):
    env = make_env(seed + i)
    rng = np.random.default_rng([seed, i])
    policy = lambda _, env=env, rng=rng: rng.uniform(-1, 1, env.action_dim).astype(np.float32)
    episodes_lib.save_episode(directory, i, run_episode(env, policy))
    close = getattr(env, "close", None)
    if close is not None:
      close()
  return todo
