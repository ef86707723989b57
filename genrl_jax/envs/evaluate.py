"""Evaluation of a policy in the real environment: returns, normalised scores, videos.

The reference evaluates 10 episodes one after the other on one environment seeded with the
run's seed (spec 7.4). `evaluate` runs them on a batch of environments (`SerialEnvs` or
`ParallelEnvs`, `genrl_jax/envs/parallel.py`): every environment plays episodes until the
requested number is reached, so with one environment it is exactly the reference protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import tqdm

from genrl_jax.envs import tasks as tasks_lib


class Policy(Protocol):
  """Acts for a batch of environments; the carry is the policy's memory (e.g. a latent)."""

  def initial_carry(self, num: int) -> Any:
    ...

  def __call__(self, obs: dict[str, np.ndarray], carry: Any, step: int
               ) -> tuple[np.ndarray, Any]:
    """obs: `observation (N, H, W, 3)` uint8 and `is_first (N,)` -> actions `(N, A)`."""
    ...


class RandomPolicy:
  """Uniform actions in [-1, 1], from a seeded generator (for score bounds and tests)."""

  def __init__(self, action_dim: int, seed: int = 0):
    self.action_dim = action_dim
    self._rng = np.random.default_rng(seed)

  def initial_carry(self, num: int) -> None:
    return None

  def __call__(self, obs, carry, step):
    num = len(obs["is_first"])
    return self._rng.uniform(-1, 1, (num, self.action_dim)).astype(np.float32), carry


@dataclasses.dataclass
class EvalResult:
  """Per-episode returns `(E,)` and lengths (agent steps), by episode index, and the
  frames `(T + 1, H, W, 3)` of the first `record_episodes` episodes."""
  task: str
  returns: np.ndarray
  lengths: np.ndarray
  frames: list[np.ndarray]

  @property
  def mean_return(self) -> float:
    return float(np.mean(self.returns))

  @property
  def normalized_score(self) -> float | None:
    """`(mean - random) / (expert - random)` with the paper's bounds; None without bounds."""
    info = tasks_lib.task_info(self.task)
    if not info.has_bounds:
      return None
    return tasks_lib.normalized_score(self.task, self.mean_return)

  def summary(self) -> dict[str, Any]:
    return {"task": self.task, "episodes": int(len(self.returns)),
            "mean_return": self.mean_return, "std_return": float(np.std(self.returns)),
            "normalized_score": self.normalized_score,
            "returns": [float(r) for r in self.returns]}


def evaluate(envs: Any, policy: Policy, num_episodes: int, *, task: str | None = None,
             record_episodes: int = 1, progress: bool = False) -> EvalResult:
  """Plays `num_episodes` episodes with `policy` on the batch `envs` and returns them.

  `envs` has `num_envs`, `reset(indices=None)` and `step(actions, indices=None)` returning
  stacked time-step dicts (`ParallelEnvs`, `SerialEnvs`). Environments that finish an
  episode start the next one while episodes remain; the policy always sees all rows, with
  `is_first` marking the rows that just started. `progress`: a bar over the episodes.
  """
  if num_episodes < 1:
    raise ValueError(f"num_episodes={num_episodes}: expected >= 1")
  task = task or getattr(envs, "task", None)
  if task is None:
    raise ValueError("evaluate needs the task name (task=...) for the score bounds")
  num = envs.num_envs
  ts = envs.reset()
  obs = {"observation": np.array(ts["observation"]), "is_first": np.array(ts["is_first"])}
  carry = policy.initial_carry(num)
  started = min(num, num_episodes)
  active = np.arange(num) < started
  episode = np.arange(num)  # the episode index each environment is playing
  ret = np.zeros(num, np.float64)
  length = np.zeros(num, np.int64)
  frames: dict[int, list[np.ndarray]] = {
      e: [obs["observation"][e]] for e in range(min(started, record_episodes))}
  returns, lengths, finished = [], [], []
  step = 0
  bar = tqdm.tqdm(total=num_episodes, desc=f"eval {task}", disable=not progress,
                  dynamic_ncols=True)
  while active.any():
    actions, carry = policy(obs, carry, step)
    actions = np.asarray(actions)
    idx = np.flatnonzero(active)
    ts = envs.step(actions[idx], indices=idx)
    obs["observation"][idx] = ts["observation"]
    obs["is_first"][:] = False
    ret[idx] += ts["reward"]
    length[idx] += 1
    for row, i in enumerate(idx):
      if episode[i] in frames:
        frames[episode[i]].append(ts["observation"][row])
    done = idx[np.asarray(ts["is_last"], bool)]
    for i in done:
      returns.append(ret[i])
      lengths.append(length[i])
      finished.append(episode[i])
      bar.update(1)
      bar.set_postfix(mean_return=f"{np.mean(returns):.1f}")
      ret[i], length[i] = 0.0, 0
      if started < num_episodes:
        episode[i] = started
        started += 1
        first = envs.reset(indices=np.array([i]))
        obs["observation"][i] = first["observation"][0]
        obs["is_first"][i] = True
        if episode[i] < record_episodes:
          frames[episode[i]] = [first["observation"][0]]
      else:
        active[i] = False
    step += 1
  bar.close()
  order = np.argsort(finished, kind="stable")
  return EvalResult(task, np.asarray(returns, np.float64)[order],
                    np.asarray(lengths)[order],
                    [np.stack(frames[e]) for e in sorted(frames)])
