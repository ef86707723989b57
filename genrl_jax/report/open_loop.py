"""Open-loop predictions of the world model (method.md §2.9): truth / model / error videos.

The first `context` frames of each sequence are filtered (posterior), the rest are imagined
with the dataset's actions and decoded. The video puts, side by side, the true frames, the
model's frames (reconstructions, then predictions) and the absolute error.

The mfwm stage ends with `write_mfwm_open_loop`: a few dataset sequences, one under
another, as `<workdir>/mfwm/open_loop.gif` and in TensorBoard (run `mfwm`, tag
`open_loop`), and the open-loop error against the mean-frame baseline (`open_loop_errors`):
the per-pixel MSE (frames in [0, 1]) of the imagined frames and of the training episodes'
mean frame against the same true frames, on held-out episodes
(`config.mfwm.heldout_episodes`; the training ones when none are held out). A model that
draws nothing but the background scores about 1 (the ratio); one that draws the agent
where it is, well below. They go to `metrics.jsonl`/TensorBoard (stage `mfwm`) and
`<workdir>/mfwm/open_loop.json`, which also holds the ratio at each step of the window
(`ratio_by_step`: filtered steps, then imagined ones). The behaviour stage scores its
decoded prompt targets against the same mean frame (`training_mean_frame`).
A second baseline, the last filtered true frame held (`last_frame_mse`/`_ratio`, and
`last_frame_ratio_by_step` over the imagined steps), says how fast the true frames move
away from the context: a model scores below it only where it predicts the motion.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genrl_jax import files
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import input_pipeline
from genrl_jax.report import metrics as metrics_lib
from genrl_jax.report import tensorboard

Params = dict
OPEN_LOOP_FILE = "open_loop.gif"
ERRORS_FILE = "open_loop.json"
MEAN_FRAME_WINDOWS = 16  # windows of config.batch_length frames averaged into the mean frame
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


def mean_frame(frames: np.ndarray) -> np.ndarray:
  """uint8 frames `(..., H, W, 3)` -> their mean `(H, W, 3)` float32 in [0, 1]."""
  frames = np.asarray(frames)
  return frames.reshape((-1,) + frames.shape[-3:]).astype(np.float64).mean(0).astype(
      np.float32) / 255.0


def frame_mse(frames: np.ndarray, reference: np.ndarray) -> float:
  """Per-pixel MSE, on [0, 1], between uint8 `frames (..., H, W, 3)` and `reference`: uint8
  frames of the same shape, or a float `(H, W, 3)` frame in [0, 1] (a mean frame)."""
  a = np.asarray(frames, np.float32) / 255.0
  b = np.asarray(reference)
  b = b.astype(np.float32) / 255.0 if b.dtype == np.uint8 else b.astype(np.float32)
  return float(np.mean((a - b) ** 2))


def open_loop_errors(video: np.ndarray, context: int, mean: np.ndarray) -> dict[str, float]:
  """`open_loop_video`'s `(B, T, H, 3W, 3)` (truth | model | error) and the mean frame
  `(H, W, 3)` in [0, 1] -> `open_loop_mse` (imagined frames `t >= context`),
  `recon_mse` (filtered frames), `mean_frame_mse` (the mean frame against the imagined
  frames' truth), `open_loop_ratio` = open_loop_mse / mean_frame_mse, and a second
  baseline, `last_frame_mse` (the last filtered step's true frame held for every imagined
  step) with `last_frame_ratio` = last_frame_mse / mean_frame_mse: how fast the frames
  move away from where the context left them (above 1: faster than the mean frame's
  error, so that a model must predict the motion to score below 1)."""
  video = np.asarray(video)
  width = video.shape[3] // 3
  truth, model = video[..., :width, :], video[..., width:2 * width, :]
  held = last_frame_held(video, context)[:, context:, :, width:2 * width]
  out = {"open_loop_mse": frame_mse(model[:, context:], truth[:, context:]),
         "recon_mse": frame_mse(model[:, :context], truth[:, :context]),
         "mean_frame_mse": frame_mse(truth[:, context:], mean),
         "last_frame_mse": frame_mse(held, truth[:, context:])}
  out["open_loop_ratio"] = out["open_loop_mse"] / max(out["mean_frame_mse"], 1e-12)
  out["last_frame_ratio"] = out["last_frame_mse"] / max(out["mean_frame_mse"], 1e-12)
  return out


def ratio_by_step(video: np.ndarray, mean: np.ndarray) -> list[float]:
  """`open_loop_video`'s `(B, T, H, 3W, 3)` and the mean frame `(H, W, 3)` in [0, 1] -> for
  each step `t` of `T` (filtered, then imagined), the model's per-pixel MSE over the
  mean frame's, both against the true frames of step `t`: where along the imagined
  horizon the model stops drawing the agent (the ratio reaching 1)."""
  video = np.asarray(video)
  width = video.shape[3] // 3
  truth = video[..., :width, :].astype(np.float32) / 255.0
  model = video[..., width:2 * width, :].astype(np.float32) / 255.0
  axes = (0, 2, 3, 4)
  model_mse = ((model - truth) ** 2).mean(axes)
  mean_mse = ((truth - np.asarray(mean, np.float32)) ** 2).mean(axes)
  return [float(m / max(b, 1e-12)) for m, b in zip(model_mse, mean_mse)]


def last_frame_held(video: np.ndarray, context: int) -> np.ndarray:
  """`open_loop_video`'s `(B, T, H, 3W, 3)` with the model's imagined frames (`t >=
  context`) replaced by the last filtered step's true frame: the persistence baseline's
  video (its error column is left as it was)."""
  video = np.array(video)
  width = video.shape[3] // 3
  video[:, context:, :, width:2 * width] = video[:, context - 1:context, :, :width]
  return video


def prompt_target_errors(decoded: np.ndarray, clip: np.ndarray, mean: np.ndarray | None
                         ) -> dict[str, float]:
  """The decoded prompt target `(T, H, W, 3)` uint8 against the prompt clip `(N, H, W, 3)`
  (frame `t` against frame `t`, over the first min(T, N)) -> `prompt_target_mse`, and with
  the mean frame `(H, W, 3)` in [0, 1] `prompt_mean_frame_mse` (the mean frame against the
  clip) and `prompt_target_ratio`; the same scale as `open_loop_errors`."""
  decoded, clip = np.asarray(decoded), np.asarray(clip)
  if decoded.shape[1:] != clip.shape[1:]:
    raise ValueError(f"decoded prompt frames {decoded.shape[1:]} and prompt clip frames "
                     f"{clip.shape[1:]} differ in size")
  n = min(len(decoded), len(clip))
  out = {"prompt_target_mse": frame_mse(decoded[:n], clip[:n])}
  if mean is not None:
    out["prompt_mean_frame_mse"] = frame_mse(clip[:n], mean)
    out["prompt_target_ratio"] = out["prompt_target_mse"] / max(out["prompt_mean_frame_mse"],
                                                                1e-12)
  return out


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


def write_mfwm_open_loop(config: ml_collections.ConfigDict, dataset: dataset_reader.EpisodeDataset,
                         world_model_params: Params, workdir: str, step: int,
                         num_sequences: int = 4, context: int = 5,
                         num_scored: int = 16, mfwm_fingerprint: str | None = None) -> str:
  """The open-loop video of `num_sequences` dataset windows of `config.batch_length` steps
  (the first `context` filtered, the rest imagined) -> `<workdir>/mfwm/open_loop.gif` and
  TensorBoard (run `mfwm`, tag `open_loop`, at `step`); and the open-loop errors of
  `num_scored` windows (latent modes) against the mean frame of the training episodes ->
  `metrics.jsonl`/TensorBoard (stage `mfwm`, at `step`) and `mfwm/open_loop.json`. Windows come from the held-out episodes
  (`config.mfwm.heldout_episodes`), else from the training ones. Returns the GIF's path.

  Sequences and latent samples are drawn from `config.seed` (not from the training
  streams). `mfwm_fingerprint` (`checkpoints.params_fingerprint` of the MFWM's params) goes
  to the JSON, which names the model it scored. Call it on process 0 only.
  """
  length = config.batch_length
  context = min(context, length - 1)
  if context < 1:
    raise ValueError(f"config.batch_length={length}: an open-loop video needs 2+ steps")
  train, heldout = input_pipeline.heldout_split(dataset, config.mfwm.heldout_episodes)
  split = "heldout" if len(heldout) else "train"
  keys = ("observation", "action", "is_first")
  seed = config.seed * 1000 + OPEN_LOOP_SEED_SALT
  scored = input_pipeline.SequenceSampler(dataset, num_scored, length, seed=seed, keys=keys,
                                          process_index=0, process_count=1,
                                          episodes=heldout if len(heldout) else train)
  batch = {k: jnp.asarray(v) for k, v in scored.sample(0).items()}
  mean = training_mean_frame(config, dataset)
  model = wm_lib.make_world_model(config, dataset.spec.action_dim)
  key = jax.random.fold_in(jax.random.key(config.seed), OPEN_LOOP_SEED_SALT)
  # One compiled program: op-by-op dispatch of the filter and imagination is slower.
  run = jax.jit(lambda p, b, k: open_loop_video(model, p, b, k, context))
  params = host_copy(world_model_params)
  scored_video = np.asarray(run(params, batch, None))
  errors = open_loop_errors(scored_video, context, mean)
  video = run(params, {k: v[:num_sequences] for k, v in batch.items()}, key)
  directory = os.path.join(workdir, "mfwm")
  path = os.path.join(directory, OPEN_LOOP_FILE)
  gif_frames, gif = write_open_loop_gif(path, np.asarray(video))
  with tensorboard.TensorBoardWriter(workdir, "mfwm") as writer:
    writer.gif("open_loop", step, gif, gif_frames.shape[1], gif_frames.shape[2])
  with metrics_lib.MetricWriter(workdir, "mfwm") as writer:
    writer.write(step, errors)
  files.write_json(os.path.join(directory, ERRORS_FILE), dict(
      errors, step=int(step), mfwm_fingerprint=mfwm_fingerprint, split=split,
      sequences=num_scored, context=context, length=length,
      ratio_by_step=ratio_by_step(scored_video, mean),
      last_frame_ratio_by_step=ratio_by_step(last_frame_held(scored_video, context),
                                             mean)[context:]))
  return path


def read_open_loop_errors(workdir: str) -> dict[str, Any]:
  """`<workdir>/mfwm/open_loop.json` (empty when the MFWM stage has not written it)."""
  path = os.path.join(workdir, "mfwm", ERRORS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def training_mean_frame(config: ml_collections.ConfigDict,
                        dataset: dataset_reader.EpisodeDataset) -> np.ndarray:
  """The mean frame `(H, W, 3)` in [0, 1] of `MEAN_FRAME_WINDOWS` windows of the training
  episodes (`config.mfwm.heldout_episodes` excluded), drawn from `config.seed`: the
  baseline of the open-loop and prompt-target errors."""
  train, _ = input_pipeline.heldout_split(dataset, config.mfwm.heldout_episodes)
  sampler = input_pipeline.SequenceSampler(
      dataset, MEAN_FRAME_WINDOWS, config.batch_length, keys=("observation",),
      seed=config.seed * 1000 + OPEN_LOOP_SEED_SALT + 1, process_index=0, process_count=1,
      episodes=train)
  return mean_frame(sampler.sample(0)["observation"])
