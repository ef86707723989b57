"""The eval stage: each learned behaviour played in the real environment (spec 7.4).

For a behaviour checkpoint `<workdir>/behavior/<name>/` (learned for `config.task`), the
policy filters observations through the MFWM's world model and acts with the actor's mean
(`behavior.policy.BehaviorPolicy`), for `config.eval.episodes` episodes on
`config.eval.num_envs` environments seeded from `config.seed` (one environment = the
reference's protocol). It writes, next to the checkpoint:

  eval.json         task, behaviour, prompt and its kind, VLM, start mode, returns, mean/std return,
                    normalised score (paper bounds), checkpoint step
  eval_episode.gif  the first `config.eval.record_episodes` episodes (frames as seen)

and then the workdir's results table (`results.md`, `results.csv`, `report/results.py`)
over every evaluated behaviour. A behaviour already evaluated at its latest checkpoint step
is skipped.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from genrl_jax import world_model as wm_lib
from genrl_jax.behavior import learner
from genrl_jax.behavior import policy as policy_lib
from genrl_jax.behavior import stage as behavior_stage
from genrl_jax.envs import evaluate as evaluate_lib
from genrl_jax.envs import parallel as parallel_envs
from genrl_jax.report import results as results_lib
from genrl_jax.report import tensorboard
from genrl_jax.train import checkpoints

EVAL_FILE = "eval.json"
VIDEO_FILE = "eval_episode.gif"
EVAL_SEED_SALT = 7919


def _write_gif(path: str, frames: np.ndarray, workdir: str, stage: str, step: int) -> None:
  """The episode frames `(T, H, W, 3)` as the GIF `path` and in TensorBoard (run `stage`,
  tag `eval_episode`, at `step`)."""
  gif = tensorboard.write_gif(path, frames, duration_ms=50)
  with tensorboard.TensorBoardWriter(workdir, stage) as writer:
    writer.gif("eval_episode", step, gif, frames.shape[1], frames.shape[2])


def _latest_step(directory: str) -> int | None:
  """The newest finished checkpoint step (Orbax names step folders by their number)."""
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()] \
      if os.path.isdir(directory) else []
  return max(steps, default=None)


def evaluate_behavior(config: ml_collections.ConfigDict, workdir: str,
                      progress: bool = True) -> dict[str, Any]:
  """Evaluates the behaviour `behavior_name(config)` of `config.task`; returns eval.json's
  content (also written). Skips (returning the saved one) when already done."""
  name = behavior_stage.behavior_name(config)
  directory = os.path.join(workdir, "behavior", name)
  step = _latest_step(directory)
  if step is None:
    raise checkpoints.CheckpointError(f"no behaviour checkpoint in {directory}; run the "
                                      "behavior stage first (--mode=behavior)")
  path = os.path.join(directory, EVAL_FILE)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("checkpoint_step") == step and saved.get("episodes") == config.eval.episodes:
      logging.info("eval %s: already evaluated at step %d", name, step)
      return saved
  meta = checkpoints.read_checkpoint_config(directory, step).get("behavior_run", {})
  mfwm_params = behavior_stage.load_mfwm(os.path.join(workdir, "mfwm"))
  action_dim = behavior_stage.action_dim_of(mfwm_params, config)
  actor_params = checkpoints.restore_subtree(directory, ("params", "actor"), step)
  model = wm_lib.make_world_model(config, action_dim)
  behavior = learner.make_behavior(config, action_dim)
  seed = config.seed * 1000 + EVAL_SEED_SALT
  policy = policy_lib.BehaviorPolicy(
      model, behavior.actor, {"world_model": mfwm_params["world_model"],
                              "actor": actor_params}, seed=seed)
  env_kwargs = {"time_limit": config.eval.time_limit} if config.eval.time_limit > 0 else {}
  with parallel_envs.make_envs(config.task, config.eval.num_envs, seed,
                               parallel=config.eval.num_envs > 1, env_kwargs=env_kwargs,
                               action_repeat=config.data.action_repeat,
                               fast_render=config.data.fast_render) as envs:
    if envs.action_dim != action_dim:
      raise ValueError(f"{config.task} has {envs.action_dim}-d actions; the MFWM in "
                       f"{workdir}/mfwm acts with {action_dim}")
    result = evaluate_lib.evaluate(envs, policy, config.eval.episodes, task=config.task,
                                   record_episodes=config.eval.record_episodes,
                                   progress=progress and jax.process_index() == 0)
  summary = dict(result.summary(), behavior=name, checkpoint_step=int(step),
                 prompt=meta.get("prompt", ""), prompt_kind=meta.get("prompt_kind", ""),
                 vlm=meta.get("embedder", ""),
                 start=config.behavior.start, seed=int(config.seed),
                 lengths=[int(n) for n in result.lengths])
  if jax.process_index() == 0:
    if result.frames:
      _write_gif(os.path.join(directory, VIDEO_FILE), np.concatenate(result.frames),
                 workdir, f"behavior_{name}", int(step))
    checkpoints.write_json_atomic(path, summary)
  score = summary["normalized_score"]
  logging.info("eval %s: return %.1f +- %.1f over %d episodes%s", name,
               summary["mean_return"], summary["std_return"], summary["episodes"],
               "" if score is None else f", normalised score {score:.3f}")
  return summary


def run_eval(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
             ) -> list[dict[str, Any]]:
  """Evaluates the behaviours of the config's tasks, then rewrites the results table."""
  out = [evaluate_behavior(c, workdir, progress) for c in behavior_stage.task_configs(config)]
  if jax.process_index() == 0:
    results_lib.write_results(workdir)
  return out
