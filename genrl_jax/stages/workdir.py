"""What a run holds, checked before any stage writes: the config (`check_config`), the
workdir (`prepare_workdir`: created, or its saved `config.json` compatible), and the run's
dataset (`dataset_dir`, `open_run_dataset` with the chosen VLM embeddings,
`dataset_batches` with the reader settings of `config.data`).

Everything a stage writes lives in the workdir; a stage never deletes anything there.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import jax
import ml_collections
from absl import logging

from genrl_jax import experiment_config
from genrl_jax import files
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import input_pipeline
from genrl_jax.prompts import behavior_prompt
from genrl_jax.prompts import cache as prompt_cache
from genrl_jax.report.metrics import MetricWriter
from genrl_jax.vlm import embedder as embedder_lib

# Keys that may differ between a workdir's saved config and a resumed run's config.
RESUMABLE_KEYS = ("mfwm.num_steps", "mfwm.log_every", "mfwm.save_every", "mfwm.keep",
                  "data.collect_episodes", "mfwm.init_world_model_from", "task",
                  # A dataset for offline behaviour starts may be given later (e.g. after
                  # importing a reference MFWM).
                  "data.path", "data.num_envs", "tasks",
                  # Reader and shard settings change no result; datasets may mix collectors.
                  "data.num_threads", "data.prefetch", "data.num_workers", "data.cache_mib",
                  "data.episodes_per_shard", "data.collector",
                  # Turned on to train past damaged shards found by an earlier run.
                  "data.skip_damaged")
# Behaviours are per task and prompt, each checkpointed apart: their settings may change
# between runs that share a workdir (and its MFWM).
RESUMABLE_PREFIXES = ("behavior.", "eval.", "agent.")
# The MFWM's optimizer settings (learning rate, eps, clipping, weight decay) may change on
# resume, e.g. a lower learning rate after a non-finite loss; it is logged. Clipping and
# weight decay only between non-zero values: turning one on or off changes the
# optimizer state's structure, which the checkpoints could not restore into.
OPTIMIZER_PREFIXES = ("world_model.optimizer.", "connector.optimizer.")


# Where the VLM's files are, how they are read (head counts the shapes cannot give) and
# how many clips it embeds per call: these may change in a workdir as long as the VLM's
# identifier stays (e.g. an imported reference workdir given the InternVideo2 checkpoint
# later: its identifier names the official file either way).
VLM_LOCATION_KEYS = ("vlm.model", "vlm.internvideo2.tokenizer", "vlm.batch_size",
                     "vlm.internvideo2.size", "vlm.internvideo2.size_overrides")


def _same_vlm(saved: dict, config: ml_collections.ConfigDict) -> bool:
  try:
    return (embedder_lib.embedder_identifier(ml_collections.ConfigDict(saved))
            == embedder_lib.embedder_identifier(config))
  except (ValueError, OSError, KeyError, AttributeError):  # e.g. a CLIP folder now gone
    return False


class WorkdirMismatchError(ValueError):
  """The workdir holds a run made with a different config."""


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
  return out


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses, before anything is written, what would fail in a later stage: unknown or
  environment-less tasks, an unknown VLM, collector or prompt source, several tasks with
  one custom prompt, a `data.path` that is not a dataset, batch sizes that the devices
  cannot share."""
  from genrl_jax.envs import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  named = [("config.task", config.task)]
  named += [(f"config.tasks[{i}]", t) for i, t in enumerate(config.tasks)]
  named += [(f"config.data.collect_tasks[{i}]", t)
            for i, t in enumerate(config.data.collect_tasks)]
  if config.data.collect_task:
    named.append(("config.data.collect_task", config.data.collect_task))
  for key, task in named:
    try:
      info = tasks_lib.task_info(task)
    except ValueError as e:
      raise ValueError(f"{key}: {e}") from None
    if not info.registered:
      raise ValueError(f"{key}={task!r} is a task of the reference without an environment "
                       "here (no make_env); see `genrl_jax list-tasks`")
  embedder_lib.embedder_identifier(config)  # checks config.vlm.name
  experiment_config.task_configs(config)  # one custom prompt for several tasks
  behavior_prompt.prompt_source(config)
  check_updates_per_call(config.behavior)
  check_collector(config.data.collector)
  check_batch_sizes(config)
  check_data_path(config)


