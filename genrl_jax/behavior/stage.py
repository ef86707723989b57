"""The behaviour stage: learn one task's policy from its prompt in a trained MFWM.

Reads the MFWM checkpoint of `<workdir>/mfwm`, embeds the prompt, computes and saves the
prompt's decoded target video (to check how the model reads the prompt before training),
then trains the actor-critic in imagination and checkpoints it under
`<workdir>/behavior/<name>/` (a directory per behaviour, so one MFWM serves many tasks).
A behaviour checkpoint records the fingerprint of its MFWM and its prompt embedding;
resuming with another MFWM or another prompt is refused.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from genrl_jax import configs
from genrl_jax import mfwm as mfwm_lib
from genrl_jax.behavior import dataset_prompts
from genrl_jax.behavior import learner
from genrl_jax.behavior import prompts as prompts_lib
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import input_pipeline
from genrl_jax.envs.prompts import task_prompt
from genrl_jax.report import open_loop
from genrl_jax.report import tensorboard
from genrl_jax.report.metrics import MetricWriter
from genrl_jax.train import checkpoints, distributed, loop, parallel
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


def behavior_name(config: ml_collections.ConfigDict) -> str:
  return config.behavior.name or config.task


def task_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One config per behaviour task: `config.tasks` (empty: `config.task` alone), each with
  `task` set. Several tasks use their own default prompts and names, so
  `behavior.prompt.*` and `behavior.name` must then be empty."""
  tasks = list(config.tasks) or [config.task]
  if len(tasks) > 1:
    p = config.behavior.prompt
    if p.text or p.video or p.embedding or config.behavior.name:
      raise ValueError(f"config.tasks lists {len(tasks)} tasks {tasks}; a custom prompt "
                       "(behavior.prompt.*) or behavior.name applies to one task: set "
                       "config.tasks to that task")
  out = []
  for task in tasks:
    c = ml_collections.ConfigDict(config.to_dict())
    c.task = task
    out.append(c)
  return out


def behavior_seed(config: ml_collections.ConfigDict) -> int:
  """`behavior.seed`, or `config.seed` while it is -1 (the default). Behaviour settings may
  change between runs in one workdir, so several seeds can learn in one MFWM."""
  return config.behavior.seed if config.behavior.seed >= 0 else config.seed


PROMPT_SOURCES = ("auto", "text", "dataset_video")


def prompt_source(config: ml_collections.ConfigDict) -> str:
  """Where the behaviour's prompt comes from: 'custom' (one of `behavior.prompt.text`,
  `.video`, `.embedding` is set), else 'text' (the task's text prompt) or 'dataset_video'
  (a clip of the task's own episodes, `dataset_prompts`), as `behavior.prompt.source`
  says; 'auto' picks dataset_video for a stand-in VLM without semantics (text prompts
  would name nothing), text otherwise."""
  p = config.behavior.prompt
  source = p.get("source", "auto")
  if source not in PROMPT_SOURCES:
    raise ValueError(f"config.behavior.prompt.source={source!r}: expected one of "
                     f"{PROMPT_SOURCES}")
  if p.text or p.video or p.embedding:
    return "custom"
  if source == "auto":
    stand_in = bool(config.vlm.name) and not embedder_lib.has_semantics(config)
    return "dataset_video" if stand_in else "text"
  return source


def prompt_kind(prompt: prompts_lib.Prompt) -> str:
  """'text', 'video', 'video (dataset clip)' or 'embedding', for results tables."""
  if prompt.kind == "video" and dataset_prompts.is_dataset_clip(prompt.value):
    return f"video ({dataset_prompts.SOURCE})"
  return prompt.kind


