"""Task prompts for behaviour learning: text, a short video, or a precomputed embedding.

A prompt becomes one unit-norm embedding `(E,)` in the VLM space the connector was trained
on (method.md §4.6, 7.3). Text and video prompts need a VLM embedder (`Embedder`); video files are
read with imageio and cut to the reference's 8-frame clip (method.md §7.6). A precomputed `.npy`
embedding needs no embedder, which is how prompts are given when the VLM is run offline
(method.md §6.4). With a prompt cache (`embed_prompt(..., cache_dir=...)`) text and video
embeddings are computed once per VLM and read back later without the embedder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import imageio.v3 as iio
import numpy as np

from genrl_jax.prompts import cache as prompt_cache
from genrl_jax.vlm.embedder import Embedder

PROMPT_KINDS = ("text", "video", "embedding")
CLIP_FRAMES = 8
# Reference stride: long videos keep every k-th frame, k = max(T // 128, 1) (method.md §7.6).
STRIDE_DIVISOR = 128
_EXPECTED = "expected an mp4/gif video or an image readable by imageio"
_PYAV_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")


def check_text_prompt(prompt: object) -> str:
  """Returns the stripped prompt; rejects non-strings and blank text."""
  if not isinstance(prompt, str):
    raise ValueError(f"text prompt must be a string, got {type(prompt).__name__}")
  if not prompt.strip():
    raise ValueError(f"text prompt is empty or whitespace only: {prompt!r}")
  return prompt.strip()


def _plugin_for(path: str) -> str | None:
  # pyav decodes in-process; without it imageio's default for mp4 is the legacy FFMPEG
  # plugin (imageio-ffmpeg's bundled binary), which is what the declared dependencies give.
  if path.lower().endswith(_PYAV_SUFFIXES) and importlib.util.find_spec("av") is not None:
    return "pyav"
  return None


def read_video(path: str | os.PathLike) -> np.ndarray:
  """Reads a video (or image) file into uint8 RGB frames `(T, H, W, 3)`, T >= 1.

  Grey frames are made RGB and an alpha channel is dropped; a single image gives T = 1.
  A 3-D array whose last axis has size 3 or 4 is taken as one colour image, anything else
  3-D as grey frames `(T, H, W)`.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video prompt {path!r} does not exist ({_EXPECTED})")
  try:
    frames = np.asarray(iio.imread(path, index=None, plugin=_plugin_for(path)))
  except Exception as e:  # imageio's plugins raise many types (OSError, ValueError, ...)
    detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise ValueError(f"could not read video prompt {path!r} ({_EXPECTED}): "
                     f"{type(e).__name__}: {detail}") from e
  if frames.ndim == 2:
    frames = frames[None]
  elif frames.ndim == 3 and frames.shape[-1] in (3, 4):
    frames = frames[None]
  if frames.ndim == 3:
    frames = frames[..., None]
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
    raise ValueError(f"video prompt {path!r} decoded to shape {frames.shape}; "
                     f"{_EXPECTED} with grey, RGB or RGBA frames")
  if frames.dtype != np.uint8:
    raise ValueError(f"video prompt {path!r} has {frames.dtype} pixels; expected 8-bit frames")
  if frames.shape[0] == 0 or 0 in frames.shape[1:3]:
    raise ValueError(f"video prompt {path!r} has no frames (shape {frames.shape}); "
                     f"expected at least one frame")
  frames = frames[..., :3] if frames.shape[-1] != 1 else np.repeat(frames, 3, axis=-1)
  return np.ascontiguousarray(frames)


