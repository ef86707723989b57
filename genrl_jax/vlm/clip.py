"""CLIP as the video-language model: frame embeddings averaged over a clip.

`ClipEmbedder` runs the package's own Flax CLIP (`genrl_jax.vlm.clip_model`; e.g.
`openai/clip-vit-base-patch32`). A clip of F frames (F = 8 normally) is embedded as the
L2-normalised mean of its F L2-normalised frame embeddings; text is embedded by CLIP's text
tower. Both land in CLIP's joint space, so a text prompt can be compared with video
embeddings of a dataset.

`model` is a Hugging Face hub id or a local directory holding `config.json`, the weights
and the tokenizer. The weights are read from `model.safetensors` (PyTorch layout, what
`CLIPModel.save_pretrained` writes; read with numpy, no torch), else from
`flax_model.msgpack` (what transformers' Flax CLIP, and this package before, saved);
`pytorch_model.bin` and sharded checkpoints are not read. transformers is used only for the
tokenizer (`AutoTokenizer`), so transformers 4 and 5 both do. A hub id is read from the
local hub cache and downloaded only when the machine can reach the hub; offline
(`HF_HUB_OFFLINE=1`, or no network) a missing copy is an error that says how to provide one.

Video preprocessing runs in JAX, inside the same jitted function as the vision tower:
uint8 frames are resized to the model's `vision_config.image_size` (bilinear, straight to a
square: no crop, which matches CLIP's resize-and-centre-crop for the square frames of the
environments), scaled to [0, 1] and normalised with the `image_mean`/`image_std` of the
model's `preprocessor_config.json` (CLIP's standard constants when there is none). The
batch is split over the devices of a 1-D mesh; the parameters are replicated.

Identifier (`clip_identifier`), recorded with datasets and prompt caches:
  hub id:          `clip:<hub id>`, e.g. `clip:openai/clip-vit-base-patch32`;
  local directory: `clip:<directory name>@<12 hex digits>`, the digits being the start of
                   the sha256 of the files the embedder reads (config, preprocessor and
                   tokenizer files, the weights file read), so a directory that is
                   moved or copied keeps its identifier, and two different models saved
                   under the same directory name get different ones.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.vlm import clip_model
from genrl_jax.vlm import sharded

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
# CLIP's pixel statistics (transformers.image_utils.OPENAI_CLIP_MEAN/STD), used when the
# model comes without a preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_PREPROCESSOR_FILE = "preprocessor_config.json"
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json")
_HOW_TO_PROVIDE = (
    "Provide the weights in one of two ways: on a machine with internet run "
    "`huggingface-cli download {model}` (or `hf download {model}`; it fills the hub cache, "
    "~/.cache/huggingface; copy that cache over or point HF_HOME at it), or save the model "
    "and its tokenizer with `CLIPModel.save_pretrained(dir)` (model.safetensors) and "
    "`CLIPTokenizer.save_pretrained(dir)` and set config.vlm.model to that directory.")


def _looks_like_path(name_or_path: str) -> bool:
  # Hub ids are `name` or `owner/name`; anything else that is not a directory is taken as
  # a local path that does not exist, so it is not sent to the hub as a bogus id.
  return (os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or
          name_or_path.count("/") > 1 or (os.sep != "/" and os.sep in name_or_path))


def _local_dir(name_or_path: str) -> str | None:
  """The local model directory `name_or_path` names, or None for a hub id.

  Raises FileNotFoundError for a path that is not a directory.
  """
  path = os.path.expanduser(name_or_path)
  if os.path.isdir(path):
    return os.path.abspath(path)
  if _looks_like_path(name_or_path) or os.path.exists(path):
    raise FileNotFoundError(
        f"config.vlm.model={name_or_path!r} is not a directory (expected a hub id like "
        f"{DEFAULT_MODEL!r} or a directory holding a saved CLIP). "
        + _HOW_TO_PROVIDE.format(model=DEFAULT_MODEL))
  return None


def _local_files(directory: str, name_or_path: str) -> list[str]:
  """The files of a local model directory the embedder reads, sorted by name.

  Raises FileNotFoundError when config, weights or tokenizer are missing, naming what is
  there instead.
  """
  names = sorted(n for n in os.listdir(directory)
                 if os.path.isfile(os.path.join(directory, n)))
  weights = [n for n in clip_model.WEIGHT_FILES if n in names][:1]
  problem = None
  if "config.json" not in names:
    problem = "has no config.json"
  elif not weights:
    problem = (f"has no weights ({clip_model.SAFETENSORS_FILE}, PyTorch layout, or "
               f"{clip_model.MSGPACK_FILE}); it holds {names}")
  elif not ("tokenizer.json" in names or {"vocab.json", "merges.txt"} <= set(names)):
    problem = ("has no tokenizer (tokenizer.json, or vocab.json and merges.txt); save it "
               "with CLIPTokenizer.save_pretrained(dir)")
  if problem:
    raise FileNotFoundError(f"config.vlm.model={name_or_path!r}: directory {directory!r} "
                            f"{problem}. " + _HOW_TO_PROVIDE.format(model=DEFAULT_MODEL))
  read = {"config.json", _PREPROCESSOR_FILE, *_TOKENIZER_FILES, *weights}
  return [n for n in names if n in read]


def clip_identifier(name_or_path: str) -> str:
  """The identifier of the CLIP embedder `ClipEmbedder(name_or_path)` would build.

  Computed without loading the model (a local directory's files are hashed), so a run can
  look up cached prompt embeddings without the VLM in memory. See the module docstring for
  the format.
  """
  directory = _local_dir(name_or_path)
  if directory is None:
    return f"clip:{name_or_path}"
  names = _local_files(directory, name_or_path)
  return f"clip:{os.path.basename(directory)}@{sharded.files_digest(directory, names)[:12]}"


def _fetch(location: str, name: str, local: bool) -> str | None:
  """The path of file `name` of a local directory or hub repo `location`; None when the
  directory lacks it, or the repo lacks it or it is neither cached nor downloadable."""
  if local:
    path = os.path.join(location, name)
    return path if os.path.isfile(path) else None
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  try:
    return huggingface_hub.hf_hub_download(location, name)
  # huggingface_hub's errors (missing repo or file, offline, bad id) are OSErrors or
  # ValueErrors in its 0.x and 1.x versions alike.
  except (OSError, ValueError):
    return None


def _pixel_stats(path: str | None) -> tuple[np.ndarray, np.ndarray]:
  """`image_mean`, `image_std` `(3,)` of a preprocessor config file, else CLIP's."""
  stats = {}
  if path is not None:
    with open(path, encoding="utf-8") as f:
      stats = json.load(f)
  mean = np.asarray(stats.get("image_mean", CLIP_MEAN), np.float32)
  std = np.asarray(stats.get("image_std", CLIP_STD), np.float32)
  if mean.shape != (3,) or std.shape != (3,) or not np.all(std > 0):
    raise ValueError(f"{path}: image_mean/image_std must be 3 values each, std positive; "
                     f"got {mean.tolist()} / {std.tolist()}")
  return mean, std


class ClipEmbedder:
  """The `Embedder` of a CLIP model, data-parallel over a mesh of devices.

  Attributes:
    identifier: see `clip_identifier`.
    embed_dim: CLIP's projection size (512 for ViT-B/32).
    image_size: the side the frames are resized to.
    max_length: the text length in tokens (longer texts are truncated).
    mean, std: float32 `(3,)` pixel statistics used for normalisation.
  """

  def __init__(self, name_or_path: str = DEFAULT_MODEL, batch_size: int = 64,
               devices: list[jax.Device] | None = None):
    """Loads the model and tokenizer.

    Args:
      name_or_path: a hub id or a local directory (`config.vlm.model`).
      batch_size: clips (or texts) per device call, rounded up to a multiple of the device
        count; bounds memory for large inputs (`config.vlm.batch_size`).
      devices: the devices to split batches over; default this process's local devices
        (the embedder is called from one process, so it must not span other processes).
    """
    sharded.check_batch_size(batch_size)  # before the (slow) load
    self.identifier = clip_identifier(name_or_path)
    directory = _local_dir(name_or_path)
    location = directory or name_or_path
    config, params, self._tokenizer = _load(location, name_or_path, directory is not None)
    self._model = clip_model.CLIP(config)
    self.embed_dim = config.projection_dim
    self.image_size = config.vision_config.image_size
    self.max_length = config.text_config.max_position_embeddings
    self.mean, self.std = _pixel_stats(_fetch(location, _PREPROCESSOR_FILE,
                                              directory is not None))

    self._parallel = sharded.DataParallel(params, batch_size, devices)
    self.mesh, self.batch_size = self._parallel.mesh, self._parallel.batch_size
    self._video_fn = self._parallel.jit(self._video_features, 1)
    self._text_fn = self._parallel.jit(self._text_features, 2)

  def _video_features(self, params: Any, frames: jax.Array) -> jax.Array:
    """uint8 `(n, F, H, W, 3)` -> unit `(n, E)`: the normalised mean of unit frame rows."""
    n, f, h, w, _ = frames.shape
    s = self.image_size
    x = frames.reshape(n * f, h, w, 3).astype(jnp.float32) / 255.0
    if (h, w) != (s, s):
      x = jax.image.resize(x, (n * f, s, s, 3), "bilinear")
    x = (x - self.mean) / self.std
    feats = self._model.apply({"params": params}, x, method=clip_model.CLIP.image_features)
    return sharded.unit_rows(sharded.unit_rows(feats).reshape(n, f, -1).mean(axis=1))

  def _text_features(self, params: Any, input_ids: jax.Array,
                     attention_mask: jax.Array) -> jax.Array:
    """int `(n, L)` tokens and mask -> unit `(n, E)`."""
    return sharded.unit_rows(self._model.apply({"params": params}, input_ids, attention_mask,
                                               method=clip_model.CLIP.text_features))

  def embed_video(self, frames: np.ndarray) -> np.ndarray:
    """uint8 `(N, F, H, W, 3)` RGB clips (F = 8 normally) -> float32 `(N, E)`, unit rows."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3 or (
        0 in frames.shape[1:]):
      raise ValueError(f"ClipEmbedder.embed_video expects uint8 RGB clips (N, F, H, W, 3) "
                       f"with F, H, W >= 1 and values 0..255; got {frames.dtype} "
                       f"{frames.shape}")
    return self._parallel.run(self._video_fn, self.embed_dim, frames)

  def embed_text(self, texts: list[str]) -> np.ndarray:
    """`N` strings -> float32 `(N, E)`, unit rows; texts beyond `max_length` tokens are cut."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
      raise ValueError(f"ClipEmbedder.embed_text expects a list of strings, got {texts!r}")
    if not texts:
      return np.zeros((0, self.embed_dim), np.float32)
    tokens = self._tokenizer(list(texts), padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="np")
    return self._parallel.run(self._text_fn, self.embed_dim,
                              tokens["input_ids"].astype(np.int32),
                              tokens["attention_mask"].astype(np.int32))


def _load(location: str, name_or_path: str, local: bool
          ) -> tuple[clip_model.ClipConfig, Any, Any]:
  """`(config, params, tokenizer)` from a hub id or directory `location`.

  Failures to find the files are FileNotFoundErrors saying how to provide them.
  """
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("config.vlm.name='clip' needs transformers (for its tokenizer): pip "
                      "install 'genrl_jax[vlm]'") from e
  config_path = _fetch(location, "config.json", local)
  weights = None
  if config_path is not None:
    weights = next(filter(None, (_fetch(location, name, local)
                                 for name in clip_model.WEIGHT_FILES)), None)
  if weights is None:
    raise FileNotFoundError(
        f"config.vlm.model={name_or_path!r}: could not load the CLIP model; no local copy "
        f"of config.json and {clip_model.SAFETENSORS_FILE} (or {clip_model.MSGPACK_FILE}) "
        "was found and the hub could not be reached or offline mode is on "
        "(HF_HUB_OFFLINE). " + _HOW_TO_PROVIDE.format(model=name_or_path))
  config = clip_model.read_config(config_path)
  if config.vision_config.num_channels != 3:
    raise ValueError(f"config.vlm.model={name_or_path!r}: vision_config.num_channels="
                     f"{config.vision_config.num_channels}; the embedder feeds RGB frames")
  params = clip_model.load_params(weights, config)
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(location)
  except (OSError, TypeError, ValueError) as e:
    # A directory without tokenizer files makes AutoTokenizer fail with a TypeError.
    raise FileNotFoundError(f"config.vlm.model={name_or_path!r}: no CLIP tokenizer found "
                            f"({type(e).__name__}: {e}). "
                            + _HOW_TO_PROVIDE.format(model=name_or_path)) from e
  eos = config.text_config.eos_token_id
  # CLIP pools text at the end-of-text token: the model's eos id must be the tokenizer's
  # (eos id 2 marks old configs that pool at the largest token id instead).
  if eos != 2 and eos != tokenizer.eos_token_id:
    raise ValueError(f"config.vlm.model={name_or_path!r}: the model's text eos_token_id "
                     f"{eos} is not the tokenizer's end-of-text id {tokenizer.eos_token_id}; "
                     "the tokenizer does not belong to this model")
  return config, params, tokenizer
