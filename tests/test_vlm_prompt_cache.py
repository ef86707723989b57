"""The prompt embedding cache: keys, layout, hits without an embedder, video content keys."""

import json
import os
import shutil

import imageio.v3 as iio
import ml_collections
import numpy as np
import pytest

from genrl_jax.prompts import prompt as prompts
from genrl_jax.vlm import embedder as embedder_lib
from genrl_jax.prompts import cache as prompt_cache

E = 32


class _CountingEmbedder:
  """A RandomProjectionEmbedder that counts its calls and can be told to refuse them."""

  def __init__(self, identifier="counting", seed=0):
    self._inner = embedder_lib.RandomProjectionEmbedder(E, seed=seed)
    self.identifier, self.embed_dim = identifier, E
    self.calls, self.refuse = 0, False

  def _call(self):
    if self.refuse:
      raise AssertionError("the embedder was called on a cache hit")
    self.calls += 1

  def embed_text(self, texts):
    self._call()
    return self._inner.embed_text(texts)

  def embed_video(self, frames):
    self._call()
    return self._inner.embed_video(frames)


def _gif(path, seed):
  frames = np.random.default_rng(seed).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
  iio.imwrite(path, frames, duration=50, loop=0)
  return str(path)


def test_cached_embedding_computes_once_and_writes_npy_with_sidecar(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    return np.arange(4, dtype=np.float64)

  key = {"text": "walk", "embed_dim": 4}
  out = prompt_cache.cached_embedding(str(tmp_path), "clip:org/m", "text", key, compute)
  again = prompt_cache.cached_embedding(str(tmp_path), "clip:org/m", "text", key, compute)
  assert len(calls) == 1 and out.dtype == np.float32
  np.testing.assert_array_equal(again, np.arange(4))
  npy, sidecar = prompt_cache.entry_paths(str(tmp_path), "clip:org/m", "text", key)
  assert os.path.dirname(npy) == str(tmp_path / "clip_org_m")
  assert os.path.basename(npy).startswith("text-") and npy.endswith(".npy")
  with open(sidecar) as f:
    meta = json.load(f)
  assert (meta["identifier"], meta["kind"], meta["key"], meta["shape"]) == (
      "clip:org/m", "text", key, [4])
  assert sorted(os.listdir(os.path.dirname(npy))) == sorted(
      [os.path.basename(npy), os.path.basename(sidecar)])  # no temporary files left


def test_cache_miss_without_compute_is_a_clear_error(tmp_path):
  with pytest.raises(prompt_cache.CacheMiss, match="no cached text prompt embedding for "
                     "VLM 'clip:x'.*config.vlm.name"):
    prompt_cache.cached_embedding(str(tmp_path), "clip:x", "text", {"text": "a"}, None)


def test_unreadable_or_mismatched_entries_count_as_misses(tmp_path):
  key = {"text": "a"}
  prompt_cache.store(str(tmp_path), "v", "text", key, np.ones(3))
  npy, sidecar = prompt_cache.entry_paths(str(tmp_path), "v", "text", key)
  assert prompt_cache.load(str(tmp_path), "v", "text", key) is not None
  with open(sidecar) as f:
    meta = json.load(f)
  with open(sidecar, "w") as f:
    json.dump(dict(meta, identifier="other"), f)
  assert prompt_cache.load(str(tmp_path), "v", "text", key) is None
  prompt_cache.store(str(tmp_path), "v", "text", key, np.ones(3))
  with open(npy, "wb") as f:
    f.write(b"truncated")
  assert prompt_cache.load(str(tmp_path), "v", "text", key) is None
  out = prompt_cache.cached_embedding(str(tmp_path), "v", "text", key, lambda: np.zeros(3))
  np.testing.assert_array_equal(out, np.zeros(3))  # recomputed and rewritten
  np.testing.assert_array_equal(prompt_cache.load(str(tmp_path), "v", "text", key),
                                np.zeros(3))


def test_text_prompt_hit_needs_no_embedder(tmp_path):
  cache = str(tmp_path / "cache")
  emb = _CountingEmbedder()
  prompt = prompts.parse_prompt(text=" walk fast ")
  first = prompts.embed_prompt(prompt, emb, E, cache_dir=cache)
  np.testing.assert_allclose(first, prompts.embed_prompt(prompt, emb, E), rtol=1e-6)
  assert emb.calls == 2  # the cached call and the uncached one
  emb.refuse = True
  np.testing.assert_array_equal(prompts.embed_prompt(prompt, emb, E, cache_dir=cache), first)
  np.testing.assert_array_equal(
      prompts.embed_prompt(prompts.parse_prompt(text="walk fast"), None, E, cache_dir=cache,
                           identifier="counting"), first)


def test_other_vlm_prompt_or_size_is_another_entry(tmp_path):
  cache = str(tmp_path)
  prompts.embed_prompt(prompts.parse_prompt(text="walk"), _CountingEmbedder(), E,
                       cache_dir=cache)
  for text, ident in (("walk", "other-vlm"), ("run", "counting")):
    with pytest.raises(prompt_cache.CacheMiss):
      prompts.embed_prompt(prompts.parse_prompt(text=text), None, E, cache_dir=cache,
                           identifier=ident)
  other = _CountingEmbedder("other-vlm", seed=1)
  out = prompts.embed_prompt(prompts.parse_prompt(text="walk"), other, E, cache_dir=cache)
  assert other.calls == 1
  assert np.abs(out - prompts.embed_prompt(prompts.parse_prompt(text="walk"), None, E,
                                           cache_dir=cache, identifier="counting")).max() > 0.1
  # The key includes the embedding size, so a 16-d entry is not confused with a 32-d one.
  key32 = prompts.prompt_cache_key(prompts.parse_prompt(text="walk"), 32)
  key16 = prompts.prompt_cache_key(prompts.parse_prompt(text="walk"), 16)
  assert (prompt_cache.entry_paths(cache, "counting", "text", key32) !=
          prompt_cache.entry_paths(cache, "counting", "text", key16))


def test_video_prompt_is_keyed_by_content_and_frame_selection(tmp_path):
  cache = str(tmp_path / "cache")
  a = _gif(tmp_path / "a.gif", seed=0)
  emb = _CountingEmbedder()
  first = prompts.embed_prompt(prompts.parse_prompt(video=a), emb, E, cache_dir=cache)
  assert emb.calls == 1
  renamed = str(tmp_path / "renamed.gif")
  shutil.copy(a, renamed)
  np.testing.assert_array_equal(
      prompts.embed_prompt(prompts.parse_prompt(video=renamed), None, E, cache_dir=cache,
                           identifier="counting"), first)
  with pytest.raises(prompt_cache.CacheMiss, match="no cached video prompt"):
    prompts.embed_prompt(prompts.parse_prompt(video=a), None, E, flip=True, cache_dir=cache,
                         identifier="counting")
  _gif(tmp_path / "a.gif", seed=1)  # same name, new content
  with pytest.raises(prompt_cache.CacheMiss):
    prompts.embed_prompt(prompts.parse_prompt(video=a), None, E, cache_dir=cache,
                         identifier="counting")
  changed = prompts.embed_prompt(prompts.parse_prompt(video=a), emb, E, cache_dir=cache)
  assert emb.calls == 2 and np.abs(changed - first).max() > 1e-3


def test_embed_prompt_cache_argument_errors(tmp_path):
  prompt = prompts.parse_prompt(text="walk")
  with pytest.raises(ValueError, match="needs a VLM embedder, or with cache_dir the VLM "
                     "identifier"):
    prompts.embed_prompt(prompt, None, E, cache_dir=str(tmp_path))
  with pytest.raises(ValueError, match="identifier 'x' differs from the embedder's "
                     "'counting'"):
    prompts.embed_prompt(prompt, _CountingEmbedder(), E, cache_dir=str(tmp_path),
                         identifier="x")
  # Precomputed embeddings bypass the cache and need neither embedder nor identifier.
  out = prompts.embed_prompt(prompts.parse_prompt(embedding=np.ones(E)), None, E,
                             cache_dir=str(tmp_path))
  np.testing.assert_allclose(out, np.full(E, 1 / np.sqrt(E)), rtol=1e-6)
  assert not os.listdir(tmp_path)


def test_default_cache_dir_and_random_projection_identifier(tmp_path):
  assert prompt_cache.default_cache_dir(str(tmp_path)) == str(tmp_path / "prompt_cache")
  config = ml_collections.ConfigDict(
      {"vlm": {"name": "random_projection", "seed": 0}, "connector": {"embed_dim": E}})
  assert (embedder_lib.embedder_identifier(config) ==
          embedder_lib.make_embedder(config).identifier == "random-projection")
  config.vlm.name = ""
  assert embedder_lib.embedder_identifier(config) is None
