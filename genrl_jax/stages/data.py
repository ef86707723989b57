"""The data stage: the run's episodes, with the VLM's embeddings.

`run` uses the dataset at `config.data.path`, or collects episodes into `<workdir>/dataset`
(`collect`; skipped when they are all there, resumed otherwise; `--mode=collect` runs only
this part). When `config.vlm.name` names an embedder, shards without its per-step
embeddings get them (resumable; each process embeds its share).
"""

from __future__ import annotations

import jax
import ml_collections
from absl import logging

from genrl_jax.collect import random_policy
from genrl_jax.collect import online
from genrl_jax.data import embed as embed_lib
from genrl_jax.stages import workdir as workdir_lib
from genrl_jax.train import distributed
from genrl_jax.vlm import embedder as embedder_lib


def run(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> str:
  """The data stage. Returns the dataset folder. The VLM is loaded only when some shard
  lacks its embeddings (an imported reference dataset needs no checkpoint); a VLM that
  cannot be loaded is named before episodes are collected."""
  identifier = embedder_lib.embedder_identifier(config)
  if config.data.path:
    workdir_lib.check_data_path(config)
    root = config.data.path
  else:
    missing = embedder_lib.missing_files(config) if identifier else None
    if missing:  # collected episodes always need embedding
      raise FileNotFoundError(missing)
    root = collect(config, workdir, progress)
    distributed.barrier("data: collected")  # Process 0 collects; all processes read.
  if identifier is not None and not workdir_lib.fully_embedded(root, identifier):
    embedder = embedder_lib.make_embedder(config)
    # Each process embeds its share of the shards.
    stats = embed_lib.embed_dataset(root, embedder, config.connector.n_frames,
                                    batch_size=config.vlm.batch_size,
                                    progress=progress and jax.process_index() == 0,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count(),
                                    skip_damaged=config.data.skip_damaged)
    logging.info("data: embedded %d episodes with %s (%.1f clips/s)", stats["episodes"],
                 embedder.identifier, stats["clips_per_second"])
    distributed.barrier("data: embedded")
  return root


def collect(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> str:
  """Collects `config.data.collect_episodes` episodes with `config.data.collector` into
  the run's dataset (resumes an interrupted collection). Returns the dataset folder.

  'random': uniform random actions, `collect_episodes` episodes in each environment of
  `random_policy.collect_tasks(config)` (episode `i` of the `k`-th of `K` tasks has the id
  `i * K + k`, so the tasks' episodes interleave and a larger `collect_episodes` keeps the ids already
  there; each shard's metadata names its task). 'dreamer' | 'plan2explore': an agent that
  learns while it collects in one environment (`genrl_jax.collect.online`; its state in
  `<workdir>/collector/`).
  """
  root = workdir_lib.dataset_dir(config, workdir)
  tasks = random_policy.collect_tasks(config)
  collector = config.data.collector
  workdir_lib.check_collector(collector)
  if collector != "random":
    if len(tasks) > 1:
      raise ValueError(f"config.data.collector={collector!r} collects in one environment; "
                       f"config.data.collect_tasks lists {len(tasks)}: {tasks}")
    online.check_single_process(config, root)  # every process raises alike, none waits
    if jax.process_index() == 0:
      result = online.collect_with_agent(config, workdir, root, progress=progress)
      logging.info("data: %d new %s episodes of %s in %s (%d agent steps, %d updates)",
                   len(result.new_episode_ids), collector, tasks[0], root,
                   result.agent_steps, result.updates)
    return root
  if jax.process_index() == 0:
    n = config.data.collect_episodes
    for k, task in enumerate(tasks):
      new = random_policy.collect_random_parallel(
          task, root, n, config.seed, num_envs=config.data.num_envs,
          episodes_per_shard=config.data.episodes_per_shard,
          action_repeat=config.data.action_repeat, fast_render=config.data.fast_render,
          progress=progress, episode_ids=[i * len(tasks) + k for i in range(n)])
      logging.info("data: %d new random-policy episodes of %s in %s", len(new), task, root)
  return root
