"""The package's Flax CLIP (`genrl_jax/vlm/clip_model.py`): config, checkpoint converter,
text pooling, and parity with transformers' Flax and PyTorch CLIP where those are installed.

Nothing is downloaded: configs are small and weights random.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from genrl_jax.vlm import clip_model
import tiny_clip

V = 600  # vocabulary size of the small configs here


def _config(**text) -> clip_model.ClipConfig:
  return tiny_clip.small_clip_config(V) if not text else dataclasses.replace(
      tiny_clip.small_clip_config(V),
      text_config=dataclasses.replace(tiny_clip.small_clip_config(V).text_config, **text))


@pytest.fixture(scope="module")
def params():
  return clip_model.init_params(_config(), seed=0)


def _inputs(config, n=3, seed=0):
  """Pixels `(n, S, S, 3)`, ids `(n, L)` with the eos token at 5 (and 9 in row 1), mask."""
  rng = np.random.default_rng(seed)
  s, length = config.vision_config.image_size, config.text_config.max_position_embeddings
  pixels = rng.standard_normal((n, s, s, 3)).astype(np.float32)
  ids = rng.integers(0, V - 2, (n, length)).astype(np.int32)
  ids[:, 5] = config.text_config.eos_token_id
  ids[1, 9] = config.text_config.eos_token_id
  mask = np.broadcast_to(np.arange(length) <= 5, (n, length)).astype(np.int32)
  return pixels, ids, mask


def _features(config, params, pixels, ids, mask):
  model = clip_model.CLIP(config)
  return (np.asarray(model.apply({"params": params}, ids, mask,
                                 method=clip_model.CLIP.text_features)),
          np.asarray(model.apply({"params": params}, pixels,
                                 method=clip_model.CLIP.image_features)))


def _same_tree(a, b):
  fa, fb = flatten_dict(a), flatten_dict(b)
  assert set(fa) == set(fb)
  for k in fa:
    assert np.asarray(fa[k]).shape == np.asarray(fb[k]).shape, k
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def test_config_reads_hub_fields_with_clip_defaults():
  config = clip_model.ClipConfig.from_dict({
      "model_type": "clip", "projection_dim": 256, "architectures": ["CLIPModel"],
      "text_config": {"hidden_size": 64, "torch_dtype": "float32"},
      "text_config_dict": {"hidden_size": 96},  # old configs: overrides text_config
      "vision_config": {"patch_size": 14, "hidden_act": "gelu"}})
  assert config.projection_dim == 256 and config.text_config.hidden_size == 96
  assert (config.vision_config.patch_size, config.vision_config.hidden_act) == (14, "gelu")
  assert config.vision_config.image_size == 224 and config.text_config.eos_token_id == 49407
  assert clip_model.ClipConfig.from_dict(config.to_dict()) == config
  with pytest.raises(ValueError, match="is a 'siglip' model"):
    clip_model.ClipConfig.from_dict({"model_type": "siglip"})
  with pytest.raises(ValueError, match="vision_config.hidden_act='mish' is not one of"):
    clip_model.ClipConfig.from_dict({"vision_config": {"hidden_act": "mish"}})


def test_torch_layout_of_the_parameters(params):
  state = clip_model.to_torch_state(params)
  assert len(state) == len(flatten_dict(params))
  assert state["vision_model.embeddings.patch_embedding.weight"].shape == (32, 3, 8, 8)
  assert state["vision_model.encoder.layers.1.mlp.fc1.weight"].shape == (64, 32)
  assert state["text_model.embeddings.token_embedding.weight"].shape == (V, 32)
  assert state["text_model.final_layer_norm.weight"].shape == (32,)
  assert state["visual_projection.weight"].shape == (16, 32)
  assert state["logit_scale"].shape == ()
  assert "vision_model.pre_layrnorm.bias" in state
  np.testing.assert_array_equal(
      state["text_model.encoder.layers.0.self_attn.q_proj.weight"],
      params["text_model"]["encoder"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"].T)


def test_converter_and_files_round_trip(params, tmp_path):
  config = _config()
  _same_tree(clip_model.from_torch_state(clip_model.to_torch_state(params), config), params)
  directory = str(tmp_path / "saved")
  clip_model.save(directory, config, params)
  assert clip_model.read_config(os.path.join(directory, "config.json")) == config
  _same_tree(clip_model.load_params(os.path.join(directory, "model.safetensors"), config),
             params)
  tiny_clip.write_msgpack(directory, params)
  _same_tree(clip_model.load_params(os.path.join(directory, "flax_model.msgpack"), config),
             params)


def test_missing_misshaped_or_unexpected_weights_are_named(params, tmp_path):
  config = _config()

  def error(state):
    with pytest.raises(ValueError) as info:
      clip_model.from_torch_state(state, config, source="ckpt")
    assert "\n" not in str(info.value)
    return str(info.value)

  state = clip_model.to_torch_state(params)
  assert error({k: v for k, v in state.items() if k != "text_model.final_layer_norm.weight"}
               ) == "ckpt: missing weight 'text_model.final_layer_norm.weight'"
  key = "vision_model.encoder.layers.0.mlp.fc1.weight"
  assert error({**state, key: state[key].T}) == (
      f"ckpt: weight '{key}' has shape (32, 64) but config.json asks for (64, 32)")
  assert error({**state, "text_model.pooler.weight": state[key]}).startswith(
      "ckpt: unexpected weight 'text_model.pooler.weight' (1 unexpected in all)")
  # PyTorch's position_ids buffers (in some hub checkpoints) are skipped.
  with_buffer = {**state, "text_model.embeddings.position_ids": np.arange(16)[None]}
  _same_tree(clip_model.from_torch_state(with_buffer, config), params)
  # The same checks on the msgpack format, named by Flax path.
  flat = flatten_dict(params)
  del flat[("vision_model", "post_layernorm", "bias")]
  path = tiny_clip.write_msgpack(str(tmp_path), {"/".join(k): v for k, v in flat.items()})
  with pytest.raises(ValueError, match="missing weight 'vision_model/post_layernorm/bias'"):
    clip_model.load_params(path, config)


@pytest.mark.parametrize("eos,pooled_at", [(5, 5), (2, 6)])
def test_text_is_pooled_at_the_first_eos_token_or_for_eos_2_at_the_largest_id(
    params, eos, pooled_at):
  # Tokens: a "2" at 1, a "5" at 5, the largest id at 6, no other 2, 5 or largest id. With
  # eos 5, pooling at the argmax would take 6; with the legacy eos 2, the first eos is 1.
  config = _config(eos_token_id=eos)
  ids = np.random.default_rng(1).integers(6, V - 2, (3, 16)).astype(np.int32)
  ids[:, 1], ids[:, 5], ids[:, 6] = 2, 5, V - 1
  mask = np.ones_like(ids)

  def text(x):
    return np.asarray(clip_model.CLIP(config).apply({"params": params}, x, mask,
                                                    method=clip_model.CLIP.text_features))

  base = text(ids)
  later = ids.copy()
  later[:, pooled_at + 1:] = 7  # after the pooled token: the causal state does not see it
  np.testing.assert_array_equal(text(later), base)
  before = ids.copy()
  before[:, pooled_at - 1] = 8
  assert np.abs(text(before) - base).max() > 1e-4


def _flax_clip():
  try:
    from transformers import FlaxCLIPModel  # pylint: disable=g-import-not-at-top
    return FlaxCLIPModel
  except ImportError:  # transformers >= 5 (no Flax models) or no flax support
    return None


def _transformers_config(config):
  from transformers import CLIPConfig  # pylint: disable=g-import-not-at-top
  return CLIPConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"})


needs_flax_clip = pytest.mark.skipif(_flax_clip() is None,
                                     reason="transformers' FlaxCLIPModel (transformers < 5)")


@needs_flax_clip
@pytest.mark.parametrize("text,seed", [({}, 0), ({}, 1), ({"hidden_act": "gelu"}, 2),
                                       ({"eos_token_id": 2}, 3)])
def test_init_and_forward_equal_transformers_flax_clip(text, seed):
  config = _config(**text)
  reference = _flax_clip()(_transformers_config(config), seed=seed)
  ours = clip_model.init_params(config, seed=seed)
  _same_tree(ours, reference.params)
  pixels, ids, mask = _inputs(config, seed=seed)
  text_features, image_features = _features(config, ours, pixels, ids, mask)
  np.testing.assert_allclose(
      text_features, np.asarray(reference.get_text_features(ids, mask)), atol=1e-6)
  np.testing.assert_allclose(
      image_features,
      np.asarray(reference.get_image_features(pixels.transpose(0, 3, 1, 2))), atol=1e-6)


@needs_flax_clip
def test_files_are_read_and_written_as_transformers_does(params, tmp_path):
  config = _config()
  # Our model.safetensors, converted by transformers' own PyTorch -> Flax code.
  directory = str(tmp_path / "ours")
  clip_model.save(directory, config, params)
  _same_tree(_flax_clip().from_pretrained(directory, from_pt=True).params, params)
  # transformers' flax_model.msgpack, read by us.
  theirs = str(tmp_path / "theirs")
  _flax_clip()(_transformers_config(config), seed=5).save_pretrained(theirs)
  _same_tree(clip_model.load_params(os.path.join(theirs, "flax_model.msgpack"), config),
             clip_model.init_params(config, seed=5))


def test_forward_equals_transformers_pytorch_clip(params, tmp_path):
  torch = pytest.importorskip("torch")
  from transformers import CLIPModel  # pylint: disable=g-import-not-at-top
  config = _config()
  directory = str(tmp_path / "ours")
  clip_model.save(directory, config, params)
  with open(os.path.join(directory, "config.json")) as f:
    assert json.load(f)["model_type"] == "clip"
  reference = CLIPModel.from_pretrained(directory).eval()
  pixels, ids, mask = _inputs(config)
  text_features, image_features = _features(config, params, pixels, ids, mask)
  with torch.no_grad():
    np.testing.assert_allclose(reference.get_text_features(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask)).numpy(), text_features, atol=1e-5)
    np.testing.assert_allclose(reference.get_image_features(
        pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2))).numpy(), image_features,
                               atol=1e-5)