def resolve_prompt(config: ml_collections.ConfigDict, workdir: str,
                   dataset: dataset_lib.EpisodeDataset | None) -> ml_collections.ConfigDict:
  """`config`, or a copy naming its prompt concretely when `prompt_source` is
  'dataset_video': the clip `<workdir>/prompts/<task>.gif` cut from `dataset`
  (`dataset_prompts.ensure_prompt_video`; process 0 writes it) as `behavior.prompt.video`.

  With `source='auto'` and no episodes of the task to cut from, the task's text prompt is
  used, with a warning; an explicit `source='dataset_video'` raises instead.
  """
  if prompt_source(config) != "dataset_video":
    return config
  task = config.task
  explicit = config.behavior.prompt.source == "dataset_video"
  if dataset is None or not dataset_prompts.task_episodes(dataset, task):
    if explicit and dataset is None:
      raise ValueError(f"config.behavior.prompt.source='dataset_video' needs the run's "
                       f"dataset to cut {task}'s clip from; run the data stage first")
    if explicit:
      dataset_prompts.best_clip(dataset, task)  # raises, naming the tasks it does hold
    logging.warning("behavior %s: no episodes of %s to cut a video prompt from; using its "
                    "TEXT prompt, embedded by %s, which has no semantics",
                    behavior_name(config), task, embedder_lib.embedder_identifier(config))
    return config
  if jax.process_index() == 0:
    path = dataset_prompts.ensure_prompt_video(workdir, task, dataset,
                                               config.connector.n_frames)
  distributed.barrier(f"behavior {behavior_name(config)}: prompt clip")
  path = dataset_prompts.prompt_video_path(workdir, task)
  out = ml_collections.ConfigDict(config.to_dict())
  out.behavior.prompt.video = path
  return out


def config_prompt(config: ml_collections.ConfigDict) -> prompts_lib.Prompt:
  """The prompt the config names (`behavior.prompt.{text,video,embedding}`; all empty: the
  reference's text prompt of `config.task`, unless `resolve_prompt` is needed first)."""
  p = config.behavior.prompt
  given = {k: v for k, v in (("text", p.text), ("video", p.video), ("embedding", p.embedding))
           if v}
  if not given:
    if p.get("source", "auto") == "dataset_video":
      raise ValueError("config.behavior.prompt.source='dataset_video': the clip is cut from "
                       "the run's dataset by behavior.stage.resolve_prompt (which "
                       "genrl_jax.pipeline.run_behavior calls); call it first")
    return prompts_lib.parse_prompt(text=task_prompt(config.task))
  if len(given) > 1:
    raise ValueError(f"config.behavior.prompt: give one of text, video, embedding; got "
                     f"{sorted(given)}")
  return prompts_lib.parse_prompt(**given)


def prompt_denoise(config: ml_collections.ConfigDict, prompt: prompts_lib.Prompt) -> bool:
  """Whether the prompt's embedding goes through the aligner before the connector: always
  for text and precomputed embeddings, for videos unless `behavior.prompt.denoise_video`
  is False. The reference maps video prompts through the aligner too; with a VLM whose
  clip embeddings lie close together (the random-weight CLIP: mean pairwise cosine 0.9),
  the aligner, trained to undo LaFiTe noise, pulls them to their common mean and the
  target loses the pose (the tiny stickman's legs_up prompt decodes at 1.47 x the
  mean-frame MSE with it, 0.84 x without)."""
  return prompt.kind != "video" or bool(config.behavior.prompt.get("denoise_video", True))


def load_mfwm(directory: str) -> dict:
  """The params of the latest MFWM checkpoint in `directory`, with a connector."""
  if not os.path.isdir(directory):
    raise checkpoints.CheckpointError(f"no MFWM checkpoint directory {directory}; run the "
                                      "mfwm stage first")
  params = checkpoints.restore_subtree(directory, ("params",))
  if "connector" not in params:
    raise checkpoints.CheckpointError(
        f"the MFWM in {directory} has no connector (it was trained on episodes without "
        "'vlm_embedding'); behaviour learning from prompts needs one: embed the dataset "
        "(config.vlm.name) and train the MFWM again")
  return params


def action_dim_of(params: dict, model_config: ml_collections.ConfigDict) -> int:
  """The action size of a world model, read off its first prior layer."""
  wm = model_config.world_model
  rows = params["world_model"]["rssm"]["img_in"]["dense"]["kernel"].shape[0]
  return rows - wm.stoch * wm.discrete


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


def prompt_target_report(config: ml_collections.ConfigDict, prompt: prompts_lib.Prompt,
                         video: np.ndarray, dataset: dataset_lib.EpisodeDataset | None
                         ) -> dict[str, float]:
  """The decoded prompt target `video (T, H, W, 3)` against the prompt's clip (the frames
  the VLM saw) and the training episodes' mean frame (`report.open_loop`); empty for text
  and embedding prompts, and for clips of another frame size."""
  if prompt.kind != "video":
    return {}
  clip = prompts_lib.select_prompt_frames(prompts_lib.read_video(prompt.value),
                                          config.connector.n_frames)
  if clip.shape[1:] != video.shape[1:]:
    logging.info("behavior: prompt clip frames %s differ from the model's %s; no prompt "
                 "target error", clip.shape[1:], video.shape[1:])
    return {}
  mean = open_loop.training_mean_frame(config, dataset) if dataset is not None else None
  return open_loop.prompt_target_errors(video, clip, mean)


