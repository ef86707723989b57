"""The stages of the main job, each a function of `(config, workdir)`.

* `data`: use the dataset at `config.data.path`, or collect episodes into
  `<workdir>/dataset` (skipped when they are all there; resumes otherwise; `--mode=collect`
  runs only this part). When `config.vlm.name` names an embedder, shards without its
  per-step embeddings get them (resumable).
* `mfwm`: train the multimodal foundation world model (world model, connector, aligner;
  the world model alone when the episodes have no VLM embeddings); resumes from
  `<workdir>/mfwm`.
* `behavior`: learn each task's policy (`config.tasks`, default `config.task`) from its
  prompt in the trained MFWM (`genrl_jax.behavior.stage`); resumes from
  `<workdir>/behavior/<name>`.
* `eval`: play every behaviour in its environment; write `eval.json` per behaviour and the
  results table `results.{md,csv}` (`genrl_jax.evaluation.stage`).

Everything a stage writes lives in the workdir; a stage never deletes anything there.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from genrl_jax import collect, configs
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior import prompts as prompts_lib
from genrl_jax.behavior import stage as behavior_stage
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import embed as embed_lib
from genrl_jax.data import input_pipeline
from genrl_jax.report import open_loop
from genrl_jax.report.metrics import MetricWriter
from genrl_jax.train import checkpoints, distributed, loop, parallel, steps
from genrl_jax.train.state import TrainState
from genrl_jax.vlm import embedder as embedder_lib
from genrl_jax.vlm import prompt_cache

STAGES = ("data", "mfwm", "behavior", "eval")
# Keys that may differ between a workdir's saved config and a resumed run's config.
RESUMABLE_KEYS = ("mfwm.num_steps", "mfwm.log_every", "mfwm.save_every", "mfwm.keep",
                  "data.collect_episodes", "mfwm.init_world_model_from", "task",
                  # A dataset for offline behaviour starts may be given later (e.g. after
                  # importing a reference MFWM).
                  "data.path", "data.num_envs", "tasks",
                  # Reader and shard settings change no result; datasets may mix collectors.
                  "data.num_threads", "data.prefetch", "data.num_workers", "data.cache_mib",
                  "data.episodes_per_shard", "data.collector")
# Behaviours are per task and prompt, each checkpointed apart: their settings may change
# between runs that share a workdir (and its MFWM).
RESUMABLE_PREFIXES = ("behavior.", "eval.", "agent.")


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
  one custom prompt."""
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
  behavior_stage.task_configs(config)  # one custom prompt for several tasks
  behavior_stage.prompt_source(config)
  _check_updates_per_call(config.behavior)
  _check_collector(config.data.collector)


def _check_updates_per_call(b: ml_collections.ConfigDict) -> None:
  n = b.updates_per_call
  if n < 1 or b.log_every % n or b.save_every % n:
    raise ValueError(f"config.behavior.updates_per_call={n}: expected a divisor of "
                     f"behavior.log_every ({b.log_every}) and behavior.save_every "
                     f"({b.save_every})")
  if n > 1 and b.start != "data_free":
    raise ValueError(f"config.behavior.updates_per_call={n} needs behavior.start="
                     f"'data_free'; offline starts read a host batch every update")


def _check_collector(collector: str) -> None:
  if collector not in ("random", "dreamer", "plan2explore"):
    raise ValueError(f"config.data.collector={collector!r}: expected 'random', 'dreamer' "
                     "(expert data) or 'plan2explore' (exploration data)")


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates the workdir, or checks that the run it holds used a compatible config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = configs.config_to_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    old, new = _flatten(saved), _flatten(current)
    differ = sorted(k for k in set(old) | set(new)
                    if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS
                    and not k.startswith(RESUMABLE_PREFIXES))
    if differ:
      details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
      raise WorkdirMismatchError(
          f"workdir {workdir} holds a run of a different config ({details}). Use a new "
          "--workdir, or the config saved in that workdir's config.json; nothing was changed.")
  if jax.process_index() == 0:
    checkpoints.write_json_atomic(path, current)


