"""The embedder interface of video-language models, and `make_embedder(config)`.

`Embedder` is what the rest of the package calls: text and 8-frame clips in, unit-norm
embeddings in one space out. `make_embedder(config)` builds the one a config names
(`config.vlm.name`):

  ''                   none: datasets must carry embeddings, prompts must be precomputed
                       (or cached, see `genrl_jax.prompts.cache`).
  'random_projection'  `RandomProjectionEmbedder`, no semantics, no download (smoke runs).
  'clip'               `genrl_jax.vlm.clip.ClipEmbedder`: CLIP (the package's own Flax
                       model, `genrl_jax.vlm.clip_model`) from `config.vlm.model` (hub id or
                       local directory with model.safetensors; `config.vlm.batch_size`),
                       clips embedded as the mean of their frames' embeddings. An empty
                       `config.vlm.model` means no real model: a small CLIP with random
                       weights is built locally (`genrl_jax.vlm.random_clip`), with a
                       warning that its embeddings mean nothing.
  'internvideo2'       `genrl_jax.vlm.internvideo2.InternVideo2Embedder`: GenRL's video-text
                       model (InternVideo2 stage 2) from the checkpoint file
                       `config.vlm.model` (.pt, read without torch) and the BERT vocabulary
                       directory `config.vlm.internvideo2.tokenizer` (empty: the
                       checkpoint's folder). Its identifier names the checkpoint file
                       (empty `config.vlm.model`: the official one), so datasets imported
                       from the reference and cached prompts are found without the
                       checkpoint; loading it needs the file. `config.vlm.internvideo2.dtype` ('float32' or
                       'bfloat16' matmuls), `config.vlm.internvideo2.size` ('1b': head
                       counts the shapes cannot give) and
                       `config.vlm.internvideo2.size_overrides` ('field=int,...').

`has_semantics(config)` says whether the configured VLM relates text to video at all (False
for the two stand-ins); the behaviour stage then prompts with dataset clips by default.

`embedder_identifier(config)` gives the identifier the embedder would have without loading
it, to look up cached prompt embeddings.

Adding another backend (e.g. a video-text model such as ViCLIP):
  1. Write a class in its own module of this package with the `Embedder` attributes and
     methods: `identifier` (stable, naming the model and its weights: it keys datasets'
     embeddings and the prompt cache), `embed_dim`, `embed_text(list[str]) -> (N, E)` and
     `embed_video(uint8 (N, 8, H, W, 3)) -> (N, E)`, float32 rows of unit norm. The
     embedder does its own resizing and normalisation of raw frames.
  2. Register a name in `make_embedder` and `embedder_identifier` (import the module
     inside the branch, so its dependencies stay optional), with any options under
     `config.vlm` in `experiments/configs/base.py`.
  3. Its `embed_dim` must equal `config.connector.embed_dim` (`make_embedder` checks).
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from absl import logging
import ml_collections
import numpy as np


@runtime_checkable
class Embedder(Protocol):
  """A video-language model mapping text and 8-frame clips into one embedding space.

  Resizing and normalising frames to the model's input (e.g. 224 px, ImageNet mean/std for
  InternVideo2) is the embedder's job: it receives raw uint8 RGB frames of any size.
  """

  identifier: str  # names the model, recorded with results and embedding caches
  embed_dim: int

  def embed_text(self, texts: list[str]) -> np.ndarray:
    """`N` strings -> float32 `(N, E)`, unit-norm rows."""
    ...

  def embed_video(self, frames: np.ndarray) -> np.ndarray:
    """uint8 `(N, 8, H, W, 3)` RGB clips -> float32 `(N, E)`, unit-norm rows."""
    ...


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
  """`(n_out, n_in)` weights averaging input pixels by overlap (area resize, any size)."""
  lo = np.arange(n_out)[:, None] * n_in / n_out
  hi = lo + n_in / n_out
  px = np.arange(n_in)[None, :]
  overlap = np.clip(np.minimum(px + 1, hi) - np.maximum(px, lo), 0.0, None)
  return overlap / overlap.sum(axis=1, keepdims=True)


class RandomProjectionEmbedder:
  """A deterministic stand-in embedder with NO semantics: for tests and offline smoke runs.

  Text: counts of character trigrams, hashed into buckets with md5 (stable across
  processes, unlike Python's `hash`), times a seeded Gaussian projection. Video: frames
  area-averaged to 8x8, averaged over time, centred, times another seeded projection.
  Both unit-norm. Similar strings or clips get nearby embeddings; nothing here relates
  text to video, so it cannot stand in for a VLM when results matter.
  """

  IDENTIFIER = "random-projection"
  N_BUCKETS = 2048
  POOL = 8

  def __init__(self, embed_dim: int, seed: int = 0, identifier: str = IDENTIFIER):
    if embed_dim < 1:
      raise ValueError(f"embed_dim must be positive, got {embed_dim}")
    self.embed_dim = embed_dim
    self.identifier = identifier
    self._text_proj = np.random.default_rng([seed, 0]).standard_normal(
        (self.N_BUCKETS, embed_dim)).astype(np.float32)
    # One extra constant feature keeps the video features non-zero for any clip.
    self._video_proj = np.random.default_rng([seed, 1]).standard_normal(
        (self.POOL * self.POOL * 3 + 1, embed_dim)).astype(np.float32)

  def _bucket(self, trigram: str) -> int:
    digest = hashlib.md5(trigram.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") % self.N_BUCKETS

  def embed_text(self, texts: list[str]) -> np.ndarray:
    """`N` strings -> float32 `(N, E)`, unit-norm rows."""
    counts = np.zeros((len(texts), self.N_BUCKETS), np.float32)
    for i, text in enumerate(texts):
      padded = f"  {text} "  # every string, even "", has at least one trigram
      for j in range(len(padded) - 2):
        counts[i, self._bucket(padded[j:j + 3])] += 1.0
    return _unit_rows(_rows_times(counts, self._text_proj))

  def embed_video(self, frames: np.ndarray) -> np.ndarray:
    """uint8 `(N, F, H, W, 3)` clips (F = 8 normally) -> float32 `(N, E)`, unit-norm rows."""
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise ValueError(f"expected uint8 clips (N, F, H, W, 3), got {frames.dtype} "
                       f"{frames.shape}")
    wh = _area_weights(frames.shape[2], self.POOL)
    ww = _area_weights(frames.shape[3], self.POOL)
    pooled = np.einsum("ih,nfhwc,jw->nijc", wh, frames.astype(np.float32) / 255.0, ww,
                       optimize=True)
    pooled = pooled / frames.shape[1] - 0.5
    feats = np.concatenate([pooled.reshape(len(frames), -1),
                            np.ones((len(frames), 1), np.float32)], axis=1)
    return _unit_rows(_rows_times(feats.astype(np.float32), self._video_proj))


def _rows_times(rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """`rows @ matrix` one row at a time: BLAS picks its kernel by the row count (on some
  CPUs the last bit then differs), and a prompt must embed the same alone or in a batch."""
  return np.stack([row @ matrix for row in rows]) if len(rows) else rows @ matrix


def _unit_rows(x: np.ndarray) -> np.ndarray:
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


BACKENDS = ("", "random_projection", "clip", "internvideo2")


def _check_backend(name: str) -> None:
  if name not in BACKENDS:
    raise ValueError(f"config.vlm.name={name!r}: expected one of {BACKENDS} ('' for no VLM)")


def embedder_identifier(config: ml_collections.ConfigDict) -> str | None:
  """The identifier `make_embedder(config)` would give its embedder, without loading a model.

  None for no VLM (`config.vlm.name == ''`).
  """
  name = config.vlm.name
  _check_backend(name)
  if not name:
    return None
  if name == "random_projection":
    return RandomProjectionEmbedder.IDENTIFIER
  if name == "internvideo2":
    from genrl_jax.vlm import internvideo2  # pylint: disable=g-import-not-at-top
    return internvideo2.internvideo2_identifier(config.vlm.model,
                                                config.vlm.internvideo2.dtype)
  if not config.vlm.model:
    from genrl_jax.vlm import random_clip  # pylint: disable=g-import-not-at-top
    return random_clip.identifier(config.vlm.seed, config.connector.embed_dim)
  from genrl_jax.vlm import clip  # pylint: disable=g-import-not-at-top
  return clip.clip_identifier(config.vlm.model)


def missing_files(config: ml_collections.ConfigDict) -> str | None:
  """Why `make_embedder(config)` cannot load its model, in one line (naming the config
  option), checked without loading it; None when nothing is known to be missing (hub
  models are only found when loaded)."""
  _check_backend(config.vlm.name)
  if config.vlm.name == "internvideo2":
    from genrl_jax.vlm import internvideo2  # pylint: disable=g-import-not-at-top
    try:
      internvideo2.check_files(config.vlm.model, config.vlm.internvideo2.tokenizer)
    except FileNotFoundError as e:
      return str(e)
  return None


def has_semantics(config: ml_collections.ConfigDict) -> bool:
  """Whether the configured VLM is a real one (text and video meet in its space); False
  for none, 'random_projection' and the random-weight CLIP."""
  _check_backend(config.vlm.name)
  return config.vlm.name == "internvideo2" or (
      config.vlm.name == "clip" and bool(config.vlm.model))


def make_embedder(config: ml_collections.ConfigDict) -> Embedder | None:
  """The embedder named by `config.vlm.name` (see the module docstring), or None for ''.

  Its `embed_dim` must equal `config.connector.embed_dim`.
  """
  name = config.vlm.name
  _check_backend(name)
  if not name:
    return None
  if name == "random_projection":
    return RandomProjectionEmbedder(config.connector.embed_dim, seed=config.vlm.seed)
  if name == "internvideo2":
    from genrl_jax.vlm import internvideo2  # pylint: disable=g-import-not-at-top
    embedder = internvideo2.InternVideo2Embedder(
        config.vlm.model, config.vlm.internvideo2.tokenizer, size=config.vlm.internvideo2.size,
        overrides=internvideo2.parse_overrides(config.vlm.internvideo2.size_overrides),
        dtype=config.vlm.internvideo2.dtype, batch_size=int(config.vlm.batch_size))
    _check_embed_dim(config, embedder)
    return embedder
  from genrl_jax.vlm import clip  # pylint: disable=g-import-not-at-top
  if not config.vlm.model:
    from genrl_jax.vlm import random_clip  # pylint: disable=g-import-not-at-top
    logging.warning(
        "config.vlm.model is empty: no real VLM is configured, so a small CLIP with RANDOM "
        "weights is built locally. Its embeddings carry no meaning (text prompts say nothing "
        "about the task); set config.vlm.model to a hub id or a local CLIP directory (and "
        "config.connector.embed_dim to its embedding size) for real prompts.")
    directory = random_clip.ensure_random_clip(config.vlm.seed, config.connector.embed_dim)
    embedder = clip.ClipEmbedder(directory, batch_size=int(config.vlm.batch_size))
    embedder.identifier = random_clip.identifier(config.vlm.seed, config.connector.embed_dim)
    return embedder
  embedder = clip.ClipEmbedder(config.vlm.model, batch_size=int(config.vlm.batch_size))
  _check_embed_dim(config, embedder)
  return embedder


def _check_embed_dim(config: ml_collections.ConfigDict, embedder: Embedder) -> None:
  if embedder.embed_dim != config.connector.embed_dim:
    raise ValueError(f"config.vlm.model={config.vlm.model!r} gives {embedder.embed_dim}-d "
                     f"embeddings but config.connector.embed_dim="
                     f"{config.connector.embed_dim}; set config.connector.embed_dim="
                     f"{embedder.embed_dim} or choose a model with that embedding size")
