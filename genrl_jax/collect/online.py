"""Online collection of episodes by a learning agent, into a dataset (method.md §8).

Collection agents
-----------------
Besides uniform random actions (`data.collector='random'`, `genrl_jax/collect/random_policy.py`), two
agents that learn while they collect write the paper's kinds of datasets:

* `data.collector='dreamer'` ("expert" data): a DreamerV3-style world model and an
  actor-critic trained in imagination on the environment's reward as predicted by the
  world model's reward head (`task_agent.py`);
* `data.collector='plan2explore'` ("exploration" data): the same learner, rewarded by the
  disagreement of an ensemble of next-embedding predictors (`plan2explore.py`).

    python experiments/main.py --config=configs/walker.py --mode=collect \\
        --config.data.collector=dreamer --config.data.collect_episodes=2000

collects `data.collect_episodes` episodes of `data.collect_task` (default: `task`) into
`data.path` (default `<workdir>/dataset`). The schedule follows the reference: the first
`agent.seed_steps` (2000) agent steps take uniform random actions; then the agent acts
with its policy through the world model's posterior filter (`behavior.policy.act`,
actions sampled); every `agent.train_every` (5) agent steps, summed over the
`data.num_envs` environments, it makes `agent.train_steps` (1) updates on a batch of
`agent.batch_size x agent.batch_length` sequences (default `batch_size x batch_length`;
the reference: 50 x 50). The replay is the dataset itself: it samples sequences
(`SequenceSampler.sample`) from the committed episodes and is re-opened whenever a new
shard of `agent.episodes_per_shard` finished episodes is written, so a finished episode
is trained on once its shard is written, and nothing reads the whole dataset. Every
episode is written with the source `{'collector', 'task', 'seed'}`. The collection stops
when the dataset holds `data.collect_episodes` episodes (there is no step budget: an
episode always ends at the environment's time limit).

Resuming: the agent's state (one pytree: world model, actor, critic, slow critic, return
EMA, ensemble, optimizer states, update and agent-step counters) is saved with Orbax in
`<workdir>/collector/<collector>` every `agent.save_every` agent steps and when the
collection ends, also by an exception or Ctrl-C (unless its loss had become non-finite);
finished episodes still buffered are written then too. A rerun restores the agent and
continues the collection after the episodes already in the dataset; episodes that were
unfinished when it stopped are lost, and no shard is ever rewritten.

The learner runs on one device (the reference trained its collector on one GPU); the
environments run in `data.num_envs` worker processes (`envs.vector.make_envs`).
Episode ids follow the dataset's (one more than the largest). Environment `j` of a
(re)started collection is seeded `seed + first new episode id + j` and then reset between
episodes, as the reference's one long-lived environment (random collection instead builds
a fresh environment per episode).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from genrl_jax import experiment_config

from genrl_jax.collect import random_policy
from genrl_jax import world_model as wm_lib
from genrl_jax.collect import task_agent
from genrl_jax.behavior import policy as policy_lib
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.data import episodes as episodes_lib
from genrl_jax.data import input_pipeline
from genrl_jax.data import prefetch as prefetch_lib
from genrl_jax.envs import driver as driver_lib
from genrl_jax.envs import vector as vector_lib
from genrl_jax.envs import tasks as tasks_lib
from genrl_jax.report.metrics import MetricWriter
from genrl_jax.train import checkpoints
from genrl_jax.train import loop as loop_lib

# Independent random streams of one collection, each folded with a step number.
_TRAIN_STREAM, _ACT_STREAM = 1, 2
_DEVICE = lambda: jax.local_devices()[0]
# Acting: static modules are hashable, so equal models share one compilation.
_act = jax.jit(policy_lib.act, static_argnums=(4,),
               static_argnames=("model", "actor", "sample_state"))


@dataclasses.dataclass
class CollectionResult:
  """What one call collected. `resumed_from`: the agent steps of the restored agent
  checkpoint (None: a fresh agent)."""
  collector: str
  new_episode_ids: list[int]
  returns: list[float]
  agent_steps: int
  updates: int
  resumed_from: int | None


def stream_key(seed: int, stream: int, step: int) -> jax.Array:
  """The key of `step` in one of the collection's random streams (from [seed, step])."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream), step)


