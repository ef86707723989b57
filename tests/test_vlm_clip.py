"""The CLIP embedder on a tiny random model: sharding, frame averaging, loading, errors.

Nothing is downloaded: the model is written by tests/tiny_clip.py and the hub is offline.
"""

import json
import os
import shutil

# Before transformers (and huggingface_hub, which reads it at import) is imported.
os.environ["HF_HUB_OFFLINE"] = "1"

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

transformers = pytest.importorskip("transformers")

from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrl_jax.prompts import prompt as prompts  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrl_jax.vlm import clip  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrl_jax.vlm import clip_model  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrl_jax.vlm import embedder as embedder_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from genrl_jax.prompts import cache as prompt_cache  # pylint: disable=g-import-not-at-top,wrong-import-position
import tiny_clip  # pylint: disable=g-import-not-at-top,wrong-import-position

E = 16  # the tiny model's projection_dim
S = 32  # its image_size
TEXTS = ["walk", "run fast", "he walks", "a much longer sentence " * 6]


@pytest.fixture(scope="module")
def emb(tiny_clip_dir):
  """On all 8 (simulated) devices; batch_size 4 rounds up to 8 clips per call."""
  assert len(jax.devices()) == 8
  return clip.ClipEmbedder(tiny_clip_dir, batch_size=4)