def dataset_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The dataset of a run: `config.data.path`, else `<workdir>/dataset`."""
  return config.data.path or os.path.join(workdir, "dataset")


def run_data(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> str:
  """The data stage. Returns the dataset folder."""
  if config.data.path:
    if not os.path.isdir(config.data.path):
      raise FileNotFoundError(f"config.data.path={config.data.path!r} is not a directory")
    root = config.data.path
    dataset_lib.read_spec(root)  # refuses a folder that is not a dataset, with a hint
  else:
    root = run_collect(config, workdir, progress)
    distributed.barrier("data: collected")  # Process 0 collects; all processes read.
  embedder = embedder_lib.make_embedder(config)
  if embedder is not None:
    # Each process embeds its share of the shards.
    stats = embed_lib.embed_dataset(root, embedder, config.connector.n_frames,
                                    batch_size=config.vlm.batch_size,
                                    progress=progress and jax.process_index() == 0,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
    logging.info("data: embedded %d episodes with %s (%.1f clips/s)", stats["episodes"],
                 embedder.identifier, stats["clips_per_second"])
    distributed.barrier("data: embedded")
  return root


def run_collect(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> str:
  """Collects `config.data.collect_episodes` episodes with `config.data.collector` into
  the run's dataset (resumes an interrupted collection). Returns the dataset folder.

  'random': uniform random actions, `collect_episodes` episodes in each environment of
  `collect.collect_tasks(config)` (episode `i` of the `k`-th of `K` tasks has the id
  `i * K + k`, so the tasks' episodes interleave and a larger `collect_episodes` keeps the ids already
  there; each shard's metadata names its task). 'dreamer' | 'plan2explore': an agent that
  learns while it collects in one environment (`genrl_jax.agents.online`; its state in
  `<workdir>/collector/`).
  """
  root = dataset_dir(config, workdir)
  tasks = collect.collect_tasks(config)
  collector = config.data.collector
  _check_collector(collector)
  if collector != "random":
    if len(tasks) > 1:
      raise ValueError(f"config.data.collector={collector!r} collects in one environment; "
                       f"config.data.collect_tasks lists {len(tasks)}: {tasks}")
    from genrl_jax.agents import online  # pylint: disable=g-import-not-at-top
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
      new = collect.collect_random_parallel(
          task, root, n, config.seed, num_envs=config.data.num_envs,
          episodes_per_shard=config.data.episodes_per_shard,
          action_repeat=config.data.action_repeat, fast_render=config.data.fast_render,
          progress=progress, episode_ids=[i * len(tasks) + k for i in range(n)])
      logging.info("data: %d new random-policy episodes of %s in %s", len(new), task, root)
  return root


def choose_embedding(config: ml_collections.ConfigDict,
                     dataset: dataset_lib.EpisodeDataset) -> str | None:
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


def open_run_dataset(config: ml_collections.ConfigDict, workdir: str,
                     with_embeddings: bool) -> dataset_lib.EpisodeDataset:
  """The run's dataset, with the chosen embeddings when `with_embeddings`."""
  root = dataset_dir(config, workdir)
  dataset = dataset_lib.open_dataset(root, cache_mib=config.data.cache_mib)
  embedding = choose_embedding(config, dataset) if with_embeddings else None
  return dataset_lib.open_dataset(root, embedding, cache_mib=config.data.cache_mib
                                  ) if embedding else dataset


def batch_iterator(config: ml_collections.ConfigDict, sampler: input_pipeline.SequenceSampler,
                   check=None):
  """`(start, stop) -> iterator of batches` with the reader settings of `config.data`."""

  def batches(start: int, stop: int):
    for batch in sampler.batches(start, stop, num_threads=config.data.num_threads,
                                 prefetch=config.data.prefetch,
                                 num_workers=config.data.num_workers):
      yield check(batch) if check is not None else batch

  return batches


def build_mfwm(config: ml_collections.ConfigDict, action_dim: int, mesh: jax.sharding.Mesh,
               with_connector: bool = True):
  """The MFWM modules, a fresh replicated train state and the jitted train step."""
  mfwm = mfwm_lib.make_mfwm(config, action_dim, with_connector)
  opt = mfwm_lib.make_optimizer(config)
  init_key = jax.random.fold_in(jax.random.key(config.seed), 0x5EED)
  params = mfwm_lib.init_params(mfwm, init_key)
  if config.mfwm.init_world_model_from:
    params["world_model"] = _restore_world_model(config.mfwm.init_world_model_from,
                                                 params["world_model"])
  state = parallel.replicate(TrainState.create(params, opt), mesh)
  step_fn = steps.jit_train_step(steps.mfwm_train_step, mesh, mfwm=mfwm, optimizer=opt,
                                 config=config)
  return mfwm, state, step_fn


def _restore_world_model(directory: str, fresh: dict) -> dict:
  restored = checkpoints.restore_subtree(directory, ("params", "world_model"))
  want = jax.tree.map(lambda x: (x.shape, str(x.dtype)), fresh)
  have = jax.tree.map(lambda x: (x.shape, str(x.dtype)), restored)
  if want != have:
    raise checkpoints.CheckpointError(
        f"config.mfwm.init_world_model_from={directory!r}: its world model does not match the "
        "sizes of this config (world_model.* keys)")
  return restored


def _train_batch(batch: dict) -> dict:
  """Refuses non-finite embeddings."""
  if "vlm_embedding" in batch and not np.isfinite(batch["vlm_embedding"]).all():
    raise dataset_lib.DatasetError("batch['vlm_embedding'] (B, T, E) holds NaN or infinite "
                                    "values; recompute the dataset's embeddings")
  return batch


def run_mfwm(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
             ) -> TrainState:
  """Trains the MFWM on the episodes of the data stage; resumes automatically."""
  dataset = open_run_dataset(config, workdir, config.mfwm.train_connector)
  action_dim = dataset.spec.action_dim
  with_connector = dataset.embedding is not None
  if config.mfwm.train_connector and not with_connector:
    logging.warning("mfwm: the dataset has no 'vlm_embedding'; training the world model "
                    "alone (the connector and aligner need embedded episodes)")
  if with_connector and config.batch_length % config.connector.n_frames:
    raise ValueError(f"config.batch_length={config.batch_length} is not a multiple of "
                     f"config.connector.n_frames={config.connector.n_frames}")
  mesh = parallel.make_mesh()
  parallel.check_divisible(config.batch_size, mesh, "config.batch_size")
  keys = wm_lib.BATCH_KEYS + (("vlm_embedding",) if with_connector else ())
  train, _ = input_pipeline.heldout_split(dataset, config.mfwm.heldout_episodes)
  sampler = input_pipeline.SequenceSampler(dataset, config.batch_size // jax.process_count(),
                                           config.batch_length, seed=config.seed * 1000,
                                           keys=keys, episodes=train)
  _, state, step_fn = build_mfwm(config, action_dim, mesh, with_connector)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "mfwm"),
                                  save_every=config.mfwm.save_every, keep=config.mfwm.keep,
                                  config=configs.config_to_dict(config))
  state, resumed = ckpt.restore_or_keep(state)
  if resumed:
    logging.info("mfwm: resumed from step %d", int(state.step))
  try:
    state = loop.train_loop(
        stage="mfwm", state=state, step_fn=step_fn,
        batches=batch_iterator(config, sampler, _train_batch), mesh=mesh,
        seed=config.seed, num_steps=config.mfwm.num_steps, log_every=config.mfwm.log_every,
        checkpointer=ckpt, writer=MetricWriter(workdir, "mfwm"), progress=progress)
  finally:
    ckpt.close()
  if jax.process_index() == 0:
    try:  # A report: its failure must not fail a finished training.
      open_loop.write_mfwm_open_loop(config, dataset, state.params["world_model"], workdir,
                                     int(state.step))
    except Exception:  # pylint: disable=broad-except
      logging.warning("mfwm: could not write the open-loop video", exc_info=True)
  return state


