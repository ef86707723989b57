"""The InternVideo2 `Embedder` (GenRL's video-language model): a checkpoint and its
vocabulary -> unit video and text embeddings, data-parallel over local devices.

The model is `internvideo2_model`, checkpoint reading `internvideo2_convert`, the tokenizer
`internvideo2_tokenizer`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax
import numpy as np

from genrl_jax.vlm import sharded
from genrl_jax.vlm.internvideo2_convert import load
from genrl_jax.vlm.internvideo2_model import (DTYPES, InternVideo2, InternVideo2Config, Params,
                                              preprocess)
from genrl_jax.vlm.internvideo2_tokenizer import VOCAB_FILE, Tokenizer


def parse_overrides(spec: str, option: str = "config.vlm.internvideo2.size_overrides"
                    ) -> dict[str, int]:
  """`'vision_heads=4,text_heads=4'` -> `{'vision_heads': 4, 'text_heads': 4}`."""
  fields = {f.name for f in dataclasses.fields(InternVideo2Config)}
  out = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    name, _, value = item.partition("=")
    if name.strip() not in fields or not value.strip().lstrip("-").isdigit():
      raise ValueError(f"{option}={spec!r}: expected comma-separated <field>=<int> with "
                       f"fields of InternVideo2Config: {sorted(fields)}")
    out[name.strip()] = int(value)
  return out


# The official stage-2 checkpoint's file name without extension: the name of the
# embeddings the reference's datasets carry (`genrl_jax.data.npz_import.REFERENCE_VLM`).
OFFICIAL_CHECKPOINT = "InternVideo2-stage2_1b-224p-f4"


def tokenizer_dir(checkpoint: str, tokenizer: str) -> str:
  """The vocabulary directory: `config.vlm.internvideo2.tokenizer`, else the checkpoint's folder."""
  return os.path.expanduser(tokenizer or os.path.dirname(os.path.abspath(
      os.path.expanduser(checkpoint))))


def check_files(checkpoint: str, tokenizer: str) -> None:
  """One-line errors naming the config option when a file is missing."""
  if not checkpoint or not os.path.isfile(os.path.expanduser(checkpoint)):
    raise FileNotFoundError(
        f"config.vlm.model={checkpoint!r} is not a file: config.vlm.name='internvideo2' "
        f"needs the InternVideo2 stage-2 checkpoint ({OFFICIAL_CHECKPOINT}.pt, see "
        "docs/vlm.md) to embed text or video")
  vocab_dir = tokenizer_dir(checkpoint, tokenizer)
  if not os.path.isfile(os.path.join(vocab_dir, VOCAB_FILE)):
    raise FileNotFoundError(
        f"config.vlm.internvideo2.tokenizer={tokenizer!r}: no {VOCAB_FILE} in {vocab_dir}: "
        f"expected a directory holding the BERT WordPiece vocabulary (bert-large-uncased's "
        f"{VOCAB_FILE}); empty means the checkpoint's folder")


def internvideo2_identifier(checkpoint: str, dtype: str = "float32") -> str:
  """`internvideo2:<checkpoint file name without extension>` (+ `:bfloat16` when computed
  in bfloat16); with no checkpoint given, that of the official file.

  The file's name, not a digest of its 2.8 GB: the reference's datasets name their
  `clip_video` embeddings this way (`genrl_jax import-npz` records them as
  `internvideo2:InternVideo2-stage2_1b-224p-f4`), so a run finds them with or without the
  checkpoint at hand, and a prompt-cache lookup reads no weights. Weights of another
  model must therefore come under another file name.
  """
  if dtype not in DTYPES:
    raise ValueError(f"config.vlm.internvideo2.dtype={dtype!r}: expected one of {sorted(DTYPES)}")
  stem = (os.path.splitext(os.path.basename(os.path.expanduser(checkpoint)))[0]
          if checkpoint else OFFICIAL_CHECKPOINT)
  suffix = "" if dtype == "float32" else f":{dtype}"
  return f"internvideo2:{stem}{suffix}"


