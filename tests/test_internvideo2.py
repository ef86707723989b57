"""InternVideo2 (stage 2, GenRL's path) against the PyTorch reference fixtures.

Fixtures: `tests/fixtures/internvideo2_torch_reference` (override with
`$GENRL_INTERNVIDEO2_FIXTURES`); format and tolerances in its README (section 9). Every size
here is read from the fixture files (config JSON, array shapes), never written down.
"""

from __future__ import annotations

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parity_fixtures
from genrl_jax import experiment_config
from genrl_jax.data import npz_import
from genrl_jax.reference import rules
from genrl_jax.vlm import embedder as embedder_lib
from genrl_jax.vlm import internvideo2 as iv
from genrl_jax.vlm import internvideo2_convert as iv_convert
from genrl_jax.vlm import internvideo2_model as iv_model
from genrl_jax.vlm import internvideo2_tokenizer as iv_tokenizer

pytest.importorskip("transformers")

FIXTURES = parity_fixtures.internvideo2_fixture_dir()
parity_fixtures.require_fixtures(FIXTURES, "InternVideo2 reference")

# README section 9: (rtol, atol).
TOL_INTERP = dict(rtol=0, atol=1e-6)
TOL_PREPROCESS = dict(rtol=0, atol=5e-5)
TOL_ACTIVATION = dict(rtol=1e-5, atol=2e-5)
TOL_CLIP_VIDEO = dict(rtol=0, atol=2e-6)
TOL_CLIP_VIDEO_E2E = dict(rtol=0, atol=5e-6)
TOL_TEXT = dict(rtol=1e-5, atol=1e-5)
TOL_TEXT_FEAT = dict(rtol=0, atol=2e-6)
TOL_COSINE, TOL_LOGITS = dict(rtol=0, atol=1e-6), dict(rtol=0, atol=1e-4)
# Probabilities are not given a tolerance of their own: they are bounded by what TOL_LOGITS
# implies (`parity_fixtures.softmax_atol`: each probability p moves by at most
# p * expm1(2 * 1e-4)), which holds on saturated and unsaturated logits alike.
# bfloat16 keeps 8 mantissa bits (relative rounding <= 2^-9 = 2e-3 per value), so the unit
# features (entries up to ~0.46 here) move by ~1e-3. Measured on these fixtures (CPU):
#   bf16 .pt (up-cast exactly), float32 compute: max|diff| 2.0e-3 video, 3.7e-3 text,
#     min cosine 0.99996;
#   f32 .pt, bfloat16 compute (config.vlm.internvideo2.dtype): 4.6e-3 video, 2.6e-3 text, 0.99995.
# Bounds: about 3x the larger measured difference, and 4x the measured 1 - cosine.
TOL_BF16_WEIGHTS = dict(rtol=0, atol=1.2e-2)
TOL_BF16_COMPUTE = dict(rtol=0, atol=1.5e-2)
MIN_COSINE_BF16_WEIGHTS, MIN_COSINE_BF16_COMPUTE = 0.9998, 0.9998


@functools.lru_cache(maxsize=None)
def npz(name: str) -> dict:
  with np.load(FIXTURES / name) as z:
    return {k: z[k] for k in z.files}


def fixture_config() -> dict:
  return json.loads(str(npz("internvideo2_tiny_state_dict.npz")["config"]))


def params_torch() -> dict[str, np.ndarray]:
  """`param/<key>`: the GenRL model's state dict after loading (8-frame tables)."""
  return {k[len("param/"):]: v for k, v in npz("internvideo2_tiny_state_dict.npz").items()
          if k.startswith("param/")}


def ckpt_only() -> dict[str, np.ndarray]:
  return {k[len("ckpt/"):]: v for k, v in npz("internvideo2_tiny_state_dict.npz").items()
          if k.startswith("ckpt/")}


def head_overrides() -> dict[str, int]:
  """The head counts (the only sizes the shapes cannot give), from the config JSON."""
  tiny = fixture_config()["tiny"]
  return dict(vision_heads=tiny["vision_ctor"]["num_heads"],
              pool_heads=tiny["vision_ctor"]["attn_pool_num_heads"],
              text_heads=tiny["bert_json"]["num_attention_heads"])


