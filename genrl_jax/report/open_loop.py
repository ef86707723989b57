"""Open-loop predictions of the world model (spec 2.9): truth / model / error videos.

The first `context` frames of each sequence are filtered (posterior), the rest are imagined
with the dataset's actions and decoded. The video puts, side by side, the true frames, the
model's frames (reconstructions, then predictions) and the absolute error.

The mfwm stage ends with `write_mfwm_open_loop`: a few dataset sequences, one under
another, as `<workdir>/mfwm/open_loop.gif` and in TensorBoard (run `mfwm`, tag
`open_loop`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import input_pipeline
from genrl_jax.report import tensorboard

Params = dict
OPEN_LOOP_FILE = "open_loop.gif"
# Seeds of the report's sequences and latent samples, apart from those of training.
OPEN_LOOP_SEED_SALT = 0x0BE7


def _to_uint8(image: jax.Array) -> jax.Array:
  """Decoder output (centred at 0, range ~[-0.5, 0.5]) -> uint8."""
  return jnp.clip((image + 0.5) * 255.0, 0, 255).round().astype(jnp.uint8)


def open_loop_video(model: wm_lib.WorldModel, params: Params, batch: dict[str, jax.Array],
                    key: jax.Array | None, context: int = 5) -> jax.Array:
  """`batch` with `observation (B, T, 64, 64, 3)` uint8, `action (B, T, A)`, `is_first
  (B, T)` -> uint8 `(B, T, 64, 192, 3)`: truth | model | |truth - model|.

  `key=None` filters and imagines with the latent modes.
  """
  obs = batch["observation"]
  length = obs.shape[1]
  if not 0 < context < length:
    raise ValueError(f"context={context} must be in [1, {length - 1}] for {length}-step "
                     "sequences")
  keys = (None, None) if key is None else tuple(jax.random.split(key))
  apply = lambda method, *args: model.apply({"params": params}, *args, method=method)
  embed = apply(wm_lib.WorldModel.encode, obs[:, :context])
  post, _ = rssm.observe(model.rssm_def(), params["rssm"], embed, batch["action"][:, :context],
                         batch["is_first"][:, :context], keys[0])
  last = jax.tree.map(lambda x: x[:, -1], post)
  prior = rssm.imagine_with_actions(model.rssm_def(), params["rssm"],
                                    batch["action"][:, context:], last, keys[1])
  states = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), post, prior)
  predicted = _to_uint8(apply(wm_lib.WorldModel.decode, rssm.flat_stoch(states)))
  error = jnp.abs(predicted.astype(jnp.int16) - obs.astype(jnp.int16)).astype(jnp.uint8)
  return jnp.concatenate([obs, predicted, error], axis=3)


def stack_rows(video: np.ndarray) -> np.ndarray:
  """uint8 `(B, T, H, W, 3)` -> `(T, B * H, W, 3)`: the sequences one under another."""
  video = np.asarray(video)
  b, t, h, w, c = video.shape
  return video.transpose(1, 0, 2, 3, 4).reshape(t, b * h, w, c)


def write_open_loop_gif(path: str, video: np.ndarray, duration_ms: int = 200
                        ) -> tuple[np.ndarray, bytes]:
  """Writes `open_loop_video`'s `(B, T, H, W, 3)` as an animated GIF of `T` frames
  `(B * H, W)` to `path` (atomically); returns the frames and the GIF's bytes."""
  frames = stack_rows(video)
  return frames, tensorboard.write_gif(path, frames, duration_ms)


def host_copy(tree: Any) -> Any:
  """This process's numpy copy of a (replicated) tree of arrays: process 0 alone may then
  compute with it, without collectives over arrays that span processes."""

  def local(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(jax.device_get(x))

  return jax.tree.map(local, tree)


def write_mfwm_open_loop(config: ml_collections.ConfigDict, dataset: dataset_lib.EpisodeDataset,
                         world_model_params: Params, workdir: str, step: int,
                         num_sequences: int = 4, context: int = 5) -> str:
  """The open-loop video of `num_sequences` dataset windows of `config.batch_length` steps
  (the first `context` filtered, the rest imagined) -> `<workdir>/mfwm/open_loop.gif` and
  TensorBoard (run `mfwm`, tag `open_loop`, at `step`); returns the GIF's path.

  Sequences and latent samples are drawn from `config.seed` (not from the training
  streams). Call it on process 0 only.
  """
  length = config.batch_length
  context = min(context, length - 1)
  if context < 1:
    raise ValueError(f"config.batch_length={length}: an open-loop video needs 2+ steps")
  sampler = input_pipeline.SequenceSampler(
      dataset, num_sequences, length, seed=config.seed * 1000 + OPEN_LOOP_SEED_SALT,
      keys=("observation", "action", "is_first"))
  batch = {k: jnp.asarray(v) for k, v in sampler.sample(0).items()}
  model = wm_lib.make_world_model(config, dataset.spec.action_dim)
  key = jax.random.fold_in(jax.random.key(config.seed), OPEN_LOOP_SEED_SALT)
  # One compiled program: op-by-op dispatch of the filter and imagination is slower.
  video = jax.jit(lambda p, b, k: open_loop_video(model, p, b, k, context))(
      host_copy(world_model_params), batch, key)
  path = os.path.join(workdir, "mfwm", OPEN_LOOP_FILE)
  frames, gif = write_open_loop_gif(path, np.asarray(video))
  with tensorboard.TensorBoardWriter(workdir, "mfwm") as writer:
    writer.gif("open_loop", step, gif, frames.shape[1], frames.shape[2])
  return path