@pytest.fixture(scope="module")
def emb_1dev(tiny_clip_dir):
  """On one device, 3 clips per call."""
  return clip.ClipEmbedder(tiny_clip_dir, batch_size=3, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def clips():
  """13 clips of 8 random frames at the model's size: 2 calls of 8, the last one padded."""
  return np.random.default_rng(0).integers(0, 256, (13, 8, S, S, 3), dtype=np.uint8)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_embedder_attributes(emb, tiny_clip_dir):
  assert isinstance(emb, embedder_lib.Embedder)
  assert (emb.embed_dim, emb.image_size, emb.max_length, emb.batch_size) == (E, S, 16, 8)
  np.testing.assert_allclose(emb.mean, tiny_clip.IMAGE_MEAN, rtol=1e-6)
  np.testing.assert_allclose(emb.std, tiny_clip.IMAGE_STD, rtol=1e-6)
  assert emb.identifier == clip.clip_identifier(tiny_clip_dir)


def test_video_embeddings_are_unit_deterministic_and_independent_of_batching(emb, clips):
  out = emb.embed_video(clips)
  assert out.shape == (13, E) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(emb.embed_video(clips), out)
  np.testing.assert_allclose(emb.embed_video(clips[5:8]), out[5:8], atol=1e-6)
  assert np.abs(out[0] - out[1]).max() > 1e-3  # different clips, different embeddings
  assert emb.embed_video(clips[:0]).shape == (0, E)


def test_sharded_embeddings_equal_one_device_and_plain_reference(emb, emb_1dev, clips,
                                                                  tiny_clip_dir):
  out = emb.embed_video(clips)
  np.testing.assert_allclose(emb_1dev.embed_video(clips), out, atol=1e-6)
  # Plain reference: no jit, no mesh, no resize (frames are already S x S); the saved
  # preprocessor statistics; a clip = normalised mean of its unit frame embeddings. (The
  # model itself is compared with transformers' in tests/test_vlm_clip_model.py.)
  config = clip_model.read_config(os.path.join(tiny_clip_dir, "config.json"))
  params = clip_model.load_params(os.path.join(tiny_clip_dir, "model.safetensors"), config)
  pixels = (clips.reshape(-1, S, S, 3) / 255.0 - np.asarray(tiny_clip.IMAGE_MEAN)) / (
      np.asarray(tiny_clip.IMAGE_STD))
  feats = np.asarray(clip_model.CLIP(config).apply(
      {"params": params}, pixels.astype(np.float32), method=clip_model.CLIP.image_features))
  expected = _unit(_unit(feats).reshape(13, 8, E).mean(axis=1))
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_video_embedding_is_the_normalised_mean_of_its_frames(emb, clips):
  out = emb.embed_video(clips[:4])
  # One-frame clips give each frame's unit embedding.
  frames = np.stack([emb.embed_video(clips[:4, i:i + 1]) for i in range(8)], axis=1)
  np.testing.assert_allclose(np.linalg.norm(frames, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out, _unit(frames.mean(axis=1)), atol=1e-5)


def test_frames_of_any_size_are_resized(emb):
  colours = np.random.default_rng(1).integers(0, 256, (3, 1, 1, 1, 3), dtype=np.uint8)
  at_model_size = emb.embed_video(np.broadcast_to(colours, (3, 8, S, S, 3)))
  other_size = emb.embed_video(np.broadcast_to(colours, (3, 8, 20, 48, 3)))
  # A constant frame stays constant under any resize.
  np.testing.assert_allclose(other_size, at_model_size, atol=1e-5)


def test_text_embeddings(emb, emb_1dev):
  out = emb.embed_text(TEXTS)
  assert out.shape == (4, E) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(emb.embed_text(TEXTS), out)
  np.testing.assert_allclose(emb_1dev.embed_text(TEXTS), out, atol=1e-6)
  np.testing.assert_allclose(emb.embed_text(TEXTS[1:2]), out[1:2], atol=1e-6)
  assert np.abs(out[0] - out[1]).max() > 1e-3
  assert emb.embed_text([]).shape == (0, E)


def test_wrong_inputs_are_refused(emb, clips):
  with pytest.raises(ValueError, match="expects uint8 RGB clips.*float32"):
    emb.embed_video(clips.astype(np.float32))
  with pytest.raises(ValueError, match=r"expects uint8 RGB clips.*\(8, 32, 32, 3\)"):
    emb.embed_video(clips[0])
  with pytest.raises(ValueError, match="expects uint8 RGB clips"):
    emb.embed_video(clips[..., :1])
  with pytest.raises(ValueError, match="expects a list of strings"):
    emb.embed_text("walk")


def test_older_flax_msgpack_weights_load_as_safetensors_do(tiny_clip_dir, emb, clips,
                                                            tmp_path):
  old_dir = str(tmp_path / "tiny-clip-msgpack")
  shutil.copytree(tiny_clip_dir, old_dir)
  config = clip_model.read_config(os.path.join(old_dir, "config.json"))
  tiny_clip.write_msgpack(old_dir, clip_model.load_params(
      os.path.join(old_dir, "model.safetensors"), config))
  old = clip.ClipEmbedder(old_dir, batch_size=4)
  np.testing.assert_array_equal(old.embed_video(clips[:4]), emb.embed_video(clips[:4]))
  np.testing.assert_array_equal(old.embed_text(TEXTS), emb.embed_text(TEXTS))
  assert old.identifier.startswith("clip:tiny-clip-msgpack@")
  assert old.identifier.split("@")[1] != emb.identifier.split("@")[1]  # other weight file
  # With both files, model.safetensors is read (and hashed).
  shutil.copy(os.path.join(tiny_clip_dir, "model.safetensors"), old_dir)
  both = os.path.join(str(tmp_path / "both"), "tiny-clip")
  shutil.copytree(old_dir, both)
  assert clip.clip_identifier(both) == emb.identifier


def test_random_clip_embeds_as_transformers_flax_clip_did(tmp_path):
  """The tiny variant's random CLIP (seed 0, 16-d) gives the embeddings it gave when it was
  built and run by transformers' FlaxCLIPModel (main at 68b8552): measured figures of the
  tiny runs stay valid, with or without transformers 4."""
  from genrl_jax.vlm import random_clip  # pylint: disable=g-import-not-at-top
  emb = clip.ClipEmbedder(random_clip.ensure_random_clip(0, 16, root=str(tmp_path)))
  video = emb.embed_video(np.random.default_rng(0).integers(0, 256, (2, 8, 64, 64, 3),
                                                            dtype=np.uint8))
  np.testing.assert_allclose(video[:, :6], [
      [0.3306571841239929, -0.4560545086860657, -0.29891130328178406, 0.1636734902858734,
       0.14550384879112244, -0.23358118534088135],
      [0.3707374632358551, -0.34253332018852234, -0.22363151609897614, -0.00626502325758338,
       0.2258438915014267, -0.22947780787944794]], atol=2e-6)
  np.testing.assert_allclose(emb.embed_text(["walk", "run fast"])[:, :6], [
      [0.10049719363451004, 0.33289834856987, -0.10242994129657745, 0.2956107556819916,
       0.21562030911445618, 0.23805078864097595],
      [-0.2550960183143616, -0.1987466812133789, 0.20980185270309448, -0.39654824137687683,
       0.15177884697914124, -0.2718982994556427]], atol=2e-6)


def test_identifier_names_the_model_and_its_files(tiny_clip_dir, tmp_path):
  ident = clip.clip_identifier(tiny_clip_dir)
  assert ident.startswith("clip:tiny-clip@") and len(ident.split("@")[1]) == 12
  copy = str(tmp_path / "copy" / "tiny-clip")
  shutil.copytree(tiny_clip_dir, copy)
  assert clip.clip_identifier(copy) == ident  # the same files elsewhere
  other = str(tmp_path / "other" / "tiny-clip")
  tiny_clip.write_tiny_clip(other, seed=1)
  assert clip.clip_identifier(other) != ident  # same name, other weights
  assert clip.clip_identifier("openai/clip-vit-base-patch32") == (
      "clip:openai/clip-vit-base-patch32")  # a hub id: nothing is loaded


def test_missing_model_errors_say_how_to_provide_weights(tiny_clip_dir, tmp_path, monkeypatch):
  import huggingface_hub.constants  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
  with pytest.raises(FileNotFoundError, match=r"config.vlm.model='genrl-jax-tests/no-such"
                     r"-clip'.*model.safetensors.*huggingface-cli download "
                     r"genrl-jax-tests/no-such-clip.*save_pretrained"):
    clip.ClipEmbedder("genrl-jax-tests/no-such-clip")
  with pytest.raises(FileNotFoundError, match=r"config.vlm.model='/nonexistent/clip' is not "
                     r"a directory.*huggingface-cli download"):
    clip.ClipEmbedder("/nonexistent/clip")
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(os.path.join(tiny_clip_dir, "config.json"), bare)
  with pytest.raises(FileNotFoundError, match=r"has no weights \(model.safetensors, PyTorch "
                     r"layout, or flax_model.msgpack\); it holds \['config.json'\]"):
    clip.ClipEmbedder(str(bare))
  shutil.copy(os.path.join(tiny_clip_dir, "model.safetensors"), bare)
  with pytest.raises(FileNotFoundError, match="has no tokenizer"):
    clip.ClipEmbedder(str(bare))


def test_tokenizer_of_another_model_is_refused(tiny_clip_dir, tmp_path):
  directory = str(tmp_path / "mismatched")
  shutil.copytree(tiny_clip_dir, directory)
  with open(os.path.join(directory, "config.json")) as f:
    config = json.load(f)
  config["text_config"]["eos_token_id"] = 49407  # CLIP's, not the tiny tokenizer's
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match="eos_token_id 49407 is not the tokenizer's"):
    clip.ClipEmbedder(directory)


def test_without_preprocessor_config_clip_statistics_are_used(tmp_path):
  directory = str(tmp_path / "plain")
  tiny_clip.write_tiny_clip(directory, preprocessor=False)
  emb = clip.ClipEmbedder(directory)
  np.testing.assert_allclose(emb.mean, clip.CLIP_MEAN)
  np.testing.assert_allclose(emb.std, clip.CLIP_STD)


def _config(tiny_clip_dir, embed_dim=E):
  config = experiment_config.load_config("configs/walker.py:tiny")
  config.vlm.name = "clip"
  config.vlm.model = tiny_clip_dir
  config.vlm.batch_size = 4
  config.connector.embed_dim = embed_dim
  return config


def test_configs_name_their_vlm():
  # paper (and small): the reference's InternVideo2, its checkpoint given by the user.
  vlm = experiment_config.load_config("configs/walker.py").vlm
  assert (vlm.name, vlm.model, vlm.batch_size) == ("internvideo2", "", 64)
  # tiny: the locally built random-weight CLIP.
  vlm = experiment_config.load_config("configs/walker.py:tiny").vlm
  assert (vlm.name, vlm.model) == ("clip", "")
  assert "from_pt" not in vlm  # no weight-format switch: model.safetensors is read as is


def test_make_embedder_builds_clip_and_checks_the_embedding_size(tiny_clip_dir, emb, clips):
  config = _config(tiny_clip_dir)
  made = embedder_lib.make_embedder(config)
  assert isinstance(made, clip.ClipEmbedder) and made.batch_size == 8
  assert made.identifier == embedder_lib.embedder_identifier(config) == emb.identifier
  np.testing.assert_allclose(made.embed_video(clips[:2]), emb.embed_video(clips[:2]),
                             atol=1e-6)
  with pytest.raises(ValueError, match=r"config.vlm.model=.*gives 16-d embeddings but "
                     r"config.connector.embed_dim=32"):
    embedder_lib.make_embedder(_config(tiny_clip_dir, embed_dim=32))
  config.vlm.name = "clip4clip"
  for fn in (embedder_lib.make_embedder, embedder_lib.embedder_identifier):
    with pytest.raises(ValueError, match="config.vlm.name='clip4clip': expected one of"):
      fn(config)


def test_prompt_cache_with_clip_needs_no_embedder_on_a_hit(tiny_clip_dir, emb, tmp_path):
  cache = str(tmp_path / "prompt_cache")
  prompt = prompts.parse_prompt(text="walk fast")
  first = prompts.embed_prompt(prompt, emb, E, cache_dir=cache)
  np.testing.assert_allclose(first, emb.embed_text(["walk fast"])[0], atol=1e-6)
  ident = embedder_lib.embedder_identifier(_config(tiny_clip_dir))
  again = prompts.embed_prompt(prompt, None, E, cache_dir=cache, identifier=ident)
  np.testing.assert_array_equal(again, first)
  with pytest.raises(prompt_cache.CacheMiss, match="no cached text prompt embedding"):
    prompts.embed_prompt(prompts.parse_prompt(text="run"), None, E, cache_dir=cache,
                         identifier=ident)
