"""Small synthetic episodes and configs shared by the tests."""

from __future__ import annotations

import numpy as np
import ml_collections

from genrl_jax import experiment_config
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_writer
from genrl_jax.vlm import embedder as embedder_lib

# The identifier of the embedder of `micro_config` (random projection): the synthetic
# embeddings stand in for it.
SYNTHETIC_VLM = embedder_lib.RandomProjectionEmbedder(16).identifier


def random_episode(rng: np.random.Generator, length: int, action_dim: int = 6,
                   embed_dim: int | None = None) -> dict[str, np.ndarray]:
  """An episode with smooth frames (a moving square) so that the model can learn them.

  With `embed_dim`, adds `vlm_embedding (T, E)`: a fixed unit vector per square position
  (a deterministic function of the frame), zero for the first 7 steps as in the reference.
  """
  t = np.arange(length)
  obs = np.zeros((length, 64, 64, 3), np.uint8)
  x0 = rng.integers(0, 40)
  for i in range(length):
    x = (x0 + 2 * i) % 48
    obs[i, 20:36, x:x + 16] = (200, 120, 40)
  episode = dict(observation=obs,
                 action=rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
                 reward=rng.normal(size=length).astype(np.float32),
                 discount=np.ones(length, np.float32), is_first=t == 0,
                 is_last=t == length - 1, is_terminal=np.zeros(length, bool))
  if embed_dim:
    codes = np.random.default_rng(1234).normal(size=(48, embed_dim))
    codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
    positions = (x0 + 2 * t) % 48
    emb = codes[positions].astype(np.float32)
    emb[:7] = 0.0
    episode["vlm_embedding"] = emb
  return episode


def write_episodes(directory: str, num: int = 3, length: int | list[int] = 40, seed: int = 0,
                   embed_dim: int | None = None, episodes_per_shard: int = 2,
                   vlm: str = SYNTHETIC_VLM) -> str:
  """Writes `num` `random_episode`s as a walker dataset at `directory`; returns it."""
  rng = np.random.default_rng(seed)
  lengths = [length] * num if isinstance(length, int) else length
  spec = dataset_lib.DatasetSpec("walker", 6)
  with dataset_writer.EpisodeWriter(directory, spec, episodes_per_shard,
                                    vlm=vlm if embed_dim else None) as writer:
    for n in lengths:
      writer.add(random_episode(rng, n, embed_dim=embed_dim))
  return directory


def micro_behavior(c: ml_collections.ConfigDict, num_steps: int, log_every: int,
                   save_every: int) -> None:
  """Shrinks `c.behavior` in place (inside `c.unlocked()`): one 32-unit layer for the actor
  and the critic, batches of 8 sequences of 8 steps, and the given schedule."""
  b = c.behavior
  b.actor.units = b.critic.units = 32
  b.actor.layers = b.critic.layers = 1
  b.batch_size, b.batch_length = 8, 8
  b.num_steps, b.log_every, b.save_every = num_steps, log_every, save_every


def micro_config(data_path: str = "", **overrides) -> ml_collections.ConfigDict:
  """The `tiny` walker config shrunk further so that a handful of steps take seconds."""
  c = experiment_config.load_config("configs/walker.py:tiny")
  with c.unlocked():
    c.data.path = data_path
    c.compute_dtype = "float32"
    c.world_model.deter = c.world_model.hidden = 32
    c.world_model.stoch = c.world_model.discrete = 4
    c.world_model.mlp_units = 32
    c.world_model.mlp_layers = 1
    c.batch_size, c.batch_length = 8, 8
    c.connector.embed_dim = 16
    c.mfwm.num_steps, c.mfwm.log_every, c.mfwm.save_every = 6, 2, 3
    # One task (config.task), collected from its own environment, embedded by the random
    # projection the synthetic embeddings stand in for.
    c.tasks, c.data.collect_tasks = (), ()
    c.mfwm.heldout_episodes = 0  # the synthetic datasets have a few episodes only
    c.vlm.name = "random_projection"
    for key, value in overrides.items():
      target = c
      *parents, leaf = key.split(".")
      for p in parents:
        target = target[p]
      target[leaf] = value
  return c