def run_behavior(config: ml_collections.ConfigDict, workdir: str,
                 embedder: Embedder | None,
                 dataset: dataset_lib.EpisodeDataset | None = None,
                 progress: bool = True, cache_dir: str | None = None) -> BehaviorRun:
  """Trains (or resumes) the behaviour `behavior_name(config)` and returns it.

  `embedder`: the VLM for text and video prompts; None when the prompt is a precomputed
  embedding or is in `cache_dir` (a prompt cache, `genrl_jax.vlm.prompt_cache`, entries
  of the VLM `config.vlm` names). `dataset`: the episodes whose posteriors give the
  offline start states (needed when `config.behavior.start == 'offline'`).
  """
  b = config.behavior
  if b.start not in learner.START_MODES:
    raise ValueError(f"config.behavior.start={b.start!r}: expected one of "
                     f"{learner.START_MODES}")
  mfwm_dir = os.path.join(workdir, "mfwm")
  host_params = load_mfwm(mfwm_dir)
  fingerprint = checkpoints.params_fingerprint(host_params)
  mfwm = mfwm_lib.make_mfwm(config, action_dim_of(host_params, config))
  prompt = config_prompt(config)
  identifier = None if embedder is not None else embedder_lib.embedder_identifier(config)
  embedding = prompts_lib.embed_prompt(prompt, embedder, mfwm.connector.embed_dim,
                                       cache_dir=cache_dir,
                                       identifier=identifier if cache_dir else None)

  mesh = parallel.make_mesh()
  behavior = learner.make_behavior(config, mfwm.world_model.action_dim)
  optimizer = learner.make_optimizer(b)
  seed = behavior_seed(config)
  seed_key = jax.random.key(seed)
  mfwm_params = parallel.replicate(host_params, mesh)
  denoise = prompt_denoise(config, prompt)
  target = learner.prompt_target(mfwm, mfwm_params, embedding, learner.num_starts(config),
                                 b.horizon + 1, jax.random.fold_in(seed_key, PROMPT_KEY_SALT),
                                 b.reward, denoise=denoise)
  params = learner.init_params(behavior, learner.feature_dim(mfwm.world_model),
                               jax.random.fold_in(seed_key, INIT_KEY_SALT))
  state = learner.create_state(behavior, optimizer, params, target)
  state = jax.device_put(state, learner.state_shardings(state, mesh))

  name = behavior_name(config)
  directory = os.path.join(workdir, "behavior", name)
  video = np.asarray(mfwm_lib.decode_prompt_video(mfwm, mfwm_params, embedding,
                                                  jax.random.fold_in(seed_key, 1),
                                                  denoise=denoise))[0]
  target_errors = prompt_target_report(config, prompt, video, dataset)
  meta = {"mfwm_fingerprint": fingerprint, "prompt": prompt.describe(),
          "prompt_kind": prompt_kind(prompt),
          "prompt_embedding": embedding.tolist(), "prompt_denoise": denoise,
          "mfwm_checkpoint": mfwm_dir,
          "embedder": getattr(embedder, "identifier", None) or identifier or "",
          **target_errors}
  ckpt = checkpoints.Checkpointer(directory, save_every=b.save_every, keep=b.keep,
                                  config={**configs.config_to_dict(config), "behavior_run": meta})
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
    if dataset.spec.action_dim != mfwm.world_model.action_dim:
      raise dataset_lib.DatasetError(
          f"{dataset.root}: actions have {dataset.spec.action_dim} dimensions, the MFWM "
          f"{mfwm.world_model.action_dim}")
    sampler = input_pipeline.SequenceSampler(
        dataset, b.batch_size // jax.process_count(), b.batch_length,
        seed=seed * 1000 + 7, keys=("observation", "action", "is_first"))
    batches = lambda start, stop: sampler.batches(
        start, stop, num_threads=config.data.num_threads, prefetch=config.data.prefetch,
        num_workers=config.data.num_workers)
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
        chunk_fn=chunk_fn, updates_per_call=b.updates_per_call)
  finally:
    ckpt.close()
  return BehaviorRun(state, directory, prompt.describe(), fingerprint)
