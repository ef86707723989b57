"""Test helpers for CLIP: the package's random small CLIP (`genrl_jax/vlm/random_clip.py`)
under the names the tests use, and a writer of the older `flax_model.msgpack` format.

Nothing is downloaded: the model is random and the tokenizer a byte-level BPE built here.
"""

from __future__ import annotations

import os
from typing import Any

from genrl_jax.vlm.clip_model import MSGPACK_FILE, SAFETENSORS_FILE
from genrl_jax.vlm.random_clip import IMAGE_MEAN, IMAGE_STD, small_clip_config, write_tokenizer
from genrl_jax.vlm.random_clip import write_random_clip as write_tiny_clip

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "small_clip_config", "write_tokenizer",
           "write_tiny_clip", "write_msgpack"]


def write_msgpack(directory: str, params: Any) -> str:
  """Replaces the directory's `model.safetensors` by `params` as `flax_model.msgpack`.

  That is what transformers' `FlaxCLIPModel.save_pretrained` (and this package before
  transformers' Flax classes were dropped) wrote: `flax.serialization.to_bytes` of the
  parameter tree. Returns the file's path.
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  out = os.path.join(directory, MSGPACK_FILE)
  with open(out, "wb") as f:
    f.write(serialization.to_bytes(params))
  if os.path.exists(os.path.join(directory, SAFETENSORS_FILE)):
    os.remove(os.path.join(directory, SAFETENSORS_FILE))
  return out
