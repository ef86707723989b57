"""The prompt of a behaviour, as its config names it (`config.behavior.prompt`).

`config_prompt` gives the prompt (`behavior.prompt.{text,video,embedding}`, else the task's
text prompt from `task_prompts`), `prompt_source` says where it comes from,
`resolve_prompt` cuts a dataset clip when the prompt is one (`dataset_clips`),
`prompt_denoise` whether its embedding goes through the aligner, and `prompt_embedder`
which VLM must be loaded to embed it (none when it is cached, `cache`).
"""

from __future__ import annotations

import jax
import ml_collections
from absl import logging

from genrl_jax import experiment_config
from genrl_jax.data import dataset_reader
from genrl_jax.prompts import cache as prompt_cache
from genrl_jax.prompts import dataset_clips
from genrl_jax.prompts import prompt as prompt_lib
from genrl_jax.prompts.task_prompts import task_prompt
from genrl_jax.train import distributed
from genrl_jax.vlm import embedder as embedder_lib

PROMPT_SOURCES = ("auto", "text", "dataset_video")


def prompt_source(config: ml_collections.ConfigDict) -> str:
  """Where the behaviour's prompt comes from: 'custom' (one of `behavior.prompt.text`,
  `.video`, `.embedding` is set), else 'text' (the task's text prompt) or 'dataset_video'
  (a clip of the task's own episodes, `dataset_clips`), as `behavior.prompt.source`
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


def prompt_kind(prompt: prompt_lib.Prompt) -> str:
  """'text', 'video', 'video (dataset clip)' or 'embedding', for results tables."""
  if prompt.kind == "video" and dataset_clips.is_dataset_clip(prompt.value):
    return f"video ({dataset_clips.SOURCE})"
  return prompt.kind


def resolve_prompt(config: ml_collections.ConfigDict, workdir: str,
                   dataset: dataset_reader.EpisodeDataset | None) -> ml_collections.ConfigDict:
  """`config`, or a copy naming its prompt concretely when `prompt_source` is
  'dataset_video': the clip `<workdir>/prompts/<task>.gif` cut from `dataset`
  (`dataset_clips.ensure_prompt_video`; process 0 writes it) as `behavior.prompt.video`.

  With `source='auto'` and no episodes of the task to cut from, the task's text prompt is
  used, with a warning; an explicit `source='dataset_video'` raises instead.
  """
  if prompt_source(config) != "dataset_video":
    return config
  task = config.task
  explicit = config.behavior.prompt.source == "dataset_video"
  if dataset is None or not dataset_clips.task_episodes(dataset, task):
    if explicit and dataset is None:
      raise ValueError(f"config.behavior.prompt.source='dataset_video' needs the run's "
                       f"dataset to cut {task}'s clip from; run the data stage first")
    if explicit:
      dataset_clips.best_clip(dataset, task)  # raises, naming the tasks it does hold
    logging.warning("behavior %s: no episodes of %s to cut a video prompt from; using its "
                    "TEXT prompt, embedded by %s, which has no semantics",
                    experiment_config.behavior_name(config), task,
                    embedder_lib.embedder_identifier(config))
    return config
  if jax.process_index() == 0:
    path = dataset_clips.ensure_prompt_video(workdir, task, dataset,
                                               config.connector.n_frames)
  distributed.barrier(f"behavior {experiment_config.behavior_name(config)}: prompt clip")
  path = dataset_clips.prompt_video_path(workdir, task)
  out = ml_collections.ConfigDict(config.to_dict())
  out.behavior.prompt.video = path
  return out


def config_prompt(config: ml_collections.ConfigDict) -> prompt_lib.Prompt:
  """The prompt the config names (`behavior.prompt.{text,video,embedding}`; all empty: the
  reference's text prompt of `config.task`, unless `resolve_prompt` is needed first)."""
  p = config.behavior.prompt
  given = {k: v for k, v in (("text", p.text), ("video", p.video), ("embedding", p.embedding))
           if v}
  if not given:
    if p.get("source", "auto") == "dataset_video":
      raise ValueError("config.behavior.prompt.source='dataset_video': the clip is cut from "
                       "the run's dataset by resolve_prompt (which the behaviour "
                       "stage calls); call it first")
    return prompt_lib.parse_prompt(text=task_prompt(config.task))
  if len(given) > 1:
    raise ValueError(f"config.behavior.prompt: give one of text, video, embedding; got "
                     f"{sorted(given)}")
  return prompt_lib.parse_prompt(**given)


def prompt_denoise(config: ml_collections.ConfigDict, prompt: prompt_lib.Prompt) -> bool:
  """Whether the prompt's embedding goes through the aligner before the connector: always
  for text and precomputed embeddings, for videos unless `behavior.prompt.denoise_video`
  is False. The reference maps video prompts through the aligner too; with a VLM whose
  clip embeddings lie close together (the random-weight CLIP: mean pairwise cosine 0.9),
  the aligner, trained to undo LaFiTe noise, pulls them to their common mean and the
  target loses the pose (the tiny stickman's legs_up prompt decodes at 1.47 x the
  mean-frame MSE with it, 0.84 x without)."""
  return prompt.kind != "video" or bool(config.behavior.prompt.get("denoise_video", True))


def needs_embedder(config: ml_collections.ConfigDict, cache_dir: str) -> bool:
  """Whether the behaviour's prompt must be embedded by the VLM: False when it is a
  precomputed embedding, when no VLM is configured, or when it is in the prompt cache."""
  prompt = config_prompt(config)
  identifier = embedder_lib.embedder_identifier(config)
  if prompt.kind == "embedding" or identifier is None:
    return False
  key = prompt_lib.prompt_cache_key(prompt, config.connector.embed_dim)
  if prompt_cache.load(cache_dir, identifier, prompt.kind, key) is not None:
    logging.info("behavior: prompt embedding of %s read from %s", identifier, cache_dir)
    return False
  return True


def prompt_embedder(config: ml_collections.ConfigDict, cache_dir: str,
                    loaded: dict[str, embedder_lib.Embedder] | None = None
                    ) -> embedder_lib.Embedder | None:
  """The VLM needed to embed the behaviour's prompt: None when `needs_embedder` says so
  (the VLM is then never loaded). `loaded`: embedders already built, by identifier; a new
  one is added there, so several tasks load the VLM once."""
  if not needs_embedder(config, cache_dir):
    return None
  loaded = {} if loaded is None else loaded
  identifier = embedder_lib.embedder_identifier(config)
  if identifier not in loaded:
    loaded[identifier] = embedder_lib.make_embedder(config)
  return loaded[identifier]