@functools.lru_cache(maxsize=None)
def tiny_config() -> iv_model.InternVideo2Config:
  """Every size from the fixture's config JSON."""
  cfg = fixture_config()
  tiny = cfg["tiny"]
  ctor, vis, bert = tiny["vision_ctor"], tiny["vision_cfg"], cfg["bert_config_effective"]
  width = ctor["embed_dim"]
  mlp_ratio = cfg["builder_ctor_kwargs"][0]["mlp_ratio"]
  return iv_model.InternVideo2Config(
      img_size=ctor["img_size"], patch_size=cfg["genrl_model_config"]["model"]
      ["vision_encoder"]["patch_size"], num_frames=cfg["n_frames"], vision_width=width,
      vision_depth=ctor["depth"], vision_heads=ctor["num_heads"],
      vision_mlp=int(width * mlp_ratio), pool_heads=ctor["attn_pool_num_heads"],
      clip_embed_dim=vis["clip_embed_dim"], text_width=bert["hidden_size"],
      text_heads=bert["num_attention_heads"], text_intermediate=bert["intermediate_size"],
      fusion_layer=tiny["text_cfg"]["fusion_layer"], vocab_size=bert["vocab_size"],
      max_positions=bert["max_position_embeddings"], type_vocab_size=bert["type_vocab_size"],
      max_txt_l=cfg["max_txt_l"], embed_dim=tiny["embed_dim"])


@functools.lru_cache(maxsize=None)
def tiny_params() -> dict:
  return iv_convert.torch_to_flax(params_torch(), tiny_config())


@functools.lru_cache(maxsize=None)
def vision_run() -> tuple[np.ndarray, dict]:
  """`clip_video` and the sown intermediates from the stored `out/preprocessed`."""
  frames = jnp.asarray(np.moveaxis(npz("vision.npz")["out/preprocessed"], 2, -1))
  out, state = iv_model.InternVideo2(tiny_config()).apply(
      {"params": tiny_params()}, frames, method=iv_model.InternVideo2.encode_video,
      mutable=["intermediates"])
  inter = state["intermediates"]
  flat = {k: v[0] for k, v in inter["vision"].items() if k != "clip_projector"}
  flat.update({f"clip_projector_{k}": v[0]
               for k, v in inter["vision"]["clip_projector"].items()})
  flat.update(clip_projector_out=inter["clip_projector_out"][0],
              vision_proj_out=inter["vision_proj_out"][0])
  return np.asarray(out), {k: np.asarray(v) for k, v in flat.items()}


@functools.lru_cache(maxsize=None)
def text_run() -> tuple[np.ndarray, dict]:
  """Text features of the stored ids (one batch) and the sown intermediates."""
  t = npz("text.npz")
  out, state = iv_model.InternVideo2(tiny_config()).apply(
      {"params": tiny_params()}, jnp.asarray(t["in/input_ids"], jnp.int32),
      jnp.asarray(t["in/attention_mask"], jnp.int32), method=iv_model.InternVideo2.encode_text,
      mutable=["intermediates"])
  inter = state["intermediates"]
  return np.asarray(out), {"hidden_states": np.asarray(inter["text"]["hidden_states"][0]),
                           "cls_feature": np.asarray(inter["cls_feature"][0]),
                           "text_proj_out": np.asarray(inter["text_proj_out"][0])}


@functools.lru_cache(maxsize=None)
def embedder(checkpoint: str = "internvideo2_tiny_f32.pt", dtype: str = "float32"
             ) -> iv.InternVideo2Embedder:
  """On all 8 simulated devices (batches padded to 8)."""
  return iv.InternVideo2Embedder(str(FIXTURES / checkpoint), str(FIXTURES),
                                 overrides=head_overrides(), dtype=dtype, batch_size=4)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --- sizes and keys --------------------------------------------------------------------


def test_internvideo2_config_read_off_the_checkpoint():
  assert iv_convert.infer_config(params_torch(), "1b", **head_overrides()) == tiny_config()
  c = tiny_config()
  vision = npz("vision.npz")
  assert vision["out/after_pos_embed"].shape[1:] == (c.num_tokens, c.vision_width)
  assert vision["out/patch_embed"].shape[1:] == (c.num_frames, c.grid ** 2, c.vision_width)
  assert vision["out/preprocessed"].shape[-1] == c.img_size
  assert npz("text.npz")["out/hidden_states"].shape[1] == 1 + c.fusion_layer
  assert len(fixture_config()["text_layers_run"]) == c.fusion_layer


