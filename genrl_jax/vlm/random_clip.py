"""A small CLIP with random weights, built locally: the stand-in VLM of the `tiny` variant.

Nothing is downloaded. The model is the package's Flax CLIP (`genrl_jax.vlm.clip_model`)
of a small config (width 32, two layers per tower, 8 px patches) drawn from a seed, and the
tokenizer is a byte-level BPE whose vocabulary is the 256 byte symbols (alone and with the
word-end marker `</w>`), a few merges and CLIP's two special tokens. It is saved as a hub
checkpoint (`config.json`, `model.safetensors`, tokenizer files) and loaded back through
the real `ClipEmbedder` path, so a run with it exercises everything a run with a real CLIP
does. A seed gives the weights transformers' `FlaxCLIPModel(config, seed=seed)` drew (the
random CLIP of recipe 2 was built with it), then kernels redrawn as below.

Its embeddings carry NO meaning: text prompts embedded by it say nothing about the task.
They do tell frames apart, so a *video* prompt cut from the dataset still names a target
the connector can decode; this is why the `tiny` variant prompts with clips of its own
episodes (`genrl_jax/prompts/dataset_clips.py`). Telling frames apart needs large
kernels: with transformers' Flax CLIP initial std of 0.01 every image maps to nearly one
embedding, and even with std 1/sqrt(fan_in) 8-frame clips of random stickman episodes (a
small body on a large, fixed background) get a mean pairwise cosine of 0.995 (min 0.975);
with std 3/sqrt(fan_in) (KERNEL_GAIN) it is 0.90 (min 0.68).

A config asks for it with `vlm.name='clip'` and an empty `vlm.model`; it is written once
to `<cache>/random_clip/seed<seed>-dim<E>-px<size>-r<recipe>` (`cache_root`) and reused.
"""

from __future__ import annotations

import json
import os
from typing import Any

from genrl_jax import files
from genrl_jax.vlm import clip_model

# A few merges; the platform notes warn that a merge ending in a bare `</w>` (like
# `o </w>`) breaks the conversion to the fast tokenizer, so every merge joins two symbols.
_MERGES = (("h", "e"), ("w", "a"), ("l", "k</w>"), ("r", "u"), ("ru", "n</w>"))
# Not CLIP's mean/std, so that a test can tell the saved preprocessor config was read.
IMAGE_MEAN = (0.5, 0.4, 0.3)
IMAGE_STD = (0.2, 0.25, 0.3)
IMAGE_SIZE = 32
KERNEL_GAIN = 3.0
# Bumped whenever the weights a seed gives change, so that embeddings and prompt caches of
# an older recipe are never mixed with new ones (the identifier names it).
RECIPE = 2
IDENTIFIER_PREFIX = "clip:random-weights"


def write_tokenizer(directory: str) -> int:
  """Writes a tiny CLIP tokenizer (`vocab.json`, `merges.txt`, configs) into `directory`.

  Returns the vocabulary size; the end-of-text token has the largest id (as in CLIP).
  """
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  # Here in transformers 4 and 5 alike (5 dropped it from tokenization_clip).
  from transformers.convert_slow_tokenizer import bytes_to_unicode  # pylint: disable=g-import-not-at-top
  symbols = list(bytes_to_unicode().values())
  vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in _MERGES]
  vocab += ["<|startoftext|>", "<|endoftext|>"]
  os.makedirs(directory, exist_ok=True)
  vocab_path = os.path.join(directory, "vocab.json")
  merges_path = os.path.join(directory, "merges.txt")
  with open(vocab_path, "w", encoding="utf-8") as f:
    json.dump({token: i for i, token in enumerate(vocab)}, f)
  with open(merges_path, "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
  CLIPTokenizer(vocab_path, merges_path).save_pretrained(directory)
  return len(vocab)


def small_clip_config(vocab_size: int, image_size: int = IMAGE_SIZE, projection_dim: int = 16,
                      max_length: int = 16) -> clip_model.ClipConfig:
  """Width 32, 2 layers, 8 px patches, `projection_dim` outputs.

  The text model pools at the end-of-text token, which is the vocabulary's last id.
  """
  tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4)
  text = clip_model.TextConfig(**tower, vocab_size=vocab_size,
                               max_position_embeddings=max_length,
                               bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                               pad_token_id=vocab_size - 1)
  vision = clip_model.VisionConfig(**tower, image_size=image_size, patch_size=8)
  return clip_model.ClipConfig(text_config=text, vision_config=vision,
                               projection_dim=projection_dim)


def _rescaled_kernels(params: Any, seed: int) -> Any:
  """Redraws every kernel with std KERNEL_GAIN/sqrt(fan_in) (see the module docstring)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax.traverse_util import flatten_dict, unflatten_dict  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  flat = flatten_dict(params)
  for path in sorted(flat):
    value = np.asarray(flat[path])
    if path[-1] == "kernel":
      fan_in = int(np.prod(value.shape[:-1]))
      std = KERNEL_GAIN / np.sqrt(fan_in)
      flat[path] = (rng.standard_normal(value.shape) * std).astype(value.dtype)
  return unflatten_dict(flat)


def write_random_clip(directory: str, seed: int = 0, projection_dim: int = 16,
                      image_size: int = IMAGE_SIZE, preprocessor: bool = True
                      ) -> tuple[clip_model.ClipConfig, Any]:
  """Writes a random small CLIP (`config.json`, `model.safetensors`) and its tokenizer.

  With `preprocessor`, also a `preprocessor_config.json` holding IMAGE_MEAN/IMAGE_STD (in
  the fields of transformers' `CLIPImageProcessor`). Returns `(config, params)` saved.
  """
  vocab_size = write_tokenizer(directory)
  config = small_clip_config(vocab_size, image_size, projection_dim)
  params = _rescaled_kernels(clip_model.init_params(config, seed), seed)
  clip_model.save(directory, config, params)
  if preprocessor:
    with open(os.path.join(directory, "preprocessor_config.json"), "w",
              encoding="utf-8") as f:
      json.dump(dict(image_processor_type="CLIPImageProcessor", image_mean=list(IMAGE_MEAN),
                     image_std=list(IMAGE_STD), size={"shortest_edge": image_size},
                     crop_size={"height": image_size, "width": image_size}), f, indent=2)
  return config, params


def cache_root() -> str:
  """`$GENRL_JAX_CACHE`, else `~/.cache/genrl_jax`."""
  return os.environ.get("GENRL_JAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "genrl_jax")


def identifier(seed: int, projection_dim: int) -> str:
  """The embedder identifier recorded with datasets, prompt caches and results rows."""
  return f"{IDENTIFIER_PREFIX}(seed={seed},dim={projection_dim},recipe={RECIPE})"


def ensure_random_clip(seed: int, projection_dim: int, root: str | None = None) -> str:
  """The directory of the random CLIP of `seed` and `projection_dim`, written if missing.

  Written into a temporary folder and renamed, so an interrupted write leaves nothing a
  later run would load, and processes racing to write it all end with one complete copy.
  """
  directory = os.path.join(root or cache_root(), "random_clip",
                           f"seed{seed}-dim{projection_dim}-px{IMAGE_SIZE}-r{RECIPE}")
  if os.path.isfile(os.path.join(directory, "config.json")):
    return directory
  try:
    files.write_directory(
        directory, lambda tmp: write_random_clip(tmp, seed=seed, projection_dim=projection_dim))
  except OSError:  # another process finished first
    if not os.path.isfile(os.path.join(directory, "config.json")):
      raise
  return directory
