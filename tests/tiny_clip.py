"""Test helpers for CLIP: the package's random small CLIP (`genrl_jax/vlm/random_clip.py`)
under the names the tests use, and a writer of PyTorch-layout weights.

Nothing is downloaded: the model is random and the tokenizer a byte-level BPE built here.
"""

from __future__ import annotations

import os

from genrl_jax.vlm.random_clip import IMAGE_MEAN, IMAGE_STD
from genrl_jax.vlm.random_clip import write_random_clip as write_tiny_clip

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "write_tiny_clip", "write_safetensors"]


def write_safetensors(directory: str, params) -> str:
  """Writes Flax CLIP `params` as a PyTorch-layout `model.safetensors`, without torch.

  Key names follow the PyTorch CLIP modules (`a/b/kernel` -> `a.b.weight`); dense kernels
  are transposed to `(out, in)` and conv kernels from HWIO to OIHW, the inverse of what
  `FlaxCLIPModel.from_pretrained(from_pt=True)` does. Returns the file's path.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax.traverse_util import flatten_dict  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  state = {}
  for path, value in flatten_dict(params).items():
    value = np.asarray(value)
    *modules, leaf = path
    if leaf == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
      leaf = "weight"
    elif leaf in ("scale", "embedding"):
      leaf = "weight"
    # np.array, not np.ascontiguousarray: the latter turns the scalar logit_scale into (1,).
    state[".".join([*modules, leaf])] = np.array(value, order="C")
  out = os.path.join(directory, "model.safetensors")
  os.makedirs(directory, exist_ok=True)
  save_file(state, out, metadata={"format": "pt"})
  return out
