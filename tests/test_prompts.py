"""Task prompts: video reading, the reference's 8-frame selection, embedding checks."""

import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from genrl_jax.prompts import prompt as pr
from genrl_jax.vlm import embedder as vlm_embedder

E = 32


def _colour(t):
  """A distinct solid colour per frame index (first 16 frames 16 levels apart)."""
  return np.array([(t * 16) % 256, 255 - (t * 16) % 256, (t // 16) * 40 % 256], np.uint8)


def _solid_frames(n, size=16):
  return np.stack([np.broadcast_to(_colour(t), (size, size, 3)) for t in range(n)])


def _indexed_frames(n):
  """Frame t holds t in two channels (t % 256, t // 256) and a ramp along W (for flips)."""
  f = np.zeros((n, 4, 6, 3), np.uint8)
  f[..., 0] = (np.arange(n) % 256)[:, None, None]
  f[..., 1] = (np.arange(n) // 256)[:, None, None]
  f[..., 2] = np.arange(6)[None, None, :] * 10
  return f


def _frame_ids(clip):
  return (clip[:, 0, 0, 0].astype(int) + 256 * clip[:, 0, 0, 1].astype(int)).tolist()


def _nearest_colour_ids(clip, n_candidates):
  table = np.stack([_colour(t) for t in range(n_candidates)]).astype(float)
  mean = clip.reshape(len(clip), -1, 3).mean(axis=1)
  return np.argmin(((mean[:, None] - table[None]) ** 2).sum(-1), axis=1).tolist()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  d = tmp_path_factory.mktemp("videos")
  paths = {"gif5": str(d / "five.gif"), "mp4_20": str(d / "twenty.mp4"),
           "mp4_300": str(d / "long.mp4")}
  iio.imwrite(paths["gif5"], _solid_frames(5), duration=50, loop=0)
  iio.imwrite(paths["mp4_20"], _solid_frames(20), fps=10)
  iio.imwrite(paths["mp4_300"], _solid_frames(300), fps=30)
  return paths


def test_check_text_prompt_strips_whitespace():
  assert pr.check_text_prompt("  walk fast\n") == "walk fast"


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None, 3, ["walk"]])
def test_check_text_prompt_rejects_empty_and_non_string(bad):
  with pytest.raises(ValueError, match="text prompt"):
    pr.check_text_prompt(bad)


def test_read_video_gif_gives_exact_colours(videos):
  frames = pr.read_video(videos["gif5"])
  assert frames.shape == (5, 16, 16, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames, _solid_frames(5))


def test_read_video_mp4_gives_approximate_colours(videos):
  frames = pr.read_video(videos["mp4_20"])
  assert frames.shape == (20, 16, 16, 3) and frames.dtype == np.uint8
  err = np.abs(frames.astype(int) - _solid_frames(20).astype(int))
  assert err.max() <= 12, err.max()  # lossy codec
  assert _nearest_colour_ids(frames, 20) == list(range(20))


def test_read_video_single_image_grey_and_alpha_become_rgb_clips(tmp_path):
  rgb = _solid_frames(1)[0]
  iio.imwrite(tmp_path / "rgb.png", rgb)
  iio.imwrite(tmp_path / "grey.png", rgb[..., 0])
  iio.imwrite(tmp_path / "rgba.png", np.concatenate([rgb, np.full((16, 16, 1), 7, np.uint8)], -1))
  np.testing.assert_array_equal(pr.read_video(tmp_path / "rgb.png"), rgb[None])
  np.testing.assert_array_equal(pr.read_video(tmp_path / "rgba.png"), rgb[None])
  grey = pr.read_video(tmp_path / "grey.png")
  assert grey.shape == (1, 16, 16, 3)
  np.testing.assert_array_equal(grey, np.repeat(rgb[None, ..., :1], 3, axis=-1))


def test_read_video_grey_frames_stack_becomes_rgb(tmp_path, monkeypatch):
  grey = np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7)
  monkeypatch.setattr(pr.iio, "imread", lambda *a, **k: grey)
  path = tmp_path / "grey.tif"
  path.write_bytes(b"x")
  frames = pr.read_video(path)
  assert frames.shape == (3, 5, 7, 3)
  np.testing.assert_array_equal(frames[..., 2], grey)


def test_read_video_missing_file_names_the_file(tmp_path):
  path = str(tmp_path / "nope.mp4")
  with pytest.raises(FileNotFoundError, match="nope.mp4.*expected an mp4/gif"):
    pr.read_video(path)


@pytest.mark.parametrize("name,content", [("bad.mp4", b"not a video" * 20),
                                          ("bad.gif", b"GIF89a garbage"),
                                          ("empty.mp4", b"")])
def test_read_video_corrupt_file_names_the_file(tmp_path, name, content):
  (tmp_path / name).write_bytes(content)
  with pytest.raises(ValueError, match=f"could not read video prompt .*{name}.*expected"):
    pr.read_video(str(tmp_path / name))


def test_read_video_without_frames_is_an_error(tmp_path, monkeypatch):
  monkeypatch.setattr(pr.iio, "imread", lambda *a, **k: np.zeros((0, 16, 16, 3), np.uint8))
  (tmp_path / "zero.mp4").write_bytes(b"x")
  with pytest.raises(ValueError, match="zero.mp4.*no frames"):
    pr.read_video(str(tmp_path / "zero.mp4"))


@pytest.mark.parametrize("t,expected", [
    (1, [0] * 8),                      # reference: repeated 8 times
    (4, [0, 0, 1, 1, 2, 2, 3, 3]),     # reference: each frame twice
    (5, [0, 0, 1, 1, 2, 3, 3, 4]),     # floor(i * 5 / 8)
    (8, list(range(8))),
    (20, list(range(8))),
    (255, list(range(8))),             # k = 1
    (256, list(range(0, 16, 2))),      # k = 2
    (300, list(range(0, 16, 2))),      # k = 2
    (1000, list(range(0, 56, 7))),     # k = 7
])
def test_select_prompt_frames_follows_the_reference_rule(t, expected):
  clip = pr.select_prompt_frames(_indexed_frames(t))
  assert clip.shape == (8, 4, 6, 3) and clip.dtype == np.uint8
  assert _frame_ids(clip) == expected


def test_select_prompt_frames_repeat_rule_equals_reference_cases():
  def reference(frames):  # the two special cases of get_video_feat, method.md §7.6
    if len(frames) == 1:
      return np.repeat(frames, 8, axis=0)
    if len(frames) == 4:
      return np.repeat(frames, 2, axis=0)
    raise AssertionError
  for t in (1, 4):
    f = _indexed_frames(t)
    np.testing.assert_array_equal(pr.select_prompt_frames(f), reference(f))


def test_select_prompt_frames_flip_mirrors_width():
  frames = _indexed_frames(300)
  plain = pr.select_prompt_frames(frames)
  flipped = pr.select_prompt_frames(frames, flip=True)
  np.testing.assert_array_equal(flipped, plain[:, :, ::-1])
  assert flipped[0, 0, 0, 2] == 50 and plain[0, 0, 0, 2] == 0


@pytest.mark.parametrize("frames", [
    np.zeros((0, 4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8),
    np.zeros((4, 4, 4, 3), np.float32), np.zeros((4, 4, 4, 4), np.uint8)])
def test_select_prompt_frames_rejects_bad_video_arrays(frames):
  with pytest.raises(ValueError, match="frame"):
    pr.select_prompt_frames(frames)


def test_parse_prompt_needs_exactly_one_prompt(tmp_path):
  with pytest.raises(ValueError, match="exactly one prompt"):
    pr.parse_prompt()
  with pytest.raises(ValueError, match="exactly one prompt.*embedding.*text"):
    pr.parse_prompt(text="run", embedding=np.ones(E))
  with pytest.raises(ValueError, match="text prompt is empty"):
    pr.parse_prompt(text="  ")
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    pr.parse_prompt(video=str(tmp_path / "missing.mp4"))
  with pytest.raises(FileNotFoundError, match=r"missing.npy.*\.npy embedding file"):
    pr.parse_prompt(embedding=str(tmp_path / "missing.npy"))


def test_parse_prompt_kinds_and_describe(videos, tmp_path):
  np.save(tmp_path / "e.npy", np.ones(E))
  text = pr.parse_prompt(text="  doing   a headstand ")
  assert (text.kind, text.value) == ("text", "doing   a headstand")
  assert text.describe() == 'text: "doing a headstand"'
  assert pr.parse_prompt(text="x" * 100).describe() == 'text: "' + "x" * 37 + '..."'
  assert pr.parse_prompt(video=videos["gif5"]).describe() == "video: five.gif"
  assert pr.parse_prompt(embedding=str(tmp_path / "e.npy")).describe() == "embedding: e.npy"
  arr = np.ones(E)
  prompt = pr.parse_prompt(embedding=arr)
  assert prompt.describe() == f"embedding: array({E},)"
  arr[0] = 5.0  # the prompt keeps its own copy
  assert prompt.value[0] == 1.0
  with pytest.raises(ValueError, match="kind"):
    pr.Prompt("audio", "x")


def test_embed_prompt_loads_and_normalises_npy_embedding(tmp_path):
  v = np.arange(1, E + 1, dtype=np.float64)
  np.save(tmp_path / "e.npy", v[None])  # (1, E) is accepted
  out = pr.embed_prompt(pr.parse_prompt(embedding=str(tmp_path / "e.npy")), None, E)
  assert out.shape == (E,) and out.dtype == np.float32
  np.testing.assert_allclose(out, v / np.linalg.norm(v), rtol=1e-6)
  out = pr.embed_prompt(pr.parse_prompt(embedding=3.0 * v), None, E)
  np.testing.assert_allclose(out, v / np.linalg.norm(v), rtol=1e-6)


def test_embed_prompt_rejects_wrong_size_embedding():
  with pytest.raises(ValueError, match=r"size 384 but the MFWM's connector expects 512 "
                                       r"\(connector.embed_dim\)"):
    pr.embed_prompt(pr.parse_prompt(embedding=np.ones(384)), None, 512)


@pytest.mark.parametrize("bad,match", [
    (np.full(E, np.nan), "NaN"), (np.zeros(E), "zero vector"),
    (np.ones((2, E)), r"shape \(2, 32\)")])
def test_embed_prompt_rejects_bad_embedding_values(bad, match):
  with pytest.raises(ValueError, match=match):
    pr.embed_prompt(pr.parse_prompt(embedding=bad), None, E)


def test_embed_prompt_rejects_non_npy_embedding_file(tmp_path):
  (tmp_path / "e.npy").write_bytes(b"not numpy")
  with pytest.raises(ValueError, match="could not load embedding prompt.*e.npy"):
    pr.embed_prompt(pr.Prompt("embedding", str(tmp_path / "e.npy")), None, E)


def test_embed_prompt_text_and_video_need_an_embedder(videos):
  for prompt in (pr.parse_prompt(text="run"), pr.parse_prompt(video=videos["gif5"])):
    with pytest.raises(ValueError, match="needs a VLM embedder.*precomputed embedding"):
      pr.embed_prompt(prompt, None, E)


def test_embed_prompt_text_uses_the_embedder():
  emb = vlm_embedder.RandomProjectionEmbedder(E)
  out = pr.embed_prompt(pr.parse_prompt(text=" walk fast "), emb, E)
  np.testing.assert_allclose(out, emb.embed_text(["walk fast"])[0], rtol=1e-6)
  with pytest.raises(ValueError, match="size 32 but the MFWM's connector expects 64"):
    pr.embed_prompt(pr.parse_prompt(text="walk"), emb, 64)


class _RecordingEmbedder:
  """Returns a fixed (non-unit) vector and records the clips it was given."""
  identifier = "recording"
  embed_dim = E

  def __init__(self, vector):
    self.vector, self.clips = np.asarray(vector, np.float32), []

  def embed_text(self, texts):
    return np.tile(self.vector, (len(texts), 1))

  def embed_video(self, frames):
    self.clips.append(frames)
    return np.tile(self.vector, (len(frames), 1))


def test_embed_prompt_video_passes_the_reference_clip_to_the_embedder(videos):
  emb = _RecordingEmbedder(np.full(E, 2.0))
  assert isinstance(emb, vlm_embedder.Embedder)
  out = pr.embed_prompt(pr.parse_prompt(video=videos["mp4_300"]), emb, E)
  np.testing.assert_allclose(out, np.full(E, 1 / np.sqrt(E)), rtol=1e-6)  # re-normalised
  (clip,) = emb.clips
  assert clip.shape == (1, 8, 16, 16, 3) and clip.dtype == np.uint8
  assert _nearest_colour_ids(clip[0], 20) == list(range(0, 16, 2))  # stride 2 for T = 300


def test_embed_prompt_video_gif_with_flip(tmp_path):
  frames = np.zeros((4, 8, 8, 3), np.uint8)
  frames[:, :, :4] = 255
  path = str(tmp_path / "half.gif")
  iio.imwrite(path, frames, duration=50, loop=0)
  emb = _RecordingEmbedder(np.ones(E))
  pr.embed_prompt(pr.parse_prompt(video=path), emb, E, flip=True)
  np.testing.assert_array_equal(emb.clips[0][0], np.repeat(frames[:, :, ::-1], 2, axis=0))


def test_embed_prompt_rejects_non_finite_embedder_output():
  with pytest.raises(ValueError, match="embedder 'recording' contains NaN"):
    pr.embed_prompt(pr.parse_prompt(text="run"), _RecordingEmbedder(np.full(E, np.nan)), E)


def test_random_projection_text_prompt_embeddings_are_unit_deterministic_and_distinct():
  texts = ["walk fast", "doing a headstand", "walk fast!", "a"]
  emb = vlm_embedder.RandomProjectionEmbedder(E, seed=3)
  assert isinstance(emb, vlm_embedder.Embedder) and emb.identifier == "random-projection"
  out = emb.embed_text(texts)
  assert out.shape == (4, E) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(
      out, vlm_embedder.RandomProjectionEmbedder(E, seed=3).embed_text(texts))
  np.testing.assert_array_equal(out[0], emb.embed_text(["walk fast"])[0])
  cos = out @ out.T
  assert np.all(cos[~np.eye(4, dtype=bool)] < 0.99)
  assert cos[0, 2] > cos[0, 1]  # shared trigrams: nearby, as documented
  assert not np.allclose(out, vlm_embedder.RandomProjectionEmbedder(E, seed=4).embed_text(texts))


def test_random_projection_text_prompt_embedding_is_stable_across_processes():
  code = ("from genrl_jax.vlm import embedder; "
          "print(embedder.RandomProjectionEmbedder(8).embed_text(['walk fast']).tobytes().hex())")
  outs = []
  for hash_seed in ("1", "2"):
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         check=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    outs.append(np.frombuffer(bytes.fromhex(run.stdout.strip()), np.float32))
  np.testing.assert_array_equal(outs[0], outs[1])
  np.testing.assert_array_equal(outs[0], vlm_embedder.RandomProjectionEmbedder(8).embed_text(
      ["walk fast"])[0])


def test_random_projection_video_prompt_embeddings_are_unit_deterministic_and_distinct():
  emb = vlm_embedder.RandomProjectionEmbedder(E)
  clips = np.stack([_solid_frames(8, size=13), _solid_frames(16, size=13)[8:]])
  out = emb.embed_video(clips)
  assert out.shape == (2, E) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(out, vlm_embedder.RandomProjectionEmbedder(E).embed_video(clips))
  assert float(out[0] @ out[1]) < 0.99
  # Area pooling keeps the mean colour: a 2x2 clip of one colour equals a 13x13 one.
  small = np.broadcast_to(clips[:1, :, :2, :2], (1, 8, 2, 2, 3))
  np.testing.assert_allclose(emb.embed_video(small)[0], out[0], atol=1e-5)
  # Frames are averaged: eight copies of a frame embed like the frame alone.
  one = clips[:1, :1]
  np.testing.assert_allclose(emb.embed_video(np.repeat(one, 8, axis=1)), emb.embed_video(one),
                             atol=1e-5)
  with pytest.raises(ValueError, match="uint8 clips"):
    emb.embed_video(clips[0])