def test_internvideo2_needed_keys_agree_with_the_perturbation_test():
  usage = fixture_config()["param_usage"]
  needed, unneeded = iv_convert.needed_keys(list(usage), tiny_config().fusion_layer)
  assert sorted(needed) == sorted(k for k, u in usage.items() if u in ("video", "text"))
  assert sorted(unneeded) == sorted(k for k, u in usage.items() if u not in ("video", "text"))
  # The checkpoint-only entries are unneeded too.
  assert iv_convert.needed_keys(list(ckpt_only()), tiny_config().fusion_layer)[0] == [
      "vision_encoder.pos_embed"]


def test_internvideo2_converter_round_trip_is_exact():
  torch = params_torch()
  needed, _ = iv_convert.needed_keys(list(torch), tiny_config().fusion_layer)
  back = iv_convert.flax_to_torch(tiny_params())
  assert sorted(back) == sorted(needed)
  for key in needed:
    assert back[key].shape == torch[key].shape, key
    np.testing.assert_array_equal(back[key], torch[key], err_msg=key)
  shapes = jax.tree_util.tree_map(lambda x: x.shape, iv_model.param_shapes(tiny_config()))
  assert jax.tree_util.tree_map(np.shape, tiny_params()) == shapes


@pytest.mark.parametrize("key", ["vision_encoder.pos_embed", "vision_encoder.clip_pos_embed"])
def test_internvideo2_pos_embed_interpolation(key):
  c = tiny_config()
  got = iv_convert.interpolate_pos_embed(ckpt_only()[key], c.num_frames, c.grid)
  np.testing.assert_allclose(got, params_torch()[key], **TOL_INTERP)
  with pytest.raises(ValueError, match=rf"1 \+ T\*{c.grid}\*{c.grid}"):
    iv_convert.interpolate_pos_embed(ckpt_only()[key][:, :-1], c.num_frames, c.grid)


def test_internvideo2_1b_key_table_maps_onto_the_model():
  """The real-size model (built with eval_shape: nothing allocated) has exactly the
  needed keys of the 1B table, with equal shapes through the converter table."""
  table = json.loads((FIXTURES / "internvideo2_1b_keys.json").read_text())
  config = iv_model.SIZES["1b"]
  summary = table["summary"]
  assert (config.vision_width, config.vision_depth, config.vision_heads, config.vision_mlp,
          config.img_size, config.num_frames, config.clip_embed_dim, config.pool_heads) == (
              summary["vision"]["embed_dim"], summary["vision"]["depth"],
              summary["vision"]["num_heads"], summary["vision"]["mlp_hidden"],
              summary["vision"]["img"], summary["vision"]["frames"],
              summary["vision"]["clip_embed_dim"], summary["vision"]["attn_pool_num_heads"])
  assert (config.text_width, config.fusion_layer, config.text_heads, config.text_intermediate,
          config.vocab_size, config.max_txt_l, config.embed_dim, config.num_tokens) == (
              summary["text"]["hidden"], summary["text"]["layers_run_for_text"],
              summary["text"]["heads"], summary["text"]["intermediate"],
              summary["text"]["vocab"], summary["text"]["max_txt_l"], summary["embed_dim"],
              summary["vision"]["tokens"])
  shapes = rules.flatten_params(iv_model.param_shapes(config))
  keys = {e["key"]: e for e in table["keys"]}
  needed, unneeded = iv_convert.needed_keys(
      list(keys) + [e["key"] for e in table["checkpoint_only"]], config.fusion_layer)
  assert sorted(needed) == sorted(k for k, e in keys.items() if e["needed"])
  assert len(needed) == summary["n_keys_needed"]
  assert len(unneeded) == summary["n_keys_not_needed"] + len(table["checkpoint_only"])
  mapped = {}
  for key in needed:
    matches = [(r, r.match_torch(key)) for r in iv_convert.TABLE.rules]
    rule, path = next((r, p) for r, p in matches if p is not None)
    fake = np.broadcast_to(np.int8(0), keys[key]["shape"])  # no value, just the shape
    # pylint: disable-next=protected-access
    assert rules.to_flax_array(fake, rule.layout).shape == shapes[path].shape, key
    mapped[path] = key
  assert sorted(mapped) == sorted(shapes), "params left unmapped"
  assert sum(np.prod(s.shape, dtype=np.int64) for s in shapes.values()) == summary[
      "numel_needed"]
  # The checkpoint's 4-frame table becomes the model's 8-frame one.
  pos = keys["vision_encoder.pos_embed"]
  grown = iv_convert.interpolate_pos_embed(np.zeros(pos["checkpoint_shape"], np.float32),
                                           config.num_frames, config.grid)
  assert list(grown.shape) == pos["shape"]