class Replay:
  """Sequence batches `(B, L, ...)` of the episodes committed to a dataset.

  Batch `n` is `SequenceSampler(..., seed).sample(n)` over the episodes committed when
  the replay was last refreshed; `refresh()` re-opens the dataset (its metadata only).
  The next batches are read in a background thread (`data.prefetch`) while the agent acts
  and trains (a refresh, or a step out of order, drops them, so batches never depend on
  timing).
  """

  def __init__(self, root: str, batch_size: int, length: int, seed: int):
    self.root, self.batch_size, self.length, self.seed = root, batch_size, length, seed
    self.sampler: input_pipeline.SequenceSampler | None = None
    self._ahead: Iterator[dict[str, np.ndarray]] | None = None
    self._next_step: int | None = None  # the step `_ahead` yields next
    self.refresh()

  def refresh(self) -> None:
    self._drop_ahead()
    dataset = dataset_reader.open_dataset(self.root, allow_empty=True)
    self.sampler = None
    if dataset.num_episodes:
      self.sampler = input_pipeline.SequenceSampler(
          dataset, self.batch_size, self.length, self.seed, process_index=0, process_count=1,
          keys=wm_lib.BATCH_KEYS)

  @property
  def num_episodes(self) -> int:
    return 0 if self.sampler is None else self.sampler.dataset.num_episodes

  def sample(self, step: int) -> dict[str, np.ndarray]:
    if self.sampler is None:
      raise RuntimeError(f"the dataset {self.root} has no committed episode to replay")
    if self._ahead is None or self._next_step != step:
      self._drop_ahead()
      self._ahead = prefetch_lib.prefetch(self.sampler.sample, step, None, size=1)
    self._next_step = None  # until the batch has arrived (a failed read ends `_ahead`)
    batch = next(self._ahead)
    self._next_step = step + 1
    return batch

  def _drop_ahead(self) -> None:
    if self._ahead is not None:
      self._ahead.close()  # waits for the read in progress: never two readers at once
      self._ahead = None

  def close(self) -> None:
    self._drop_ahead()


def _make_envs(task: str, num_envs: int, seed: int, config: ml_collections.ConfigDict,
               env_kwargs: dict[str, Any] | None):
  return vector_lib.make_envs(task, num_envs, seed, parallel=num_envs > 1,
                              fast_render=config.data.fast_render,
                              action_repeat=config.data.action_repeat,
                              env_kwargs=env_kwargs)


def check_single_process(config: ml_collections.ConfigDict, root: str) -> None:
  """Refuses an agent collection in a multi-process job (with episodes still missing).

  The agent learns on one device of one process, and its checkpoints and the processes'
  agreement on them need every process; the other processes would wait for it in vain.
  """
  if jax.process_count() > 1 and (len(dataset_reader.existing_episode_ids(root))
                                  < config.data.collect_episodes):
    raise RuntimeError(
        f"data.collector={config.data.collector!r} collects in a single process; run "
        "`--mode=collect` as a one-process job first (this job then finds the dataset "
        f"complete). This job has {jax.process_count()} processes.")