def check_vlm_files(config: ml_collections.ConfigDict, workdir: str,
                    stages: tuple[str, ...]) -> None:
  """Names, before anything is written, a VLM model that `stages` will need but cannot
  load (e.g. no InternVideo2 checkpoint): the data stage needs it for episodes without
  its embeddings, the behaviour stage for text and video prompts not in the prompt cache
  (dataset clips are checked when cut)."""
  identifier = embedder_lib.embedder_identifier(config)
  missing = embedder_lib.missing_files(config) if identifier else None
  if not missing:
    return
  needs = []
  root = dataset_dir(config, workdir)
  if "data" in stages and not fully_embedded(root, identifier):
    needs.append(f"the data stage, to embed the episodes of {root} with {identifier}")
  if "behavior" in stages:
    cache_dir = prompt_cache.default_cache_dir(workdir)
    for c in experiment_config.task_configs(config):
      if (behavior_prompt.prompt_source(c) != "dataset_video"
          and behavior_prompt.needs_embedder(c, cache_dir)):
        prompt = behavior_prompt.config_prompt(c)
        needs.append(f"the behaviour stage, to embed the {prompt.kind} prompt of {c.task} "
                     f"({prompt.describe()})")
  if needs:
    raise FileNotFoundError(f"{missing}; needed by {' and by '.join(needs)}; nothing was "
                            "written")


def check_data_path(config: ml_collections.ConfigDict) -> None:
  """`config.data.path`, when given, must be a dataset folder."""
  if config.data.path:
    if not os.path.isdir(config.data.path):
      raise FileNotFoundError(f"config.data.path={config.data.path!r} is not a directory")
    dataset_lib.read_spec(config.data.path)  # refuses a folder that is not a dataset


def check_batch_sizes(config: ml_collections.ConfigDict) -> None:
  """`batch_size` and `behavior.batch_size`: positive, and split evenly over the devices
  (each process reads `batch_size / processes` sequences)."""
  devices = jax.device_count()
  for key, value in (("config.batch_size", config.batch_size),
                     ("config.behavior.batch_size", config.behavior.batch_size)):
    if value < 1 or value % devices:
      raise ValueError(f"{key}={value}: expected a positive multiple of the {devices} "
                       "device(s) of this job")


def check_updates_per_call(b: ml_collections.ConfigDict) -> None:
  n = b.updates_per_call
  if n < 1 or b.log_every % n or b.save_every % n:
    raise ValueError(f"config.behavior.updates_per_call={n}: expected a divisor of "
                     f"behavior.log_every ({b.log_every}) and behavior.save_every "
                     f"({b.save_every})")
  if n > 1 and b.start != "data_free":
    raise ValueError(f"config.behavior.updates_per_call={n} needs behavior.start="
                     f"'data_free'; offline starts read a host batch every update")


def check_collector(collector: str) -> None:
  if collector not in ("random", "dreamer", "plan2explore"):
    raise ValueError(f"config.data.collector={collector!r}: expected 'random', 'dreamer' "
                     "(expert data) or 'plan2explore' (exploration data)")


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates the workdir, or checks that the run it holds used a compatible config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = experiment_config.config_to_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = experiment_config.upgrade_saved_config(json.load(f))
    old, new = _flatten(saved), _flatten(current)
    differ = sorted(k for k in set(old) | set(new)
                    if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS
                    and not k.startswith(RESUMABLE_PREFIXES))
    optimizer = [k for k in differ if k.startswith(OPTIMIZER_PREFIXES) and (
        k.endswith((".lr", ".eps")) or (old.get(k) and new.get(k)))]
    differ = [k for k in differ if k not in optimizer]
    if set(differ) & set(VLM_LOCATION_KEYS) and _same_vlm(saved, config):
      differ = [k for k in differ if k not in VLM_LOCATION_KEYS]
    if differ:
      details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
      raise WorkdirMismatchError(
          f"workdir {workdir} holds a run of a different config ({details}). Use a new "
          "--workdir, or the config saved in that workdir's config.json; nothing was changed.")
    if optimizer:
      logging.warning("workdir %s: resuming with other optimizer settings (%s); the "
                      "checkpoints' optimizer state is kept", workdir,
                      ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in optimizer))
  if jax.process_index() == 0:
    files.write_json(path, current)