# --- loading ---------------------------------------------------------------------------


def test_internvideo2_load_f32_pt_equals_the_npz():
  state = iv_convert.load_checkpoint(str(FIXTURES / "internvideo2_tiny_f32.pt"))
  expected = {**params_torch(), **ckpt_only()}
  assert sorted(state) == sorted(expected)
  for key, value in expected.items():
    assert state[key].dtype == value.dtype, key
    np.testing.assert_array_equal(state[key], value, err_msg=key)
  config, params = iv_convert.load(str(FIXTURES / "internvideo2_tiny_f32.pt"), **head_overrides())
  assert config == tiny_config()
  # Bit-exact but for the position table, interpolated here from the 4-frame one (torch's
  # float32 interpolation rounds differently: README section 9).
  got, want = params["vision"].pop("pos_embed"), tiny_params()["vision"]["pos_embed"]
  np.testing.assert_allclose(got, want, **TOL_INTERP)
  params["vision"]["pos_embed"] = want
  assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, params,
                                                              tiny_params())))
  # The npz itself loads the same way (8-frame tables: no interpolation).
  _, from_npz = iv_convert.load(str(FIXTURES / "internvideo2_tiny_state_dict.npz"),
                                **head_overrides())
  assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, from_npz,
                                                              tiny_params())))


def test_internvideo2_load_bf16_pt_upcasts_exactly():
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  state = iv_convert.load_checkpoint(str(FIXTURES / "internvideo2_tiny_bf16.pt"))
  expected = {**params_torch(), **ckpt_only()}
  assert sorted(state) == sorted(expected)
  for key, value in expected.items():
    if value.dtype == np.float32:
      assert state[key].dtype == np.float32, key
      want = value.astype(ml_dtypes.bfloat16).astype(np.float32)
      np.testing.assert_array_equal(state[key], want, err_msg=key)
    else:
      np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_internvideo2_missing_and_misshaped_keys_are_named():
  torch, config = params_torch(), tiny_config()
  key = "vision_encoder.blocks.1.attn.k_norm.weight"
  with pytest.raises(KeyError, match=key.replace(".", r"\.")):
    iv_convert.torch_to_flax({k: v for k, v in torch.items() if k != key}, config)
  key = "text_encoder.bert.encoder.layer.0.intermediate.dense.weight"
  bad = dict(torch, **{key: torch[key][:-1]})
  want = tuple(reversed(torch[key].shape))
  got = tuple(reversed(bad[key].shape))
  with pytest.raises(ValueError) as info:
    iv_convert.torch_to_flax(bad, config)
  message = str(info.value)
  assert "\n" not in message and key in message and str(want) in message and str(got) in message
  # A needed namespace entry that no rule maps (e.g. a qkv bias) is an error, not skipped.
  extra = "vision_encoder.blocks.0.attn.qkv.bias"
  with pytest.raises(ValueError, match=extra.replace(".", r"\.")):
    iv_convert.torch_to_flax(dict(torch, **{extra: np.zeros(3 * config.vision_width, np.float32)}),
                             config)
  pos = "vision_encoder.pos_embed"
  with pytest.raises(ValueError, match=pos):
    iv_convert.torch_to_flax(dict(torch, **{pos: torch[pos][:, :-3]}), config)


# --- vision ----------------------------------------------------------------------------


def test_internvideo2_preprocess_channel_first_and_last():
  vision = npz("vision.npz")
  frames = vision["in/frames_uint8"]  # GenRL's (B, T, 3, H, W)
  c = tiny_config()
  want = np.moveaxis(vision["out/preprocessed"], 2, -1)
  np.testing.assert_allclose(iv_model.preprocess(frames, c.img_size), want, **TOL_PREPROCESS)
  channel_last = np.moveaxis(frames, 2, -1)
  np.testing.assert_allclose(iv_model.preprocess(channel_last, c.img_size), want, **TOL_PREPROCESS)
  big = vision["out/preprocessed_224_t0"]
  got = iv_model.preprocess(channel_last[:, :1], big.shape[-1])[:, 0]
  np.testing.assert_allclose(got, np.moveaxis(big, 1, -1), **TOL_PREPROCESS)