def collect_with_agent(config: ml_collections.ConfigDict, workdir: str,
                       root: str | None = None, *, collector: str | None = None,
                       progress: bool = True, env_kwargs: dict[str, Any] | None = None
                       ) -> CollectionResult:
  """Collects episodes with a learning agent until the dataset at `root` (default
  `<workdir>/dataset`) holds `config.data.collect_episodes`; resumes (module docstring).

  `collector`: 'dreamer' | 'plan2explore' (default `config.data.collector`); `env_kwargs`:
  domain options of `make_env` (e.g. `time_limit`).
  """
  collector = collector or config.data.collector
  settings = task_agent.agent_settings(config, collector)  # refuses unknown collectors
  root = root or os.path.join(workdir, "dataset")
  check_single_process(config, root)
  task = random_policy.collect_tasks(config)[0]
  target = config.data.collect_episodes
  done = dataset_reader.existing_episode_ids(root)
  if len(done) >= target:
    return CollectionResult(collector, [], [], 0, 0, None)
  a = config.agent
  num_envs = max(1, min(config.data.num_envs, target - len(done)))
  first_id = max(done) + 1 if done else 0
  # Seeds not used by earlier (re)starts; the environments then live for the whole call.
  with _make_envs(task, num_envs, config.seed + first_id, config, env_kwargs) as envs:
    action_dim = envs.action_dim
    spec = dataset_lib.DatasetSpec(tasks_lib.task_info(task).domain, action_dim,
                                   envs.obs_shape[0])
    state = task_agent.init_state(settings, action_dim, task_agent.init_key(config.seed))
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "collector", collector),
                                    save_every=a.save_every, keep=a.keep,
                                    config=experiment_config.config_to_dict(config))
    state, resumed = ckpt.restore_or_keep(state)
    # Fresh and restored states alike committed to one device: one compilation each.
    state = jax.device_put(state, _DEVICE())
    run = _Collection(config, settings, collector, root, workdir, envs, state, ckpt, progress)
    if resumed:
      logging.info("collect (%s): resumed the agent at agent step %d, update %d", collector,
                   run.agent_steps, run.updates)
    source = {"collector": collector, "task": task, "seed": config.seed}
    try:
      with dataset_writer.EpisodeWriter(root, spec, a.episodes_per_shard, source) as writer:
        run.loop(writer)
    finally:
      run.close()
      # A state whose loss became non-finite is not saved: the rerun resumes from the
      # last good checkpoint.
      if int(run.state.nonfinite_step) < 0:
        run.save()
      ckpt.close()
  return CollectionResult(collector, run.new_ids, run.returns, run.agent_steps, run.updates,
                          run.start_agent_steps if resumed else None)