def run_behavior(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
                 ) -> behavior_stage.BehaviorRun:
  """Learns the behaviour of `config.task` from its prompt (see `behavior.stage`; a
  dataset clip prompt is cut first, `behavior.stage.resolve_prompt`)."""
  dataset = None
  have_data = os.path.exists(os.path.join(dataset_dir(config, workdir), dataset_lib.SPEC_FILE))
  # Offline starts and dataset clips need the episodes; otherwise they only give the mean
  # frame that prompt targets are scored against.
  if config.behavior.start == "offline" or have_data:
    dataset = open_run_dataset(config, workdir, with_embeddings=False)
  config = behavior_stage.resolve_prompt(config, workdir, dataset)
  cache_dir = prompt_cache.default_cache_dir(workdir)
  return behavior_stage.run_behavior(config, workdir, prompt_embedder(config, cache_dir),
                                     dataset, progress, cache_dir=cache_dir)


def run_behaviors(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
                  ) -> list[behavior_stage.BehaviorRun]:
  """`run_behavior` for every task of `config.tasks` (default: `config.task`)."""
  return [run_behavior(c, workdir, progress) for c in behavior_stage.task_configs(config)]


def run_eval(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
             ) -> list[dict]:
  """Evaluates every task's behaviour in its environment; writes the results table."""
  from genrl_jax.evaluation import stage as eval_stage  # pylint: disable=g-import-not-at-top
  return eval_stage.run_eval(config, workdir, progress)


def prompt_embedder(config: ml_collections.ConfigDict, cache_dir: str):
  """The VLM needed to embed the behaviour's prompt: None when the prompt is a precomputed
  embedding or already in the prompt cache (the VLM is then never loaded)."""
  prompt = behavior_stage.config_prompt(config)
  identifier = embedder_lib.embedder_identifier(config)
  if prompt.kind == "embedding" or identifier is None:
    return None
  key = prompts_lib.prompt_cache_key(prompt, config.connector.embed_dim)
  if prompt_cache.load(cache_dir, identifier, prompt.kind, key) is not None:
    logging.info("behavior: prompt embedding of %s read from %s", identifier, cache_dir)
    return None
  return embedder_lib.make_embedder(config)
