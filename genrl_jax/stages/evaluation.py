"""The eval stage (`--mode=eval`; the evaluation itself is `envs.evaluate`): each learned
behaviour played in the real environment (method.md §7.4).

For a behaviour checkpoint `<workdir>/behavior/<name>/` (learned for `config.task`), the
policy filters observations through the MFWM's world model (sampling the posterior, as the
reference, or with its mode when `config.behavior.eval_state_mean`) and acts with the
actor's mean (`behavior.policy.BehaviorPolicy`), for `config.eval.episodes` episodes on
`config.eval.num_envs` environments seeded from `config.seed` (one environment = the
reference's protocol). It writes, next to the checkpoint:

  eval.json         task, behaviour, prompt and its kind, VLM, start mode, returns, mean/std return,
                    normalised score (paper bounds), checkpoint step; the learning report:
                    the random policy's mean/std return on the same environment seeds,
                    `beats_random` (mean return above the random mean + 2 std), the
                    decoded prompt target's error against the prompt clip and the MFWM's
                    open-loop error, each with its mean-frame baseline; the imagination
                    gap (`imagination_gap`): GenRL's reward of the episodes as the world
                    model sees them, of the model's rollouts of their actions and of the
                    actor's imagined rollouts from the same states, and of the task's
                    random-policy dataset episodes
  eval_episode.gif  the first `config.eval.record_episodes` episodes (frames as seen)

(`eval_<task>.json` and `eval_episode_<task>.gif` when `config.task` is not the task the
behaviour was trained for: a cross-task control, e.g. `--config.task=stickman_legs_up
--config.behavior.name=stickman_lying_down`, which keeps the own-task evaluation)

and then the workdir's results table (`results.md`, `results.csv`, `report/results.py`)
and `plots/results.png` over every evaluated behaviour. A behaviour already evaluated at
its latest checkpoint step is skipped.

The random-policy baseline plays `config.eval.random_episodes` episodes of uniform random
actions without rendering (returns only) and is kept per task in
`<workdir>/random_policy/<task>.json`, reused while its settings are the same.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from genrl_jax import experiment_config
from genrl_jax import files
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior import latent_gap
from genrl_jax.behavior import learner
from genrl_jax.behavior import policy as policy_lib
from genrl_jax.data import dataset_reader
from genrl_jax.envs import evaluate as evaluate_lib
from genrl_jax.envs.baseline_policies import baseline_returns, eval_seed
from genrl_jax.envs import vector as vector_lib
from genrl_jax.prompts import dataset_clips
from genrl_jax.report import open_loop
from genrl_jax.report import plots
from genrl_jax.report import results as results_lib
from genrl_jax.report import tensorboard
from genrl_jax.report.metrics import MetricWriter, read_metrics
from genrl_jax.stages import workdir as workdir_lib
from genrl_jax.train import checkpoints

EVAL_FILE = "eval.json"
VIDEO_FILE = "eval_episode.gif"
RANDOM_DIR = "random_policy"
# The imagination gap's eval.json entries (`imagination_gap`; None where not measured).
LATENT_METRICS = ("latent_reward", "replayed_latent_reward", "imagined_latent_reward",
                  "dataset_latent_reward", "dataset_replayed_latent_reward")
# eval.json entries also written to metrics.jsonl / TensorBoard (as eval_<key>).
EVAL_METRICS = ("mean_return", "std_return", "random_mean_return", "random_std_return",
                "beats_random") + LATENT_METRICS


def _write_gif(path: str, frames: np.ndarray, workdir: str, stage: str, step: int) -> None:
  """The episode frames `(T, H, W, 3)` as the GIF `path` and in TensorBoard (run `stage`,
  tag `eval_episode`, at `step`)."""
  gif = tensorboard.write_gif(path, frames, duration_ms=50)
  with tensorboard.TensorBoardWriter(workdir, stage) as writer:
    writer.gif("eval_episode", step, gif, frames.shape[1], frames.shape[2])


def random_baseline(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
                    ) -> dict[str, Any]:
  """The random policy's returns on `config.task`: `config.eval.random_episodes` episodes
  (at least 1) on the environment seeds of the behaviour's evaluation, nothing rendered.
  Read from `<workdir>/random_policy/<task>.json` when it holds the same settings."""
  n = int(config.eval.random_episodes)
  if n < 1:
    raise ValueError(f"config.eval.random_episodes={n}: expected >= 1 (the learning "
                     "report's random-policy baseline)")
  seed = eval_seed(config)
  settings = {"task": config.task, "episodes": n, "seed": seed,
              "action_repeat": int(config.data.action_repeat),
              "time_limit": float(config.eval.time_limit)}
  path = os.path.join(workdir, RANDOM_DIR, f"{config.task}.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if all(saved.get(k) == v for k, v in settings.items()):
      return saved
  result = baseline_returns(config, "random", n, progress)
  out = dict(settings, returns=[float(r) for r in result.returns],
             mean_return=result.mean_return, std_return=float(np.std(result.returns)),
             source=f"measured ({n} episodes)")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_json(path, out)
  logging.info("eval %s: random policy %.1f +- %.1f over %d episodes", config.task,
               out["mean_return"], out["std_return"], n)
  return out


def learning_report(summary: dict[str, Any], random: dict[str, Any], meta: dict[str, Any],
                    open_loop_errors: dict[str, Any]) -> dict[str, Any]:
  """The report columns of one behaviour: the random-policy baseline and whether the
  behaviour beats it by 2 std, the prompt target's and the MFWM's open-loop errors with
  their mean-frame baselines (None where not measured), and the fingerprint of the
  behaviour's MFWM (12 hex). Open-loop errors of another MFWM than the behaviour's (the
  MFWM trained again since) are not reported."""
  bar = random["mean_return"] + 2.0 * random["std_return"]
  fingerprint = meta.get("mfwm_fingerprint")
  scored = open_loop_errors.get("mfwm_fingerprint")
  if fingerprint and scored and scored != fingerprint:
    logging.warning("eval: mfwm/open_loop.json scored MFWM %s..., the behaviour learned in "
                    "%s...; its open-loop errors are left out", scored[:12], fingerprint[:12])
    open_loop_errors = {}
  return {
      "random_mean_return": random["mean_return"], "random_std_return": random["std_return"],
      "random_episodes": len(random["returns"]), "random_source": random["source"],
      "beats_random": bool(summary["mean_return"] > bar),
      "prompt_target_mse": meta.get("prompt_target_mse"),
      "prompt_mean_frame_mse": meta.get("prompt_mean_frame_mse"),
      "open_loop_mse": open_loop_errors.get("open_loop_mse"),
      "open_loop_mean_frame_mse": open_loop_errors.get("mean_frame_mse"),
      "open_loop_split": open_loop_errors.get("split"),
      "mfwm_fingerprint": fingerprint[:12] if fingerprint else None,
  }


def imagination_gap(config: ml_collections.ConfigDict, workdir: str, mfwm: mfwm_lib.MFWM,
                    mfwm_params: Any, target: dict[str, Any], episodes: list[dict[str, Any]],
                    actor: Any, actor_params: Any) -> dict[str, Any]:
  """The report's imagination-gap columns (`behavior/latent_gap.py`): GenRL's reward of
  the evaluation `episodes` as the world model sees them (`latent_reward`), of the model's
  rollouts of their own actions (`replayed_latent_reward`) and of the actor's imagined
  rollouts (`imagined_latent_reward`) from the same states, and the first two for up to
  `config.eval.latent_episodes` random-policy episodes of the task from the run's dataset
  (`dataset_latent_reward`, `dataset_replayed_latent_reward`; None when it holds none of
  the task's)."""
  out = dict.fromkeys(LATENT_METRICS)
  n = int(config.eval.latent_episodes)
  # Episodes shorter than one window of horizon + 1 steps (a short time limit) hold none.
  fits = lambda e: len(e["is_first"]) > config.behavior.horizon
  episodes = [e for e in episodes if fits(e)]
  if n <= 0 or not episodes:
    return out
  key = jax.random.key(eval_seed(config))
  kwargs = dict(stride=int(config.eval.latent_stride))
  wm_params = mfwm_params["world_model"]
  ours = latent_gap.latent_rewards(mfwm, wm_params, target, episodes[:n], key, config.behavior,
                                   actor=actor, actor_params=actor_params, **kwargs)
  out.update(latent_reward=ours["realized"], replayed_latent_reward=ours["replayed"],
             imagined_latent_reward=ours["imagined"])
  root = workdir_lib.dataset_dir(config, workdir)
  if os.path.isdir(root):
    dataset = dataset_reader.open_dataset(root)
    positions = dataset_clips.task_episodes(dataset, config.task)[:n]
    data = [e for e in map(dataset.read_episode, positions) if fits(e)]
    if data:
      random = latent_gap.latent_rewards(mfwm, wm_params, target, data,
                                         jax.random.fold_in(key, 1), config.behavior, **kwargs)
      out.update(dataset_latent_reward=random["realized"],
                 dataset_replayed_latent_reward=random["replayed"])
  return out


def eval_files(task: str, trained_task: str) -> tuple[str, str]:
  """The names of a behaviour's eval JSON and GIF when played in `task`: `eval.json` and
  `eval_episode.gif` in the task it was trained for, `eval_<task>.json` and
  `eval_episode_<task>.gif` in another (a cross-task control keeps the own-task result)."""
  if task == trained_task:
    return EVAL_FILE, VIDEO_FILE
  stem, video_stem = os.path.splitext(EVAL_FILE)[0], os.path.splitext(VIDEO_FILE)[0]
  return f"{stem}_{task}.json", f"{video_stem}_{task}.gif"


def evaluate_behavior(config: ml_collections.ConfigDict, workdir: str,
                      progress: bool = True) -> dict[str, Any]:
  """Evaluates the behaviour `behavior_name(config)` of `config.task`; returns eval.json's
  content (also written). Skips (returning the saved one) when already done."""
  name = experiment_config.behavior_name(config)
  directory = os.path.join(workdir, "behavior", name)
  step = checkpoints.newest_intact_step(directory)  # damaged newer steps: a warning
  if step is None:
    raise checkpoints.CheckpointError(f"no behaviour checkpoint in {directory}; run the "
                                      "behavior stage first (--mode=behavior)")
  trained = checkpoints.read_checkpoint_config(directory, step)
  meta = trained.get("behavior_run", {})
  eval_file, video_file = eval_files(config.task, trained.get("task", config.task))
  path = os.path.join(directory, eval_file)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if (saved.get("checkpoint_step") == step and saved.get("episodes") == config.eval.episodes
        and saved.get("random_episodes") == config.eval.random_episodes
        and saved.get("task") == config.task):
      logging.info("eval %s: already evaluated on %s at step %d", name, config.task, step)
      if jax.process_index() == 0:
        _write_eval_metrics(workdir, name, saved)  # if a kill came before it was written
      return saved
  mfwm_params = mfwm_lib.load(os.path.join(workdir, "mfwm"))
  action_dim = wm_lib.action_dim_of(mfwm_params["world_model"], config)
  actor_params = checkpoints.restore_subtree(directory, ("params", "actor"), step)
  mfwm = mfwm_lib.make_mfwm(config, action_dim)
  model = mfwm.world_model
  behavior = learner.make_behavior(config, action_dim)
  seed = eval_seed(config)
  policy = policy_lib.BehaviorPolicy(
      model, behavior.actor, {"world_model": mfwm_params["world_model"],
                              "actor": actor_params}, seed=seed,
      sample_state=not config.behavior.eval_state_mean)
  env_kwargs = {"time_limit": config.eval.time_limit} if config.eval.time_limit > 0 else {}
  with vector_lib.make_envs(config.task, config.eval.num_envs, seed,
                            parallel=config.eval.num_envs > 1, env_kwargs=env_kwargs,
                            action_repeat=config.data.action_repeat,
                            fast_render=config.data.fast_render) as envs:
    if envs.action_dim != action_dim:
      raise ValueError(f"{config.task} has {envs.action_dim}-d actions; the MFWM in "
                       f"{workdir}/mfwm acts with {action_dim}")
    # Kept whole: the first record_episodes go to the GIF, the first latent_episodes are
    # filtered through the world model for the imagination gap.
    result = evaluate_lib.evaluate(envs, policy, config.eval.episodes, task=config.task,
                                   record_episodes=max(config.eval.record_episodes,
                                                       config.eval.latent_episodes),
                                   progress=progress and jax.process_index() == 0)
  summary = dict(result.summary(), behavior=name, checkpoint_step=int(step),
                 prompt=meta.get("prompt", ""), prompt_kind=meta.get("prompt_kind", ""),
                 vlm=meta.get("embedder", ""),
                 start=config.behavior.start, seed=int(config.seed),
                 lengths=[int(n) for n in result.lengths])
  summary.update(learning_report(summary, random_baseline(config, workdir, progress), meta,
                                 open_loop.read_open_loop_errors(workdir)))
  target = checkpoints.restore_subtree(directory, ("prompt_target",), step)
  summary.update(imagination_gap(config, workdir, mfwm, mfwm_params, target, result.recorded,
                                 behavior.actor, actor_params))
  recorded = result.frames[:config.eval.record_episodes]
  if jax.process_index() == 0:
    if recorded:
      _write_gif(os.path.join(directory, video_file), np.concatenate(recorded),
                 workdir, f"behavior_{name}", int(step))
    files.write_json(path, summary)
    _write_eval_metrics(workdir, name, summary)
  score = summary["normalized_score"]
  logging.info("eval %s: return %.1f +- %.1f over %d episodes%s; random policy %.1f +- %.1f "
               "(%s)", name, summary["mean_return"], summary["std_return"],
               summary["episodes"], "" if score is None else f", normalised score {score:.3f}",
               summary["random_mean_return"], summary["random_std_return"],
               "beats it by 2 std" if summary["beats_random"] else "does not beat it by 2 std")
  return summary


def _write_eval_metrics(workdir: str, name: str, summary: dict[str, Any]) -> None:
  """Adds the `eval_*` metrics of `summary` (an eval.json) to metrics.jsonl, unless the
  same row is there already at its checkpoint step: eval.json is written first, so a run
  stopped between the two writes the row when it is run again."""
  stage, step = f"behavior_{name}", int(summary["checkpoint_step"])
  row = {f"eval_{k}": summary[k] for k in EVAL_METRICS if summary.get(k) is not None}
  if any(r.get("step") == step and all(r.get(k) == float(v) for k, v in row.items())
         for r in read_metrics(workdir, stage)):
    return
  with MetricWriter(workdir, stage) as writer:
    writer.write(step, row)


def run(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
        ) -> list[dict[str, Any]]:
  """The eval stage: evaluates the behaviours of the config's tasks, then rewrites the
  results table and its figure."""
  out = [evaluate_behavior(c, workdir, progress) for c in experiment_config.task_configs(config)]
  if jax.process_index() == 0:
    rows = results_lib.write_results(workdir)
    plots.plot_results(rows, os.path.join(workdir, "plots", "results.png"))
  return out
