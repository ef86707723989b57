"""Evaluation of a policy in the real environment: returns, normalised scores, videos.

The reference evaluates 10 episodes one after the other on one environment seeded with the
run's seed (method.md §7.4). `evaluate` runs them on a batch of environments (`SerialEnvs` or
`ParallelEnvs`, `genrl_jax/envs/vector.py`): every environment plays episodes until the
requested number is reached, so with one environment it is exactly the reference protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import tqdm

from genrl_jax.envs import driver as driver_lib
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


class ZeroPolicy:
  """All-zero actions: a passive baseline (the body goes limp). On tasks a body reaches by
  falling (the lying-down ones) it scores far above the random policy, which flails."""

  def __init__(self, action_dim: int):
    self.action_dim = action_dim

  def initial_carry(self, num: int) -> None:
    return None

  def __call__(self, obs, carry, step):
    return np.zeros((len(obs["is_first"]), self.action_dim), np.float32), carry


RECORDED_KEYS = ("observation", "action", "is_first")


@dataclasses.dataclass
class EvalResult:
  """Per-episode returns `(E,)` and lengths (agent steps), by episode index, and the first
  `record_episodes` episodes whole (`recorded`: `observation`, `action`, the action that
  led to each frame, and `is_first`, `(T + 1, ...)` each), e.g. to filter them through a
  world model."""
  task: str
  returns: np.ndarray
  lengths: np.ndarray
  recorded: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)

  @property
  def frames(self) -> list[np.ndarray]:
    """The recorded episodes' frames, `(T + 1, H, W, 3)` each."""
    return [r["observation"] for r in self.recorded]

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
  episode start the next one while episodes remain (`envs.driver`); the policy always sees
  all rows, with `is_first` marking the rows that just started (rows of environments that
  play no episode are ignored). `progress`: a bar over the episodes.
  """
  if num_episodes < 1:
    raise ValueError(f"num_episodes={num_episodes}: expected >= 1")
  task = task or getattr(envs, "task", None)
  if task is None:
    raise ValueError("evaluate needs the task name (task=...) for the score bounds")
  carry = policy.initial_carry(envs.num_envs)
  driver = driver_lib.EpisodeDriver(envs, range(num_episodes))
  returns, lengths, recorded = {}, {}, {}  # by episode index
  step = 0
  bar = tqdm.tqdm(total=num_episodes, desc=f"eval {task}", disable=not progress,
                  dynamic_ncols=True)
  while True:
    driver.start()
    if not driver.active:
      break
    actions, carry = policy({"observation": driver.obs, "is_first": driver.is_first}, carry,
                            step)
    _, finished = driver.step(np.asarray(actions)[driver.rows])
    for f in finished:
      # Summed in float64, one step after the other.
      ret = np.float64(0.0)
      for s in f.steps[1:]:
        ret += np.float64(s["reward"])
      returns[f.episode], lengths[f.episode] = ret, len(f.steps) - 1
      if f.episode < record_episodes:
        recorded[f.episode] = f.arrays(RECORDED_KEYS)
      bar.update(1)
      bar.set_postfix(mean_return=f"{np.mean(list(returns.values())):.1f}")
    step += 1
  bar.close()
  return EvalResult(task, np.asarray([returns[e] for e in sorted(returns)], np.float64),
                    np.asarray([lengths[e] for e in sorted(lengths)]),
                    [recorded[e] for e in sorted(recorded)])
