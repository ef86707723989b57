"""A disk cache of prompt embeddings, so a run embeds its prompts once.

An entry is keyed by (VLM identifier, prompt kind, key): for a text prompt the key holds the
text, for a video prompt the sha256 of the file's bytes plus the frame-selection settings,
so a renamed video hits and an edited one misses. A hit reads a `.npy` file and needs no
VLM at all: a run can embed its prompts once (with the VLM) and later train and evaluate
without the VLM in memory.

Layout, under the cache directory (default `<workdir>/prompt_cache`):

  <cache_dir>/<identifier folder>/<kind>-<digest>.npy    float32 embedding
  <cache_dir>/<identifier folder>/<kind>-<digest>.json   sidecar: identifier, kind, key,
                                                          shape, dtype, created (UTC)

`<digest>` is the first 32 hex digits of the sha256 of the canonical JSON of
`[identifier, kind, key]`; the identifier folder is the identifier with characters other
than letters, digits, `.`, `_`, `-` replaced (for people browsing the cache; the digest
alone tells entries apart). Both files are written atomically (`genrl_jax.files`), the
sidecar first, so an `.npy` file always has its sidecar; a reader
checks that the sidecar names the same identifier, kind and key.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
from typing import Any, Callable

import numpy as np

from genrl_jax import files

DEFAULT_DIRNAME = "prompt_cache"


class CacheMiss(ValueError):
  """The cache has no entry for a prompt and there is no embedder to compute it."""


def default_cache_dir(workdir: str) -> str:
  """`<workdir>/prompt_cache`."""
  return os.path.join(workdir, DEFAULT_DIRNAME)


def file_sha256(path: str | os.PathLike) -> str:
  """The sha256 of a file's bytes, hex."""
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _canonical(value: Any) -> str:
  try:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
  except (TypeError, ValueError) as e:
    raise ValueError(f"prompt cache keys must be JSON values (str, number, bool, list, "
                     f"dict with str keys), got {value!r}: {e}") from e


def entry_paths(cache_dir: str, identifier: str, kind: str, key: Any) -> tuple[str, str]:
  """The `(.npy, .json)` paths of the entry for (identifier, kind, key)."""
  if not identifier:
    raise ValueError("a prompt cache entry needs a non-empty VLM identifier")
  if not re.fullmatch(r"[a-z]+", kind):
    raise ValueError(f"prompt cache kind must be lowercase letters, got {kind!r}")
  digest = hashlib.sha256(_canonical([identifier, kind, key]).encode()).hexdigest()[:32]
  folder = re.sub(r"[^A-Za-z0-9._-]", "_", identifier).lstrip(".") or "_"
  stem = os.path.join(os.fspath(cache_dir), folder, f"{kind}-{digest}")
  return stem + ".npy", stem + ".json"


def load(cache_dir: str, identifier: str, kind: str, key: Any) -> np.ndarray | None:
  """The cached float32 embedding, or None when there is no (valid) entry."""
  npy, sidecar = entry_paths(cache_dir, identifier, kind, key)
  if not (os.path.isfile(npy) and os.path.isfile(sidecar)):
    return None
  try:
    with open(sidecar, encoding="utf-8") as f:
      meta = json.load(f)
    array = np.load(npy, allow_pickle=False)
  except (OSError, ValueError):
    return None  # unreadable: treated as absent, and rewritten by `store`
  expected = json.loads(_canonical({"identifier": identifier, "kind": kind, "key": key}))
  if any(meta.get(k) != v for k, v in expected.items()):
    return None
  return np.asarray(array, np.float32)


def store(cache_dir: str, identifier: str, kind: str, key: Any,
          embedding: np.ndarray) -> str:
  """Writes the entry (sidecar, then embedding; each atomically); returns the .npy path."""
  npy, sidecar = entry_paths(cache_dir, identifier, kind, key)
  embedding = np.asarray(embedding, np.float32)
  meta = {"identifier": identifier, "kind": kind, "key": key,
          "shape": list(embedding.shape), "dtype": "float32",
          "created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
  text = json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
  files.write_text(sidecar, text)
  npy_bytes = io.BytesIO()
  np.save(npy_bytes, embedding, allow_pickle=False)
  files.write_bytes(npy, npy_bytes.getvalue())
  return npy


def cached_embedding(cache_dir: str, identifier: str, kind: str, key: Any,
                     compute: Callable[[], np.ndarray] | None) -> np.ndarray:
  """The cached embedding of (identifier, kind, key), computed and stored on a miss.

  Args:
    cache_dir: the cache's root directory (created on the first store).
    identifier: the VLM identifier (`Embedder.identifier`).
    kind: the prompt kind, e.g. 'text' or 'video'.
    key: a JSON value naming the prompt (text, or file hash and frame settings).
    compute: returns the embedding on a miss; None when no VLM is loaded.

  Returns:
    The float32 embedding as it was stored.

  Raises:
    CacheMiss: there is no entry and `compute` is None.
  """
  cached = load(cache_dir, identifier, kind, key)
  if cached is not None:
    return cached
  if compute is None:
    npy, _ = entry_paths(cache_dir, identifier, kind, key)
    raise CacheMiss(f"no cached {kind} prompt embedding for VLM {identifier!r} (key "
                    f"{_canonical(key)[:200]}; would be {npy}); load the VLM embedder "
                    "(config.vlm.name) to compute it")
  embedding = np.asarray(compute(), np.float32)
  store(cache_dir, identifier, kind, key, embedding)
  return embedding