def test_internvideo2_preprocess_scales_then_normalises():
  """`out/scaled_b_t` (x / 255): at the frames' own size nothing is resized, so the output
  is `(scaled - mean) / std` (a true division, in float32)."""
  vision = npz("vision.npz")
  scaled = np.moveaxis(vision["out/scaled_b_t"], 2, -1)
  mean, std = (np.asarray(v, np.float32) for v in (iv_model.IMAGENET_MEAN, iv_model.IMAGENET_STD))
  got = iv_model.preprocess(vision["in/frames_uint8"], scaled.shape[-2])
  np.testing.assert_allclose(got, (scaled - mean) / std, rtol=0, atol=1e-6)


def _vision_names() -> list[str]:
  names = [k[len("out/"):] for k in npz("vision.npz") if k.startswith("out/")]
  return [n for n in names if n not in ("scaled_b_t", "preprocessed", "preprocessed_224_t0",
                                        "clip_video")]


@pytest.mark.parametrize("name", _vision_names())
def test_internvideo2_vision_intermediate(name):
  _, inter = vision_run()
  np.testing.assert_allclose(inter[name], npz("vision.npz")[f"out/{name}"], **TOL_ACTIVATION)


def test_internvideo2_every_block_is_compared():
  blocks = [n for n in _vision_names() if n.startswith("block")]
  assert len(blocks) == tiny_config().vision_depth == len(
      [k for k in vision_run()[1] if k.startswith("block")])


def test_internvideo2_clip_video_from_preprocessed():
  np.testing.assert_allclose(vision_run()[0], npz("vision.npz")["out/clip_video"],
                             **TOL_CLIP_VIDEO)


def test_internvideo2_embedder_clip_video_end_to_end():
  emb = embedder()
  assert isinstance(emb, embedder_lib.Embedder)
  assert emb.mesh.devices.size == 8 and emb.batch_size == 8
  frames = np.moveaxis(npz("vision.npz")["in/frames_uint8"], 2, -1)
  want = npz("vision.npz")["out/clip_video"]
  np.testing.assert_allclose(emb.embed_video(frames), want, **TOL_CLIP_VIDEO_E2E)
  # More clips than one call, padded: each row as alone.
  many = np.concatenate([frames] * 5)
  np.testing.assert_allclose(emb.embed_video(many), np.concatenate([want] * 5),
                             **TOL_CLIP_VIDEO_E2E)
  with pytest.raises(ValueError, match="uint8 RGB clips"):
    emb.embed_video(frames[:, :4])


# --- text ------------------------------------------------------------------------------


def test_internvideo2_tokenizer_ids_and_masks_exact():
  text = npz("text.npz")
  tok = iv_tokenizer.Tokenizer(str(FIXTURES), tiny_config().max_txt_l)
  ids, mask = tok(list(text["in/prompts"]))
  np.testing.assert_array_equal(ids, text["in/input_ids"])
  np.testing.assert_array_equal(mask, text["in/attention_mask"])


@pytest.mark.parametrize("name", ["hidden_states", "cls_feature", "text_proj_out"])
def test_internvideo2_text_intermediate(name):
  np.testing.assert_allclose(text_run()[1][name], npz("text.npz")[f"out/{name}"], **TOL_TEXT)


def test_internvideo2_text_feat():
  text = npz("text.npz")
  np.testing.assert_allclose(text_run()[0], text["out/text_feat"], **TOL_TEXT_FEAT)
  emb = embedder()
  prompts = list(text["in/prompts"])
  # GenRL embeds one prompt at a time; batched gives the same rows.
  one_by_one = np.concatenate([emb.embed_text([p]) for p in prompts])
  np.testing.assert_allclose(one_by_one, text["out/text_feat"], **TOL_TEXT_FEAT)
  np.testing.assert_allclose(emb.embed_text(prompts), npz("similarity.npz")[
      "out/text_feat_batched"], **TOL_TEXT_FEAT)
  assert emb.embed_text([]).shape == (0, emb.embed_dim)


# --- similarity ------------------------------------------------------------------------


