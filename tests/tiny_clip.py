"""A tiny random CLIP model and tokenizer written to a directory, for offline tests.

Nothing is downloaded: the model is a random `FlaxCLIPModel` of a tiny `CLIPConfig`, and the
tokenizer is a byte-level BPE whose vocabulary is the 256 byte symbols (alone and with the
word-end marker `</w>`), a few merges and CLIP's two special tokens. Its embeddings have no
meaning; they exercise the real `ClipEmbedder` code path (loading, tokenising, sharding).
"""

from __future__ import annotations

import json
import os

# A few merges; the platform notes warn that a merge ending in a bare `</w>` (like
# `o </w>`) breaks the conversion to the fast tokenizer, so every merge joins two symbols.
_MERGES = (("h", "e"), ("w", "a"), ("l", "k</w>"), ("r", "u"), ("ru", "n</w>"))
# Not CLIP's mean/std, so that a test can tell the saved preprocessor config was read.
IMAGE_MEAN = (0.5, 0.4, 0.3)
IMAGE_STD = (0.2, 0.25, 0.3)


def write_tokenizer(directory: str) -> int:
  """Writes a tiny CLIP tokenizer (`vocab.json`, `merges.txt`, configs) into `directory`.

  Returns the vocabulary size; the end-of-text token has the largest id (as in CLIP).
  """
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  from transformers.models.clip.tokenization_clip import bytes_to_unicode  # pylint: disable=g-import-not-at-top
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


def tiny_clip_config(vocab_size: int, image_size: int = 32, projection_dim: int = 16,
                     max_length: int = 16):
  """A `CLIPConfig`: width 32, 2 layers, 8 px patches, `projection_dim` outputs.

  The text model pools at the end-of-text token, which is the vocabulary's last id.
  """
  from transformers import CLIPConfig  # pylint: disable=g-import-not-at-top
  tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4)
  text = dict(tower, vocab_size=vocab_size, max_position_embeddings=max_length,
              bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
              pad_token_id=vocab_size - 1)
  vision = dict(tower, image_size=image_size, patch_size=8)
  return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def _rescaled_kernels(params, seed: int):
  """Redraws every kernel with std 1/sqrt(fan_in).

  Flax CLIP initialises attention, MLP and patch kernels with std 0.01, with which a
  random model maps all images to nearly one embedding; with LeCun-scaled kernels
  different frames get clearly different embeddings, so tests can tell them apart.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax.traverse_util import flatten_dict, unflatten_dict  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  flat = flatten_dict(params)
  for path in sorted(flat):
    value = np.asarray(flat[path])
    if path[-1] == "kernel":
      fan_in = int(np.prod(value.shape[:-1]))
      flat[path] = (rng.standard_normal(value.shape) / np.sqrt(fan_in)).astype(value.dtype)
  return unflatten_dict(flat)


def write_tiny_clip(directory: str, seed: int = 0, projection_dim: int = 16,
                    image_size: int = 32, preprocessor: bool = True):
  """Writes a random tiny CLIP (`config.json`, `flax_model.msgpack`) and its tokenizer.

  With `preprocessor`, also a `preprocessor_config.json` holding IMAGE_MEAN/IMAGE_STD.
  Returns the `FlaxCLIPModel` that was saved.
  """
  from transformers import CLIPImageProcessor, FlaxCLIPModel  # pylint: disable=g-import-not-at-top
  vocab_size = write_tokenizer(directory)
  model = FlaxCLIPModel(tiny_clip_config(vocab_size, image_size, projection_dim), seed=seed)
  model.params = _rescaled_kernels(model.params, seed)
  model.save_pretrained(directory)
  if preprocessor:
    CLIPImageProcessor(image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
                       size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(directory)
  return model


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
