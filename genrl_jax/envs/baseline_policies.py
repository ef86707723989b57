"""The baseline policies' returns on a run's task: uniform random actions (the learning
report's baseline) and all-zero actions, played on the environment seeds the behaviours'
evaluation uses (`eval_seed`), so that a behaviour and its baselines meet the same starts.
"""

from __future__ import annotations

import jax
import ml_collections

from genrl_jax.envs import evaluate as evaluate_lib
from genrl_jax.envs import vector as vector_lib

EVAL_SEED_SALT = 7919
RANDOM_POLICY_SALT = 0x4A2D

BASELINES = ("random", "zero")


def eval_seed(config: ml_collections.ConfigDict) -> int:
  """The seed of the evaluation's first environment: behaviours and baselines alike."""
  return config.seed * 1000 + EVAL_SEED_SALT


def baseline_returns(config: ml_collections.ConfigDict, policy: str, episodes: int,
                     progress: bool = True) -> evaluate_lib.EvalResult:
  """`episodes` episodes of a baseline policy on `config.task`, on the environment seeds of
  the behaviour's evaluation, nothing rendered: `policy` 'random' (uniform actions, the
  learning report's baseline) or 'zero' (all-zero actions, `evaluate.ZeroPolicy`)."""
  if policy not in BASELINES:
    raise ValueError(f"baseline policy {policy!r}: expected one of {BASELINES}")
  seed = eval_seed(config)
  env_kwargs = {"time_limit": config.eval.time_limit} if config.eval.time_limit > 0 else {}
  with vector_lib.make_envs(config.task, config.eval.num_envs, seed,
                            parallel=config.eval.num_envs > 1,
                            env_kwargs={**env_kwargs, "render": False},
                            action_repeat=config.data.action_repeat) as envs:
    actor = (evaluate_lib.RandomPolicy(envs.action_dim, seed + RANDOM_POLICY_SALT)
             if policy == "random" else evaluate_lib.ZeroPolicy(envs.action_dim))
    return evaluate_lib.evaluate(envs, actor, episodes, task=config.task, record_episodes=0,
                                 progress=progress and jax.process_index() == 0)