def test_internvideo2_similarity():
  sim = npz("similarity.npz")
  video = embedder().embed_video(np.moveaxis(npz("vision.npz")["in/frames_uint8"], 2, -1))
  text = embedder().embed_text(list(npz("text.npz")["in/prompts"]))
  np.testing.assert_allclose(video @ text.T, sim["out/cosine"], **TOL_COSINE)
  logits = (100.0 * video) @ text.T
  np.testing.assert_allclose(logits, sim["out/logits_x100"], **TOL_LOGITS)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  bound = parity_fixtures.softmax_atol(sim["out/softmax"], TOL_LOGITS["atol"])
  assert np.all(np.abs(probs - sim["out/softmax"]) <= bound), np.abs(probs - sim["out/softmax"])
  order = np.argsort(-probs, axis=-1)
  # The ranking is only determined where the reference's neighbouring logits differ by more
  # than the two logits' tolerances; within that, ties may come out either way.
  ranked = np.take_along_axis(sim["out/logits_x100"], sim["out/topk_index"], -1)
  decided = np.all(-np.diff(ranked, axis=-1) > 2 * TOL_LOGITS["atol"], axis=-1)
  assert decided.any(), "no clip's prompt ranking is decided beyond the logit tolerance"
  np.testing.assert_array_equal(order[decided], sim["out/topk_index"][decided])
  np.testing.assert_array_equal(order[decided], sim["out/predict_label_index"][decided])
  top = np.take_along_axis(probs, order, -1)
  bound = parity_fixtures.softmax_atol(sim["out/topk_probs"], TOL_LOGITS["atol"])
  assert np.all(np.abs(top - sim["out/topk_probs"]) <= bound)


# --- bfloat16 --------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint,dtype,tol,min_cos", [
    ("internvideo2_tiny_bf16.pt", "float32", TOL_BF16_WEIGHTS, MIN_COSINE_BF16_WEIGHTS),
    ("internvideo2_tiny_f32.pt", "bfloat16", TOL_BF16_COMPUTE, MIN_COSINE_BF16_COMPUTE)])
def test_internvideo2_bfloat16(checkpoint, dtype, tol, min_cos):
  emb = embedder(checkpoint, dtype)
  frames = np.moveaxis(npz("vision.npz")["in/frames_uint8"], 2, -1)
  video, text = emb.embed_video(frames), emb.embed_text(list(npz("text.npz")["in/prompts"]))
  want_video, want_text = npz("vision.npz")["out/clip_video"], npz("text.npz")["out/text_feat"]
  for got, want in ((video, want_video), (text, want_text)):
    np.testing.assert_allclose(got, want, **tol)
    assert np.all(_cosines(got, want) >= min_cos), _cosines(got, want)
  # The top-1 prompt of each clip is unchanged.
  np.testing.assert_array_equal(np.argmax(video @ text.T, -1),
                                npz("similarity.npz")["out/topk_index"][:, 0])


# --- config and registration -----------------------------------------------------------


def _config(**vlm):
  """The tiny walker config with the tiny InternVideo2; `vlm` overrides `config.vlm.*` and
  `config.vlm.internvideo2.*` keys alike, by name."""
  config = experiment_config.load_config("configs/walker.py:tiny")
  overrides = ",".join(f"{k}={v}" for k, v in head_overrides().items())
  settings = {**dict(name="internvideo2", model=str(FIXTURES / "internvideo2_tiny_f32.pt"),
                     tokenizer=str(FIXTURES), batch_size=4, size_overrides=overrides), **vlm}
  for key, value in settings.items():
    node = config.vlm.internvideo2 if key in config.vlm.internvideo2 else config.vlm
    node[key] = value
  config.connector.embed_dim = tiny_config().embed_dim
  return config


