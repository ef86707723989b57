"""The behaviour stage: learn each task's policy from its prompt in the trained MFWM.

`run(config, workdir)` learns one behaviour per task of `config.tasks` (default
`config.task`; `experiment_config.task_configs`), each by `run_task`: it opens the run's dataset
(offline starts, dataset clip prompts, the prompt-target report), resolves the prompt
(`prompts.behavior_prompt`) and its VLM, and calls `train_behavior`.

`train_behavior` reads the MFWM checkpoint of `<workdir>/mfwm`, embeds the prompt,
computes and saves the prompt's decoded target video (to check how the model reads the
prompt before training), then trains the actor-critic in imagination and checkpoints it
under `<workdir>/behavior/<name>/` (a directory per behaviour, so one MFWM serves many
tasks). A behaviour checkpoint records the fingerprint of its MFWM and its prompt
embedding; resuming with another MFWM or another prompt is refused.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from genrl_jax import experiment_config
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior import learner
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import input_pipeline
from genrl_jax.prompts import behavior_prompt
from genrl_jax.prompts import cache as prompt_cache
from genrl_jax.prompts import prompt as prompt_lib
from genrl_jax.report import open_loop, plots, tensorboard
from genrl_jax.report.metrics import MetricWriter
from genrl_jax.stages import workdir as workdir_lib
from genrl_jax.train import checkpoints, loop
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.vlm import embedder as embedder_lib
from genrl_jax.vlm.embedder import Embedder

PROMPT_KEY_SALT = 0x7A46
PROMPT_TARGET_FILE = "prompt_target.gif"
INIT_KEY_SALT = 0xB3A7


@dataclasses.dataclass
class BehaviorRun:
  """What the stage produced: the final state and where things were written."""
  state: Any
  directory: str
  prompt: str
  mfwm_fingerprint: str


def _check_resume(directory: str, fingerprint: str, embedding: np.ndarray,
                  denoise: bool) -> None:
  saved = checkpoints.read_checkpoint_config(directory)
  meta = saved.get("behavior_run", {})
  if meta.get("mfwm_fingerprint") != fingerprint:
    raise checkpoints.CheckpointError(
        f"behaviour checkpoint {directory} was trained in a different MFWM (fingerprint "
        f"{str(meta.get('mfwm_fingerprint'))[:12]}..., this MFWM {fingerprint[:12]}...); use "
        "another config.behavior.name or delete that directory")
  old = np.asarray(meta.get("prompt_embedding", []), np.float32)
  if old.shape != embedding.shape or not np.allclose(old, embedding, atol=1e-6):
    raise checkpoints.CheckpointError(
        f"behaviour checkpoint {directory} was trained for another prompt "
        f"({meta.get('prompt')!r}); use another config.behavior.name")
  if bool(meta.get("prompt_denoise", True)) != denoise:
    raise checkpoints.CheckpointError(
        f"behaviour checkpoint {directory} was trained with its prompt "
        f"{'' if meta.get('prompt_denoise', True) else 'not '}passed through the aligner "
        f"(config.behavior.prompt.denoise_video); use another config.behavior.name")


def _write_prompt_video(video: np.ndarray, path: str, workdir: str, stage: str,
                        step: int) -> None:
  """The decoded prompt `(T, 64, 64, 3)` as the GIF `path` and in TensorBoard (run
  `stage`, tag `prompt_target`, at `step`)."""
  gif = tensorboard.write_gif(path, video, duration_ms=100)
  with tensorboard.TensorBoardWriter(workdir, stage) as writer:
    writer.gif("prompt_target", step, gif, video.shape[1], video.shape[2])


def prompt_target_report(config: ml_collections.ConfigDict, prompt: prompt_lib.Prompt,
                         video: np.ndarray, dataset: dataset_reader.EpisodeDataset | None
                         ) -> dict[str, float]:
  """The decoded prompt target `video (T, H, W, 3)` against the prompt's clip (the frames
  the VLM saw) and the training episodes' mean frame (`report.open_loop`); empty for text
  and embedding prompts, and for clips of another frame size."""
  if prompt.kind != "video":
    return {}
  clip = prompt_lib.select_prompt_frames(prompt_lib.read_video(prompt.value),
                                         config.connector.n_frames)
  if clip.shape[1:] != video.shape[1:]:
    logging.info("behavior: prompt clip frames %s differ from the model's %s; no prompt "
                 "target error", clip.shape[1:], video.shape[1:])
    return {}
  mean = open_loop.training_mean_frame(config, dataset) if dataset is not None else None
  return open_loop.prompt_target_errors(video, clip, mean)


def train_behavior(config: ml_collections.ConfigDict, workdir: str,
                   embedder: Embedder | None,
                   dataset: dataset_reader.EpisodeDataset | None = None,
                   progress: bool = True, cache_dir: str | None = None) -> BehaviorRun:
  """Trains (or resumes) the behaviour `behavior_name(config)` and returns it.

  `embedder`: the VLM for text and video prompts; None when the prompt is a precomputed
  embedding or is in `cache_dir` (a prompt cache, `genrl_jax.prompts.cache`, entries
  of the VLM `config.vlm` names). `dataset`: the episodes whose posteriors give the
  offline start states (needed when `config.behavior.start == 'offline'`).
  """
  b = config.behavior
  if b.start not in learner.START_MODES:
    raise ValueError(f"config.behavior.start={b.start!r}: expected one of "
                     f"{learner.START_MODES}")
  mfwm_dir = os.path.join(workdir, "mfwm")
  host_params = mfwm_lib.load(mfwm_dir)
  fingerprint = checkpoints.params_fingerprint(host_params)
  mfwm = mfwm_lib.make_mfwm(config, wm_lib.action_dim_of(host_params["world_model"], config))
  prompt = behavior_prompt.config_prompt(config)
  identifier = None if embedder is not None else embedder_lib.embedder_identifier(config)
  embedding = prompt_lib.embed_prompt(prompt, embedder, mfwm.connector.embed_dim,
                                      cache_dir=cache_dir,
                                      identifier=identifier if cache_dir else None)

  mesh = mesh_lib.make_mesh()
  behavior = learner.make_behavior(config, mfwm.world_model.action_dim)
  optimizer = learner.make_optimizer(b)
  seed = experiment_config.behavior_seed(config)
  seed_key = jax.random.key(seed)
  mfwm_params = mesh_lib.replicate(host_params, mesh)
  denoise = behavior_prompt.prompt_denoise(config, prompt)
  target = learner.prompt_target(mfwm, mfwm_params, embedding, learner.num_starts(config),
                                 b.horizon + 1, jax.random.fold_in(seed_key, PROMPT_KEY_SALT),
                                 b.reward, denoise=denoise)
  params = learner.init_params(behavior, learner.feature_dim(mfwm.world_model),
                               jax.random.fold_in(seed_key, INIT_KEY_SALT))
  state = learner.create_state(behavior, optimizer, params, target)
  state = jax.device_put(state, learner.state_shardings(state, mesh))

  name = experiment_config.behavior_name(config)
  directory = os.path.join(workdir, "behavior", name)
  video = np.asarray(mfwm_lib.decode_prompt_video(mfwm, mfwm_params, embedding,
                                                  jax.random.fold_in(seed_key, 1),
                                                  denoise=denoise))[0]
  target_errors = prompt_target_report(config, prompt, video, dataset)
  meta = {"mfwm_fingerprint": fingerprint, "prompt": prompt.describe(),
          "prompt_kind": behavior_prompt.prompt_kind(prompt),
          "prompt_embedding": embedding.tolist(), "prompt_denoise": denoise,
          "mfwm_checkpoint": mfwm_dir,
          "embedder": getattr(embedder, "identifier", None) or identifier or "",
          **target_errors}
  ckpt = checkpoints.Checkpointer(
      directory, save_every=b.save_every, keep=b.keep,
      config={**experiment_config.config_to_dict(config), "behavior_run": meta})
  if ckpt.latest_step() is not None:
    _check_resume(directory, fingerprint, embedding, denoise)
    state = ckpt.restore(state)
    logging.info("behavior %s: resumed from step %d", name, int(state.step))
  elif jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    _write_prompt_video(video, os.path.join(directory, PROMPT_TARGET_FILE), workdir,
                        f"behavior_{name}", int(state.step))
    if target_errors:
      with MetricWriter(workdir, f"behavior_{name}") as writer:
        writer.write(int(state.step), target_errors)
  logging.info("behavior %s: prompt %s, %s starts, %d updates", name, prompt.describe(),
               b.start, b.num_steps)

  step = learner.jit_behavior_step(mesh, state, mfwm=mfwm, behavior=behavior,
                                   optimizer=optimizer, config=config)
  if b.start == "offline":
    if dataset is None:
      raise ValueError("config.behavior.start='offline' needs a dataset (config.data.path "
                       "or the run's own); use start='data_free' to train without data")
    workdir_lib.write_skipped_metrics(config, workdir, f"behavior_{name}", int(state.step),
                                      dataset)
    if dataset.spec.action_dim != mfwm.world_model.action_dim:
      raise dataset_lib.DatasetError(
          f"{dataset.root}: actions have {dataset.spec.action_dim} dimensions, the MFWM "
          f"{mfwm.world_model.action_dim}")
    sampler = input_pipeline.SequenceSampler(
        dataset, b.batch_size // jax.process_count(), b.batch_length,
        seed=seed * 1000 + 7, keys=("observation", "action", "is_first"))
    batches = workdir_lib.dataset_batches(config, sampler)
  else:
    batches = lambda start, stop: ({} for _ in range(start, stop))
  chunk_fn = None
  if b.updates_per_call > 1:
    chunk = learner.jit_behavior_steps(mesh, state, b.updates_per_call, mfwm=mfwm,
                                       behavior=behavior, optimizer=optimizer, config=config)
    chunk_fn = lambda s, base_key: chunk(s, base_key, mfwm_params)
  try:
    state = loop.train_loop(
        stage=f"behavior/{name}", state=state,
        step_fn=lambda s, batch, rng: step(s, batch, rng, mfwm_params),
        batches=batches, mesh=mesh, seed=seed + 1, num_steps=b.num_steps,
        log_every=b.log_every, checkpointer=ckpt,
        writer=MetricWriter(workdir, f"behavior_{name}"), progress=progress,
        chunk_fn=chunk_fn, updates_per_call=b.updates_per_call,
        on_exit=lambda: plots.write_learning_curves(workdir, f"behavior_{name}"))
  finally:
    ckpt.close()
  return BehaviorRun(state, directory, prompt.describe(), fingerprint)


def run_task(config: ml_collections.ConfigDict, workdir: str, progress: bool = True,
             embedders: dict[str, Embedder] | None = None) -> BehaviorRun:
  """Learns the behaviour of `config.task` from its prompt (`train_behavior`), with the
  run's dataset when there is one and the VLM its prompt needs (none when it is a
  precomputed embedding or cached; `embedders`: those already loaded, by identifier); a
  dataset clip prompt is cut first (`behavior_prompt.resolve_prompt`)."""
  dataset = None
  have_data = os.path.exists(os.path.join(workdir_lib.dataset_dir(config, workdir),
                                          dataset_lib.SPEC_FILE))
  # Offline starts and dataset clips need the episodes; otherwise they only give the mean
  # frame that prompt targets are scored against.
  if config.behavior.start == "offline" or have_data:
    dataset = workdir_lib.open_run_dataset(config, workdir, with_embeddings=False)
  config = behavior_prompt.resolve_prompt(config, workdir, dataset)
  cache_dir = prompt_cache.default_cache_dir(workdir)
  embedder = behavior_prompt.prompt_embedder(config, cache_dir, embedders)
  return train_behavior(config, workdir, embedder, dataset, progress, cache_dir=cache_dir)


def run(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
        ) -> list[BehaviorRun]:
  """The behaviour stage: `run_task` for every task of `config.tasks` (default:
  `config.task`). The VLM is loaded once, and before anything is written when a task's
  prompt needs it (a missing checkpoint is named then)."""
  tasks = experiment_config.task_configs(config)
  cache_dir = prompt_cache.default_cache_dir(workdir)
  embedders: dict[str, Embedder] = {}
  for c in tasks:
    if behavior_prompt.prompt_source(c) != "dataset_video":  # those are cut (written) first
      behavior_prompt.prompt_embedder(c, cache_dir, embedders)
  return [run_task(c, workdir, progress, embedders) for c in tasks]