class InternVideo2Embedder:
  """The `Embedder` of InternVideo2 stage 2, data-parallel over a mesh of local devices.

  Attributes:
    identifier: see `internvideo2_identifier`.
    embed_dim: the joint space's size (512 for the 1B model).
    config: the `InternVideo2Config`.
    batch_size: clips (or texts) per device call, a multiple of the device count.
  """

  def __init__(self, checkpoint: str, tokenizer: str, size: str = "1b",
               overrides: Mapping[str, int] | None = None, dtype: str = "float32",
               batch_size: int = 64, devices: list[jax.Device] | None = None):
    """Loads the checkpoint (`config.vlm.model`) and the vocabulary directory
    (`config.vlm.internvideo2.tokenizer`, empty: the checkpoint's folder); `size`/`overrides`
    name what the shapes cannot give (heads); `dtype` 'float32' or 'bfloat16'
    (`config.vlm.internvideo2.dtype`)."""
    sharded.check_batch_size(batch_size)
    identifier = internvideo2_identifier(checkpoint, dtype)
    check_files(checkpoint, tokenizer)
    config, params = load(os.path.expanduser(checkpoint), size, **dict(overrides or {}))
    self._setup(identifier, config, params,
                Tokenizer(tokenizer_dir(checkpoint, tokenizer), config.max_txt_l), dtype,
                batch_size, devices)

  @classmethod
  def from_params(cls, config: InternVideo2Config, params: Params, identifier: str,
                  tokenizer: Tokenizer | None = None, dtype: str = "float32",
                  batch_size: int = 64, devices: list[jax.Device] | None = None
                  ) -> "InternVideo2Embedder":
    """An embedder of given params (e.g. random ones, for benchmarks); without a
    tokenizer it embeds video only."""
    if dtype not in DTYPES:
      raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    embedder = cls.__new__(cls)
    embedder._setup(identifier, config, params, tokenizer, dtype, batch_size, devices)  # pylint: disable=protected-access
    return embedder

  def _setup(self, identifier: str, config: InternVideo2Config, params: Params,
             tokenizer: Tokenizer | None, dtype: str, batch_size: int,
             devices: list[jax.Device] | None) -> None:
    self.identifier, self.config, self.tokenizer = identifier, config, tokenizer
    self.embed_dim = config.embed_dim
    self._model = InternVideo2(config, DTYPES[dtype])
    self._parallel = sharded.DataParallel(params, batch_size, devices)
    self.mesh, self.batch_size = self._parallel.mesh, self._parallel.batch_size
    self._video_fn = self._parallel.jit(self._video_features, 1)
    self._text_fn = self._parallel.jit(self._text_features, 2)

  def _video_features(self, params: Params, frames: jax.Array) -> jax.Array:
    """uint8 `(n, T, H, W, 3)` -> unit `(n, E)`."""
    x = preprocess(frames, self.config.img_size)
    return self._model.apply({"params": params}, x, method=InternVideo2.encode_video)

  def _text_features(self, params: Params, input_ids: jax.Array, attention_mask: jax.Array
                     ) -> jax.Array:
    """int `(n, L)` ids and mask -> unit `(n, E)`."""
    return self._model.apply({"params": params}, input_ids, attention_mask,
                             method=InternVideo2.encode_text)

  def embed_video(self, frames: np.ndarray) -> np.ndarray:
    """uint8 `(N, T, H, W, 3)` RGB clips (T = `config.num_frames`, 8) -> float32 `(N, E)`."""
    frames = np.asarray(frames)
    t = self.config.num_frames
    if (frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1] != t
        or frames.shape[-1] != 3 or 0 in frames.shape[2:]):
      raise ValueError(f"InternVideo2Embedder.embed_video expects uint8 RGB clips "
                       f"(N, {t}, H, W, 3); got {frames.dtype} {frames.shape}")
    return self._parallel.run(self._video_fn, self.embed_dim, frames)

  def embed_text(self, texts: list[str]) -> np.ndarray:
    """`N` strings -> float32 `(N, E)`; beyond 39 word pieces a text is cut."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
      raise ValueError(f"InternVideo2Embedder.embed_text expects a list of strings, got "
                       f"{texts!r}")
    if self.tokenizer is None:
      raise ValueError("this InternVideo2Embedder was built without a tokenizer")
    ids, mask = self.tokenizer(list(texts))
    return self._parallel.run(self._text_fn, self.embed_dim, ids, mask)