def test_internvideo2_make_embedder_and_identifier(tmp_path):
  config = _config()
  made = embedder_lib.make_embedder(config)
  assert isinstance(made, iv.InternVideo2Embedder) and made.config == tiny_config()
  assert made.identifier == embedder_lib.embedder_identifier(config)
  assert made.identifier == "internvideo2:internvideo2_tiny_f32"
  assert embedder_lib.has_semantics(config)
  # The identifier names the file: a moved copy keeps it, bfloat16 compute gets another.
  shutil.copy(FIXTURES / "internvideo2_tiny_f32.pt", tmp_path / "internvideo2_tiny_f32.pt")
  assert embedder_lib.embedder_identifier(
      _config(model=str(tmp_path / "internvideo2_tiny_f32.pt"))) == made.identifier
  assert embedder_lib.embedder_identifier(_config(dtype="bfloat16")) == (
      made.identifier + ":bfloat16")
  # No checkpoint given: the official file's name, as the reference's datasets carry it.
  assert embedder_lib.embedder_identifier(_config(model="")) == npz_import.REFERENCE_VLM
  # The vocabulary defaults to the checkpoint's folder.
  shutil.copy(FIXTURES / "vocab.txt", tmp_path / "vocab.txt")
  moved = embedder_lib.make_embedder(
      _config(model=str(tmp_path / "internvideo2_tiny_f32.pt"), tokenizer=""))
  np.testing.assert_array_equal(moved.embed_text(["robot walk fast clean"]),
                                made.embed_text(["robot walk fast clean"]))
  config.connector.embed_dim += 1
  with pytest.raises(ValueError, match="config.connector.embed_dim"):
    embedder_lib.make_embedder(config)