class _Collection:
  """The loop's state on the host: environments, episodes in progress, counters."""

  def __init__(self, config, settings, collector, root, workdir, envs, state, ckpt, progress):
    a = config.agent
    self.config, self.settings, self.collector = config, settings, collector
    self.envs, self.state, self.ckpt = envs, state, ckpt
    self.modules = task_agent.build_modules(settings, envs.action_dim)
    self.seed = config.seed
    self.target = config.data.collect_episodes
    self.agent_steps = self.start_agent_steps = self.last_save = int(state.agent_steps)
    self.updates = int(state.step)
    # Training rounds are due at multiples of train_every; a resumed run does not catch
    # up on rounds from before its restart.
    self.last_round = self.agent_steps // a.train_every
    self.root = root
    self.replay: Replay | None = None  # opened once the writer has created the dataset
    self.metrics = MetricWriter(workdir, f"collect_{collector}")
    self.episode_log = MetricWriter(workdir, f"collect_{collector}_episodes")
    self.new_ids: list[int] = []
    self.returns: list[float] = []
    self.progress = progress
    self.bar = None

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.replay is not None:
      self.replay.close()

  def loop(self, writer: dataset_writer.EpisodeWriter) -> None:
    a, envs, n = self.config.agent, self.envs, self.envs.num_envs
    # 0, the earlier spelling of "the same as batch_size / batch_length", still means that.
    self.replay = Replay(self.root, a.batch_size or self.config.batch_size,
                         a.batch_length or self.config.batch_length, self.seed)
    done = len(writer.episode_ids)
    self.bar = tqdm.tqdm(total=self.target, initial=done, unit="episode",
                         desc=f"collect ({self.collector}, {n} envs)",
                         disable=not self.progress, dynamic_ncols=True)
    carry = jax.device_put(policy_lib.initial_carry(self.modules.model, n), _DEVICE())
    next_id = max(writer.episode_ids, default=-1) + 1
    # The environments reset between episodes, without new seeds (module docstring).
    driver = driver_lib.EpisodeDriver(envs, range(next_id, next_id + self.target - done))
    pending = 0  # finished episodes not yet in a shard
    while True:
      driver.start()
      if not driver.active:
        break
      rows = driver.rows
      actions, carry = self._act(driver.obs, driver.is_first, carry)
      batch, finished = driver.step(actions[rows])
      self.agent_steps += len(rows)
      # The filter's previous action is the one executed (clipped), as stored.
      executed = np.array(carry["action"])
      executed[rows] = batch["action"]
      carry = dict(carry, action=jax.device_put(executed, _DEVICE()))
      for f in finished:
        episode = f.arrays(episodes_lib.EPISODE_KEYS)
        writer.add(episode, episode_id=f.episode)
        pending += 1
        done += 1
        self._finished(f.episode, episode)
      if pending >= a.episodes_per_shard:
        writer.flush()  # a no-op when the writer has just written the shard itself
        pending = 0
        self.replay.refresh()
      self._train()
      if self.agent_steps - self.last_save >= a.save_every:
        self.save()

  def _act(self, obs: np.ndarray, is_first: np.ndarray, carry: dict
           ) -> tuple[np.ndarray, dict]:
    """Actions `(n, A)` of every environment (rows of idle ones are ignored). The filter
    runs in the seed phase too, so the policy starts from filtered latents."""
    params = {"world_model": self.state.params["world_model"],
              "actor": self.state.params["actor"]}
    key = stream_key(self.seed, _ACT_STREAM, self.agent_steps)
    action, carry = _act(params, {"observation": obs, "is_first": is_first}, carry, key, False,
                         model=self.modules.model, actor=self.modules.actor)
    if self.agent_steps < self.config.agent.seed_steps:
      rng = np.random.default_rng([self.seed, self.agent_steps])
      return rng.uniform(-1, 1, action.shape).astype(np.float32), carry
    return np.asarray(action, np.float32), carry

  def _train(self) -> None:
    a = self.config.agent
    round_now = self.agent_steps // a.train_every
    rounds, self.last_round = round_now - self.last_round, round_now
    if rounds <= 0 or self.agent_steps < a.seed_steps or not self.replay.num_episodes:
      return
    stage = f"collect_{self.collector}"
    for _ in range(rounds * a.train_steps):
      batch = self.replay.sample(self.updates)
      self.state, metrics = task_agent.jit_train_step(
          self.state, batch, stream_key(self.seed, _TRAIN_STREAM, self.updates),
          settings=self.settings, action_dim=self.envs.action_dim)
      self.updates += 1
      if self.updates % a.log_every == 0:
        self.metrics.write(self.updates, dict(metrics, agent_steps=self.agent_steps,
                                              replay_episodes=self.replay.num_episodes))
    loop_lib.check_finite(self.state, stage)

  def save(self) -> None:
    """Saves the agent, numbered by its agent steps (a step already saved is kept)."""
    self.last_save = self.agent_steps
    self.ckpt.save(self.agent_steps, self.state.replace(
        agent_steps=jnp.asarray(self.agent_steps, jnp.int32)), force=True)

  def _finished(self, episode_id: int, episode: dict[str, np.ndarray]) -> None:
    ret = float(episode["reward"].sum())
    self.new_ids.append(episode_id)
    self.returns.append(ret)
    self.episode_log.write(self.agent_steps, {"episode_return": ret,
                                              "episode_length": len(episode["reward"]) - 1,
                                              "episode_id": episode_id})
    self.bar.update()
    self.bar.set_postfix(steps=self.agent_steps, updates=self.updates, ret=f"{ret:.1f}")