def select_prompt_frames(frames: np.ndarray, n_frames: int = CLIP_FRAMES,
                         flip: bool = False) -> np.ndarray:
  """The reference's clip selection (method.md §7.6): `(T, H, W, 3)` -> `(n_frames, H, W, 3)`.

  T >= n_frames: keep every k-th frame, k = max(T // 128, 1), and take the first n_frames.
  T < n_frames: repeat frames, index floor(i * T / n_frames); this is the reference's
  T == 1 (8 copies) and T == 4 (each frame twice) cases, generalised. `flip` mirrors
  the frames horizontally.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"prompt frames must be uint8 RGB (T, H, W, 3), got {frames.dtype} "
                     f"{frames.shape}")
  t = frames.shape[0]
  if t < 1 or n_frames < 1:
    raise ValueError(f"need at least one frame to select {n_frames}, got T={t}")
  if t < n_frames:
    clip = frames[np.arange(n_frames) * t // n_frames]
  else:
    clip = frames[::max(t // STRIDE_DIVISOR, 1)][:n_frames]
  if flip:
    clip = clip[:, :, ::-1]
  return np.ascontiguousarray(clip)


@dataclasses.dataclass(frozen=True, eq=False)
class Prompt:
  """A task prompt. Compared by identity, since `value` may be an array.

  Attributes:
    kind: one of PROMPT_KINDS.
    value: the text, the video path, or an embedding (`.npy` path or float array).
  """

  kind: str
  value: str | np.ndarray

  def __post_init__(self):
    if self.kind not in PROMPT_KINDS:
      raise ValueError(f"prompt kind {self.kind!r}: expected one of {PROMPT_KINDS}")
    if isinstance(self.value, np.ndarray):
      if self.kind != "embedding":
        raise ValueError(f"a {self.kind} prompt takes a string, not an array")
      # A private read-only copy, so later edits of the caller's array cannot change it.
      value = np.array(self.value, dtype=np.float32)
      value.setflags(write=False)
      object.__setattr__(self, "value", value)
    elif not isinstance(self.value, str):
      raise ValueError(f"prompt value must be a string or an array, got "
                       f"{type(self.value).__name__}")

  def describe(self, max_chars: int = 40) -> str:
    """A short label for results tables, e.g. `text: "walk fast"`."""
    if isinstance(self.value, np.ndarray):
      return f"embedding: array{tuple(self.value.shape)}"
    if self.kind == "text":
      text = " ".join(self.value.split())
      text = text if len(text) <= max_chars else text[:max_chars - 3] + "..."
      return f'text: "{text}"'
    return f"{self.kind}: {os.path.basename(self.value)}"


def parse_prompt(text: str | None = None, video: str | os.PathLike | None = None,
                 embedding: str | os.PathLike | np.ndarray | None = None) -> Prompt:
  """Builds a Prompt from exactly one of a text, a video path or an embedding."""
  given = {k: v for k, v in (("text", text), ("video", video), ("embedding", embedding))
           if v is not None}
  if len(given) != 1:
    raise ValueError("give exactly one prompt (text, video or embedding), got "
                     f"{sorted(given) or 'none'}")
  (kind, value), = given.items()
  if kind == "text":
    return Prompt("text", check_text_prompt(value))
  if isinstance(value, np.ndarray):
    return Prompt(kind, value)
  path = os.fspath(value)
  if not os.path.isfile(path):
    what = "a video file" if kind == "video" else "a .npy embedding file"
    raise FileNotFoundError(f"{kind} prompt {path!r} does not exist (expected {what})")
  return Prompt(kind, path)


def _finalise(e: np.ndarray, source: str, embed_dim: int) -> np.ndarray:
  """Checks a prompt embedding `(E,)` or `(1, E)` and returns it unit-norm, `(E,)`."""
  e = np.asarray(e, dtype=np.float32)
  if e.ndim == 2 and e.shape[0] == 1:
    e = e[0]
  if e.ndim != 1:
    raise ValueError(f"{source} has shape {e.shape}; expected (E,) or (1, E)")
  if e.shape[0] != embed_dim:
    raise ValueError(f"prompt embedding has size {e.shape[0]} but the MFWM's connector "
                     f"expects {embed_dim} (connector.embed_dim); from {source}")
  if not np.all(np.isfinite(e)):
    raise ValueError(f"{source} contains NaN or infinite values")
  norm = float(np.linalg.norm(e))
  if norm == 0.0:
    raise ValueError(f"{source} is the zero vector; cannot normalise it")
  return e / norm


def prompt_cache_key(prompt: Prompt, embed_dim: int, flip: bool = False) -> dict:
  """The prompt cache key of a text or video prompt (see `genrl_jax.prompts.cache`).

  Text: the stripped text. Video: the sha256 of the file's bytes and the frame selection
  (clip length, stride divisor, flip), so the same video under another name hits the cache.
  Both include `embed_dim`.
  """
  if prompt.kind == "text":
    return {"text": check_text_prompt(prompt.value), "embed_dim": embed_dim}
  if prompt.kind == "video":
    if not os.path.isfile(prompt.value):
      raise FileNotFoundError(f"video prompt {prompt.value!r} does not exist ({_EXPECTED})")
    return {"sha256": prompt_cache.file_sha256(prompt.value), "n_frames": CLIP_FRAMES,
            "stride_divisor": STRIDE_DIVISOR, "flip": bool(flip), "embed_dim": embed_dim}
  raise ValueError(f"{prompt.kind} prompts are not cached (only text and video)")


def _embed_with(prompt: Prompt, embedder: Embedder, embed_dim: int,
                flip: bool) -> np.ndarray:
  """Runs the embedder on a text or video prompt; unit-norm `(embed_dim,)`."""
  if embedder.embed_dim != embed_dim:
    raise ValueError(f"prompt embedding has size {embedder.embed_dim} but the MFWM's "
                     f"connector expects {embed_dim} (connector.embed_dim); embedder "
                     f"{embedder.identifier!r}")
  if prompt.kind == "text":
    out = embedder.embed_text([check_text_prompt(prompt.value)])
  else:
    clip = select_prompt_frames(read_video(prompt.value), flip=flip)
    out = embedder.embed_video(clip[None])
  out = np.asarray(out)
  if out.ndim != 2 or out.shape[0] != 1:
    raise ValueError(f"embedder {embedder.identifier!r} returned shape {out.shape} for "
                     "one prompt; expected (1, E)")
  return _finalise(out, f"embedder {embedder.identifier!r}", embed_dim)


def embed_prompt(prompt: Prompt, embedder: Embedder | None, embed_dim: int,
                 flip: bool = False, cache_dir: str | os.PathLike | None = None,
                 identifier: str | None = None) -> np.ndarray:
  """The prompt's unit-norm embedding, float32 `(embed_dim,)`.

  Args:
    prompt: the prompt.
    embedder: the VLM; may be None for embedding prompts, and for text and video prompts
      found in the cache.
    embed_dim: the connector's embedding size.
    flip: mirror a video prompt's frames (the reference's optional flip).
    cache_dir: a prompt cache directory (`genrl_jax.prompts.cache`, usually
      `<workdir>/prompt_cache`): text and video embeddings are read from it, or computed
      with `embedder` and stored there. None: no cache, always compute.
    identifier: the VLM identifier of the cache entries; default `embedder.identifier`.
      Needed with `cache_dir` when `embedder` is None (see `embedder_identifier(config)`).

  Raises:
    prompt_cache.CacheMiss: `cache_dir` has no entry and `embedder` is None.
  """
  if prompt.kind == "embedding":
    value = prompt.value
    if isinstance(value, np.ndarray):
      return _finalise(value, "the given embedding array", embed_dim)
    try:
      loaded = np.load(value, allow_pickle=False)
    except Exception as e:  # np.load raises OSError/ValueError/... for foreign files
      raise ValueError(f"could not load embedding prompt {value!r} (expected a .npy "
                       f"array of shape (E,) or (1, E)): {e}") from e
    if not isinstance(loaded, np.ndarray):
      raise ValueError(f"embedding prompt {value!r} holds several arrays; expected a .npy "
                       "array of shape (E,) or (1, E)")
    return _finalise(loaded, f"embedding file {value!r}", embed_dim)
  if cache_dir is None:
    if embedder is None:
      raise ValueError(f"a {prompt.kind} prompt needs a VLM embedder; without one give a "
                       "precomputed embedding (.npy) instead")
    return _embed_with(prompt, embedder, embed_dim, flip)
  if embedder is not None:
    if identifier is not None and identifier != embedder.identifier:
      raise ValueError(f"identifier {identifier!r} differs from the embedder's "
                       f"{embedder.identifier!r}")
    identifier = embedder.identifier
  elif identifier is None:
    raise ValueError(f"a {prompt.kind} prompt needs a VLM embedder, or with cache_dir the VLM "
                     "identifier of the cached entries; otherwise give a precomputed "
                     "embedding (.npy)")
  compute = None if embedder is None else (
      lambda: _embed_with(prompt, embedder, embed_dim, flip))
  out = prompt_cache.cached_embedding(os.fspath(cache_dir), identifier, prompt.kind,
                                      prompt_cache_key(prompt, embed_dim, flip), compute)
  return _finalise(out, f"cached {prompt.kind} prompt embedding of {identifier!r}",
                   embed_dim)