def test_internvideo2_config_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config\.vlm\.model='openai/clip-vit"):
    embedder_lib.make_embedder(_config(model="openai/clip-vit-base-patch32"))
  with pytest.raises(FileNotFoundError, match=r"config\.vlm\.internvideo2\.tokenizer=.*vocab\.txt"):
    embedder_lib.make_embedder(_config(tokenizer=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match=r"config\.vlm\.model='' is not a file"):
    embedder_lib.make_embedder(_config(model=""))
  with pytest.raises(ValueError, match=r"config\.vlm\.internvideo2\.dtype"):
    embedder_lib.embedder_identifier(_config(dtype="float16"))
  with pytest.raises(ValueError, match=r"config\.vlm\.internvideo2\.size_overrides"):
    embedder_lib.make_embedder(_config(size_overrides="heads=4"))
  with pytest.raises(ValueError, match=r"config\.vlm\.internvideo2\.size="):
    embedder_lib.make_embedder(_config(size="7b"))


def test_internvideo2_embedder_from_params():
  """The benchmark's path: given params, no checkpoint file, no tokenizer."""
  emb = iv.InternVideo2Embedder.from_params(tiny_config(), tiny_params(), "internvideo2:test",
                                            batch_size=3, devices=jax.devices()[:1])
  frames = np.moveaxis(npz("vision.npz")["in/frames_uint8"], 2, -1)
  np.testing.assert_allclose(emb.embed_video(frames), npz("vision.npz")["out/clip_video"],
                             **TOL_CLIP_VIDEO_E2E)
  with pytest.raises(ValueError, match="without a tokenizer"):
    emb.embed_text(["walk"])


@pytest.mark.slow
def test_internvideo2_prompts_an_imported_reference_model(tmp_path, capsys):
  """The released-model path at fixture scale, as a user runs it: `genrl_jax
  import-reference` on the reference snapshot prints the next command lines, naming the
  InternVideo2 checkpoint where the user put it. Run before the checkpoint is there, the
  printed command stops with one line naming it and writes nothing; run after (the tiny
  model under the official file name, its vocabulary beside it), the task's text prompt
  embeds to the reference's text feature and the behaviour trains. Only budget flags (and
  the tiny model's head counts) are added to the printed command."""
  import shlex  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from genrl_jax import cli  # pylint: disable=g-import-not-at-top
  from genrl_jax.prompts import cache as prompt_cache  # pylint: disable=g-import-not-at-top
  from genrl_jax.prompts import prompt as prompt_lib  # pylint: disable=g-import-not-at-top
  embed_dim = parity_fixtures.sizes().embed_dim
  if embed_dim != tiny_config().embed_dim:
    pytest.skip(f"the GenRL fixtures' embedding size {embed_dim} is not the tiny "
                f"InternVideo2's {tiny_config().embed_dim}")
  checkpoint = tmp_path / "models" / f"{iv.OFFICIAL_CHECKPOINT}.pt"
  checkpoint.parent.mkdir()
  checkpoint.write_bytes(b"")  # --vlm-model must name a file; the real one comes later
  workdir = str(tmp_path / "run")
  assert cli.main(["import-reference", str(parity_fixtures.fixture_dir() / "snapshot_small.pt"),
                   f"--out={workdir}", f"--vlm-model={checkpoint}"]) == 0
  printed = capsys.readouterr().out
  commands = [shlex.split(line) for line in printed.splitlines()
              if line.startswith("  python ")]
  # The fixture's world model has 6 actions, Stickman 10: no evaluation is offered.
  assert len(commands) == 1 and commands[0][-1] == "--mode=behavior", printed
  assert f"--config.vlm.model={checkpoint}" in commands[0]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["task"] == "stickman_walk"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  budget = ["--config.behavior.num_steps=2", "--config.behavior.log_every=1",
            "--config.behavior.save_every=2", "--config.behavior.batch_size=8",
            "--config.behavior.batch_length=4", "--config.vlm.batch_size=8",
            "--config.vlm.internvideo2.size_overrides=" + ",".join(
                f"{k}={v}" for k, v in head_overrides().items())]
  env = dict(os.environ, GENRL_JAX_MALLOC="system")

  def run_printed() -> subprocess.CompletedProcess:
    argv = [sys.executable if w == "python" else w for w in commands[0]]
    return subprocess.run(argv + budget, cwd=root, env=env, capture_output=True, text=True,
                          timeout=600, check=False)

  def listing():
    return sorted(os.path.relpath(os.path.join(d, f), workdir)
                  for d, _, files in os.walk(workdir) for f in files)

  checkpoint.unlink()
  before = listing()
  result = run_printed()
  assert result.returncode != 0
  assert f"error: config.vlm.model='{checkpoint}' is not a file" in result.stderr, \
      result.stderr[-3000:]
  assert listing() == before

  shutil.copy(FIXTURES / "internvideo2_tiny_f32.pt", checkpoint)
  shutil.copy(FIXTURES / "vocab.txt", checkpoint.parent / "vocab.txt")
  result = run_printed()
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.isdir(os.path.join(workdir, "behavior", "stickman_walk", "2"))
  # The prompt, the task's reference text, embedded as the reference does.
  task_text = "robot walk fast clean"  # GenRL's stickman_walk prompt, prompt 0 of the fixture
  prompts = [str(p) for p in npz("text.npz")["in/prompts"]]
  identifier = npz_import.REFERENCE_VLM
  prompt = prompt_lib.parse_prompt(text=task_text)
  cached = prompt_cache.load(prompt_cache.default_cache_dir(workdir), identifier, "text",
                             prompt_lib.prompt_cache_key(prompt, embed_dim))
  want = npz("text.npz")["out/text_feat"][prompts.index(task_text)].reshape(-1)
  np.testing.assert_allclose(cached, want, rtol=0, atol=2e-6)


def test_internvideo2_data_stage_embeds_episodes_as_the_reference(tmp_path):
  """The dataset embedding stage with InternVideo2: an episode whose frames are the
  fixture's clips (clip 0, then clip 1) gets zeros for its first 7 steps and, at the
  steps where a fixture clip ends, the reference's `clip_video`."""
  import synthetic  # pylint: disable=g-import-not-at-top
  from genrl_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.data import dataset_writer  # pylint: disable=g-import-not-at-top
  from genrl_jax.stages import data as data_stage  # pylint: disable=g-import-not-at-top
  from genrl_jax.stages import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  vision = npz("vision.npz")
  clips = vision["in/frames_uint8"].transpose(0, 1, 3, 4, 2)  # (B, T, 3, H, W) -> HWC
  frames = clips.reshape(-1, *clips.shape[2:])
  n_frames = clips.shape[1]
  episode = synthetic.random_episode(np.random.default_rng(0), len(frames))
  episode["observation"] = frames
  root = str(tmp_path / "d")
  with dataset_writer.EpisodeWriter(root, dataset_lib.DatasetSpec("walker", 6), 1) as writer:
    writer.add(episode)
  config = _config()
  config.data.path = root
  config.connector.n_frames = n_frames
  data_stage.run(config, str(tmp_path / "w"), progress=False)
  dataset = workdir_lib.open_run_dataset(config, str(tmp_path / "w"), with_embeddings=True)
  assert dataset.embedding == embedder_lib.embedder_identifier(config)
  rows = dataset.read_episode(0)["vlm_embedding"]
  np.testing.assert_array_equal(rows[:n_frames - 1], 0)
  ends = [(k + 1) * n_frames - 1 for k in range(len(clips))]
  np.testing.assert_allclose(rows[ends], vision["out/clip_video"], rtol=0, atol=5e-6)