def dataset_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The dataset of a run: `config.data.path`, else `<workdir>/dataset`."""
  return config.data.path or os.path.join(workdir, "dataset")


def choose_embedding(config: ml_collections.ConfigDict,
                     dataset: dataset_reader.EpisodeDataset) -> str | None:
  """The VLM whose embeddings train the connector, or None when the dataset has none.

  `config.data.embedding` if set; else the config's VLM (`config.vlm`), whose embeddings
  prompts will be embedded with; else the dataset's only embeddings.
  """
  sets = dataset.embedding_sets
  name = config.data.embedding
  if not name and not sets:
    return None
  if not name and config.vlm.name:
    name = embedder_lib.embedder_identifier(config)
  if not name:
    if len(sets) > 1:
      raise dataset_lib.DatasetError(
          f"{dataset.root} holds embeddings of several VLMs {sorted(sets)}; choose one with "
          "config.data.embedding")
    name = next(iter(sets))
  if name not in sets:
    raise dataset_lib.DatasetError(
        f"{dataset.root} has no embeddings of {name!r} (it has {sorted(sets)}); run the "
        "data stage with this VLM (config.vlm), or set config.data.embedding")
  if sets[name].embed_dim != config.connector.embed_dim:
    raise dataset_lib.DatasetError(
        f"{dataset.root}: the embeddings of {name!r} have dimension {sets[name].embed_dim}; "
        f"config.connector.embed_dim is {config.connector.embed_dim}")
  return name


def fully_embedded(root: str, identifier: str) -> bool:
  """Whether every shard of the dataset at `root` (if any) has `identifier`'s embeddings."""
  if not os.path.exists(os.path.join(root, dataset_lib.SPEC_FILE)):
    return False
  dataset = dataset_reader.open_dataset(root, check_sizes=False)  # metadata only
  have = dataset.embedding_sets.get(identifier)
  return have is not None and {s.name for s in dataset.shards} <= set(have.shards)


def write_skipped_metrics(config: ml_collections.ConfigDict, workdir: str, stage: str,
                          step: int, dataset: dataset_reader.EpisodeDataset) -> None:
  """With `config.data.skip_damaged`, records in metrics.jsonl (run `stage`, at `step`, the
  step training starts from) what the training leaves out: `data_skipped_episodes` and
  `data_skipped_shards`."""
  if config.data.skip_damaged:
    with MetricWriter(workdir, stage) as writer:
      writer.write(step, {"data_skipped_episodes": dataset.skipped_episodes,
                          "data_skipped_shards": len(dataset.skipped)})


def open_run_dataset(config: ml_collections.ConfigDict, workdir: str,
                     with_embeddings: bool) -> dataset_reader.EpisodeDataset:
  """The run's dataset, with the chosen embeddings when `with_embeddings`."""
  root = dataset_dir(config, workdir)
  skip = config.data.skip_damaged
  dataset = dataset_reader.open_dataset(root, cache_mib=config.data.cache_mib,
                                        skip_damaged=skip)
  embedding = choose_embedding(config, dataset) if with_embeddings else None
  if embedding:
    dataset = dataset_reader.open_dataset(root, embedding, cache_mib=config.data.cache_mib,
                                          skip_damaged=skip)
  if skip:
    log = logging.warning if dataset.skipped else logging.info
    log("data: %d of %d episodes left out: %d damaged shards of %s "
        "(config.data.skip_damaged)%s", dataset.skipped_episodes,
        dataset.num_episodes + dataset.skipped_episodes, len(dataset.skipped), root,
        "".join(f"\n  {r.describe()}" for r in dataset.skipped))
  return dataset


def dataset_batches(config: ml_collections.ConfigDict, sampler: input_pipeline.SequenceSampler,
                    check: Callable[[dict], dict] | None = None
                    ) -> Callable[[int, int], Iterator[dict]]:
  """`(start, stop) -> iterator of batches` of `sampler` with the reader settings of
  `config.data`, each passed through `check` when given."""

  def batches(start: int, stop: int):
    for batch in sampler.batches(start, stop, num_threads=config.data.num_threads,
                                 prefetch=config.data.prefetch,
                                 num_workers=config.data.num_workers):
      yield check(batch) if check is not None else batch

  return batches
