"""InternVideo2 stage 2 (as GenRL uses it) in Flax: video and text encoders, checkpoint
loading, tokenizer, and the `InternVideo2Embedder`.

The computation follows GenRL's path exactly (`ViCLIPGlobalInstance` / `get_vid_features` /
`get_txt_feat`; spec: the InternVideo2 fixture README, sections 2-5):

video  uint8 `(B, 8, H, W, 3)` (or GenRL's channel-first `(B, 8, 3, H, W)`) -> /255 ->
       bilinear resize to S x S (half-pixel centres; antialias for down-sampling) ->
       ImageNet normalisation -> Conv3d patch embedding (1 x 14 x 14) -> [CLS] + tokens
       (time-major) + position table -> `depth` pre-norm blocks (RMSNorm eps 1e-6, QK-norm
       over the full width, layer scale, exact GELU; no final norm) -> attention pooling
       (three LayerNorms eps 1e-5 on mean token / tokens, separate q/k/v biases) ->
       `vision_proj` -> L2 norm  = GenRL's `clip_video`.
text   `[CLS]` + first 39 WordPiece tokens (no [SEP]), [PAD] to 40 -> BERT embeddings
       (LayerNorm eps 1e-12) -> the first `fusion_layer` post-LN layers (mask -10000) ->
       [CLS] -> `text_proj` -> L2 norm.

Only what this path needs exists here: no stage-1 decoders, no MLM head, no cross-attention
layers (BERT layers >= `fusion_layer`), no image-only position tables.

Checkpoints: `load_checkpoint(path)` reads the official `.pt` with the project's restricted
unpickler (`genrl_jax.reference.snapshot`: no torch, nothing from the file executed), the
state dict under 'model', 'module' or at the top level, float32 or bfloat16 (up-cast
exactly), or an `.npz` of `param/<key>` arrays. `torch_to_flax` keeps the needed entries
(unneeded ones are logged and skipped), interpolates the 4-frame position table to 8 frames
(`interpolate_pos_embed`) and converts with ONE table (`TABLE`, `genrl_jax.reference.convert`
rules), which `flax_to_torch` reads backwards. Missing or misshaped needed entries are
one-line errors naming the torch key and both shapes.

Precision: params are float32; `dtype` is the matmul/activation dtype ('float32' or
'bfloat16'). Norms, softmax and the residual stream stay float32. In float32 the matmuls
use `Precision.HIGHEST`, so GPUs/TPUs do not drop to TF32/bf16 passes (GenRL runs float32
matmuls without TF32).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Mapping

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.reference import convert
from genrl_jax.reference import snapshot as snapshot_lib
from genrl_jax.vlm import sharded

Params = dict[str, Any]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VOCAB_FILE = "vocab.txt"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class InternVideo2Config:
  """Sizes of the stage-2 model (defaults: the real 1B model as GenRL configures it,
  `InternVideo2-stage2_1b-224p-f4`, 8 frames at 224 px, BERT-large, fusion layer 19)."""
  img_size: int = 224           # S: frames are resized to S x S
  patch_size: int = 14
  num_frames: int = 8           # T the position table is interpolated to
  vision_width: int = 1408      # C
  vision_depth: int = 40
  vision_heads: int = 16
  vision_mlp: int = 6144        # int(C * 48 / 11)
  pool_heads: int = 16          # attention pooling heads
  clip_embed_dim: int = 768     # attention pooling output
  text_width: int = 1024
  text_heads: int = 16
  text_intermediate: int = 4096
  fusion_layer: int = 19        # BERT layers run in text mode
  vocab_size: int = 30522
  max_positions: int = 512
  type_vocab_size: int = 2
  max_txt_l: int = 40           # tokens per text ([CLS] + 39 word pieces, padded)
  embed_dim: int = 512          # joint video-text space

  @property
  def grid(self) -> int:
    return self.img_size // self.patch_size

  @property
  def num_tokens(self) -> int:
    """1 + T * G * G vision tokens ([CLS] first)."""
    return 1 + self.num_frames * self.grid ** 2


SIZES = {"1b": InternVideo2Config()}


def _precision(dtype: Any) -> jax.lax.Precision:
  return (jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32
          else jax.lax.Precision.DEFAULT)


def _dense(features: int, dtype: Any, name: str, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                  precision=_precision(dtype), name=name)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, bias: jax.Array | None,
            dtype: Any) -> jax.Array:
  """Multi-head attention of already-scaled `q (B, Nq, W)` on `k, v (B, N, W)` (heads
  contiguous along W), softmax in float32 (+ `bias` broadcast to `(B, H, Nq, N)`) ->
  `(B, Nq, W)`."""
  b, nq, w = q.shape
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, w // heads).astype(dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k), precision=_precision(dtype),
                      preferred_element_type=jnp.float32)
  if bias is not None:
    logits = logits + bias
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, split(v), precision=_precision(dtype),
                   preferred_element_type=jnp.float32)
  return out.reshape(b, nq, w)


class RMSNorm(nn.Module):
  """`w * x / sqrt(mean(x^2) + eps)` over the last axis, in float32."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x = x.astype(jnp.float32)
    return w * (x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps))


class VisionAttention(nn.Module):
  """Self-attention with one bias-free qkv projection and QK-norm: `(B, N, C) -> (B, N, C)`."""
  width: int
  heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    qkv = _dense(3 * self.width, self.dtype, "qkv", use_bias=False)(x).astype(jnp.float32)
    q, k, v = jnp.split(qkv, 3, axis=-1)  # rows [0:C], [C:2C], [2C:3C] of the torch weight
    # QK-norm over the full width (all heads together), then q scaled before the product.
    q = RMSNorm(name="q_norm")(q) * (self.width // self.heads) ** -0.5
    k = RMSNorm(name="k_norm")(k)
    out = _attend(q, k, v, self.heads, None, self.dtype)
    return _dense(self.width, self.dtype, "proj")(out).astype(jnp.float32)


class VisionBlock(nn.Module):
  """Pre-norm block with layer scale: `x + g1 * Attn(RMS(x))`, `x + g2 * MLP(RMS(x))`;
  `(B, N, C) -> (B, N, C)`, float32."""
  width: int
  heads: int
  mlp: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ones = nn.initializers.ones
    g1 = self.param("ls1", ones, (self.width,), jnp.float32)
    g2 = self.param("ls2", ones, (self.width,), jnp.float32)
    x = x + g1 * VisionAttention(self.width, self.heads, self.dtype, name="attn")(
        RMSNorm(name="norm1")(x))
    h = _dense(self.mlp, self.dtype, "fc1")(RMSNorm(name="norm2")(x))
    h = nn.gelu(h.astype(jnp.float32), approximate=False)  # exact GELU, as GenRL runs it
    return x + g2 * _dense(self.width, self.dtype, "fc2")(h).astype(jnp.float32)


class AttentionPooling(nn.Module):
  """`clip_projector`: one query (LN of the token mean) attends to LN'd tokens;
  `(B, N, C) -> (B, clip_embed_dim)`."""
  width: int
  heads: int
  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ln = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=name)
    q_in = ln("norm1_q")(jnp.mean(x, axis=1, keepdims=True))
    k_in, v_in = ln("norm1_k")(x), ln("norm1_v")(x)
    for name, value in (("q_in", q_in), ("k_in", k_in), ("v_in", v_in)):
      self.sow("intermediates", name, value)
    zeros = nn.initializers.zeros
    # Bias-free projections plus separate bias params, as the checkpoint stores them.
    proj = lambda name, y: (_dense(self.width, self.dtype, name, use_bias=False)(y)
                            .astype(jnp.float32)
                            + self.param(f"{name}_bias", zeros, (self.width,), jnp.float32))
    q = proj("q", q_in) * (self.width // self.heads) ** -0.5
    out = _attend(q, proj("k", k_in), proj("v", v_in), self.heads, None, self.dtype)
    out = _dense(self.out_dim, self.dtype, "proj")(out).astype(jnp.float32)
    return out[:, 0]


class VisionEncoder(nn.Module):
  """Normalised frames `(B, T, S, S, 3)` -> pooled `(B, clip_embed_dim)`, float32.

  Sows (collection 'intermediates'): `patch_embed (B, T, G*G, C)`, `after_pos_embed`,
  `block{i}_out (B, 1 + T*G*G, C)`, `clip_projector/{q,k,v}_in`.
  """
  config: InternVideo2Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, frames: jax.Array) -> jax.Array:
    c = self.config
    b, t = frames.shape[:2]
    p = c.patch_size
    x = nn.Conv(c.vision_width, (1, p, p), strides=(1, p, p), padding="VALID",
                dtype=self.dtype, param_dtype=jnp.float32, precision=_precision(self.dtype),
                name="patch_proj")(frames).astype(jnp.float32)
    x = x.reshape(b, t, -1, c.vision_width)  # (B, T, G*G, C): rows, then columns
    self.sow("intermediates", "patch_embed", x)
    cls = self.param("cls_token", nn.initializers.zeros, (1, 1, c.vision_width), jnp.float32)
    pos = self.param("pos_embed", nn.initializers.zeros, (1, c.num_tokens, c.vision_width),
                     jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c.vision_width)),
                         x.reshape(b, -1, c.vision_width)], axis=1) + pos
    self.sow("intermediates", "after_pos_embed", x)
    for i in range(c.vision_depth):
      x = VisionBlock(c.vision_width, c.vision_heads, c.vision_mlp, self.dtype,
                      name=f"blocks_{i}")(x)
      self.sow("intermediates", f"block{i}_out", x)
    return AttentionPooling(c.vision_width, c.pool_heads, c.clip_embed_dim, self.dtype,
                            name="clip_projector")(x)


class BertLayer(nn.Module):
  """Post-LN BERT layer (self-attention only): `(B, L, W)` + additive mask bias
  `(B, 1, 1, L)` -> `(B, L, W)`, float32."""
  width: int
  heads: int
  intermediate: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, bias: jax.Array) -> jax.Array:
    ln = lambda name: nn.LayerNorm(epsilon=1e-12, dtype=jnp.float32, name=name)
    dense = lambda n, name, y: _dense(n, self.dtype, name)(y).astype(jnp.float32)
    # BERT divides the scores by sqrt(d) after the product; scaling q first is the same
    # value up to float rounding (well inside the tolerances).
    q = dense(self.width, "query", h) / math.sqrt(self.width // self.heads)
    ctx = _attend(q, dense(self.width, "key", h), dense(self.width, "value", h), self.heads,
                  bias, self.dtype)
    a = ln("attention_norm")(dense(self.width, "attention_output", ctx) + h)
    f = nn.gelu(dense(self.intermediate, "intermediate", a), approximate=False)
    return ln("output_norm")(dense(self.width, "output", f) + a)


class TextEncoder(nn.Module):
  """BERT in text mode: ids, mask int `(B, L)` -> [CLS] feature `(B, W)`, float32.

  Sows (collection 'intermediates') `hidden_states (B, 1 + fusion_layer, L, W)`: the
  embeddings, then each layer's output.
  """
  config: InternVideo2Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    c = self.config
    embed = lambda n, name: nn.Embed(n, c.text_width, param_dtype=jnp.float32, name=name)
    length = input_ids.shape[1]
    h = (embed(c.vocab_size, "word_embeddings")(input_ids)
         + embed(c.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(input_ids))
         + embed(c.max_positions, "position_embeddings")(jnp.arange(length))[None])
    h = nn.LayerNorm(epsilon=1e-12, dtype=jnp.float32, name="embeddings_norm")(h)
    # -10000 (not -inf) on padded keys, as BERT's extended attention mask.
    bias = ((1.0 - attention_mask.astype(jnp.float32)) * -10000.0)[:, None, None, :]
    states = [h]
    for i in range(c.fusion_layer):
      h = BertLayer(c.text_width, c.text_heads, c.text_intermediate, self.dtype,
                    name=f"layer_{i}")(h, bias)
      states.append(h)
    self.sow("intermediates", "hidden_states", jnp.stack(states, axis=1))
    return h[:, 0]


def _unit(x: jax.Array) -> jax.Array:
  """`x / ||x||_2` per row (plain division, as the reference; rows are never zero)."""
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class InternVideo2(nn.Module):
  """The stage-2 model's embedding path. Params: `vision`, `vision_proj`, `text`,
  `text_proj` (float32); `dtype` is the compute dtype of the matmuls."""
  config: InternVideo2Config
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.vision = VisionEncoder(c, self.dtype)
    self.vision_proj = _dense(c.embed_dim, self.dtype, "vision_proj")
    self.text = TextEncoder(c, self.dtype)
    self.text_proj = _dense(c.embed_dim, self.dtype, "text_proj")

  def encode_video(self, frames: jax.Array) -> jax.Array:
    """Normalised frames float `(B, T, S, S, 3)` -> unit `(B, E)` (GenRL's `clip_video`).
    Sows `clip_projector_out (B, 768)` and `vision_proj_out (B, E)` too."""
    pooled = self.vision(frames)
    self.sow("intermediates", "clip_projector_out", pooled)
    v = self.vision_proj(pooled).astype(jnp.float32)
    self.sow("intermediates", "vision_proj_out", v)
    return _unit(v)

  def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """ids, mask int `(B, L)` -> unit `(B, E)`. Sows `cls_feature`, `text_proj_out`."""
    cls = self.text(input_ids, attention_mask)
    self.sow("intermediates", "cls_feature", cls)
    t = self.text_proj(cls).astype(jnp.float32)
    self.sow("intermediates", "text_proj_out", t)
    return _unit(t)

  def __call__(self, frames: jax.Array, input_ids: jax.Array, attention_mask: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """Both towers (used to initialise): `(video (B, E), text (B', E))`."""
    return self.encode_video(frames), self.encode_text(input_ids, attention_mask)


def param_shapes(config: InternVideo2Config) -> Params:
  """The model's param tree as `jax.ShapeDtypeStruct`s (nothing allocated)."""
  model = InternVideo2(config)
  frames = jax.ShapeDtypeStruct((1, config.num_frames, config.img_size, config.img_size, 3),
                                jnp.float32)
  ids = jax.ShapeDtypeStruct((1, config.max_txt_l), jnp.int32)
  return jax.eval_shape(lambda k, f, i: model.init(k, f, i, i)["params"],
                        jax.random.key(0), frames, ids)


def init_params(config: InternVideo2Config, key: jax.Array) -> Params:
  """Random params (benchmarks); real ones come from `torch_to_flax`."""
  c = config
  frames = jnp.zeros((1, c.num_frames, c.img_size, c.img_size, 3), jnp.float32)
  ids = jnp.zeros((1, c.max_txt_l), jnp.int32)
  return InternVideo2(c).init(key, frames, ids, ids)["params"]


# --- preprocessing ---------------------------------------------------------------------


def preprocess(frames: jax.Array, size: int) -> jax.Array:
  """uint8 clips -> the model input, as GenRL's `clip_process` (README section 2).

  Args:
    frames: uint8 `(B, T, H, W, 3)`, or GenRL's channel-first `(B, T, 3, H, W)` (taken as
      channel-last whenever the last axis is 3).
    size: S, the model's input side.
  Returns:
    float32 `(B, T, S, S, 3)`: `x / 255`, bilinear resize (half-pixel centres, edge
    clamped; antialiased when down-sampling, like torchvision's `Resize`), then
    `(x - mean) / std` with ImageNet statistics.
  """
  if frames.ndim != 5 or 3 not in (frames.shape[-1], frames.shape[2]):
    raise ValueError(f"expected uint8 clips (B, T, H, W, 3) or (B, T, 3, H, W), got "
                     f"{frames.shape}")
  if frames.shape[-1] != 3:
    frames = jnp.moveaxis(frames, 2, -1)
  b, t, h, w, _ = frames.shape
  x = frames.reshape(b * t, h, w, 3).astype(jnp.float32) / 255.0
  if (h, w) != (size, size):
    x = jax.image.resize(x, (b * t, size, size, 3), "bilinear", antialias=True)
  x = (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
  return x.reshape(b, t, size, size, 3)


# --- tokenizer -------------------------------------------------------------------------


class Tokenizer:
  """InternVideo2's text tokenisation: uncased WordPiece (`transformers.BertTokenizer`),
  `[CLS]` + the first `max_len - 1` pieces, NO `[SEP]` (the vendored tokenizer's quirk),
  right-padded with `[PAD]`.
  """

  def __init__(self, vocab_dir: str, max_len: int = 40, option: str = "config.vlm.tokenizer"):
    path = os.path.join(os.path.expanduser(vocab_dir), VOCAB_FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"{option}={vocab_dir!r} has no {VOCAB_FILE}: expected a directory holding the "
          f"BERT WordPiece vocabulary (bert-large-uncased's {VOCAB_FILE}, one token a line)")
    from transformers import BertTokenizer  # pylint: disable=g-import-not-at-top
    # Uncased: lower-case, strip accents, split punctuation and CJK, as the reference.
    self._tok = BertTokenizer(path, do_lower_case=True)
    self.max_len = max_len
    self.vocab_path = path

  def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`N` strings -> int32 `input_ids (N, max_len)`, `attention_mask (N, max_len)`."""
    ids = np.full((len(texts), self.max_len), self._tok.pad_token_id, np.int32)
    mask = np.zeros((len(texts), self.max_len), np.int32)
    for i, text in enumerate(texts):
      pieces = self._tok.convert_tokens_to_ids(self._tok.tokenize(text))[:self.max_len - 1]
      row = [self._tok.cls_token_id] + pieces
      ids[i, :len(row)] = row
      mask[i, :len(row)] = 1
    return ids, mask


# --- checkpoint conversion -------------------------------------------------------------

_V, _T = "vision_encoder.", "text_encoder.bert."


def _rules() -> tuple[convert.Rule, ...]:
  """Torch key <-> Flax path for every needed entry (keys as in the checkpoint)."""
  R, L = convert.Rule, convert.Layout  # pylint: disable=invalid-name
  lin, ln = convert.linear_rules, convert.layer_norm_rules
  block = ((R("norm1.weight", "norm1/scale"), R("attn.qkv.weight", "attn/qkv/kernel", L.LINEAR))
           + lin("attn.proj", "attn/proj")
           + (R("attn.q_norm.weight", "attn/q_norm/scale"),
              R("attn.k_norm.weight", "attn/k_norm/scale"),
              R("ls1.gamma", "ls1"), R("norm2.weight", "norm2/scale"))
           + lin("mlp.fc1", "fc1") + lin("mlp.fc2", "fc2") + (R("ls2.gamma", "ls2"),))
  pool = (ln("norm1_q", "norm1_q") + ln("norm1_k", "norm1_k") + ln("norm1_v", "norm1_v")
          + tuple(r for x in "qkv" for r in (R(f"cross_attn.{x}.weight", f"{x}/kernel", L.LINEAR),
                                             R(f"cross_attn.{x}_bias", f"{x}_bias")))
          + lin("cross_attn.proj", "proj"))
  vision = ((R("cls_token", "cls_token"), R("pos_embed", "pos_embed"),
             R("patch_embed.proj.weight", "patch_proj/kernel", L.CONV3D),
             R("patch_embed.proj.bias", "patch_proj/bias"))
            + convert.prefixed(block, "blocks.{i}.", "blocks_{i}/")
            + convert.prefixed(pool, "clip_projector.", "clip_projector/"))
  layer = (lin("attention.self.query", "query") + lin("attention.self.key", "key")
           + lin("attention.self.value", "value")
           + lin("attention.output.dense", "attention_output")
           + ln("attention.output.LayerNorm", "attention_norm")
           + lin("intermediate.dense", "intermediate") + lin("output.dense", "output")
           + ln("output.LayerNorm", "output_norm"))
  text = (tuple(R(f"embeddings.{n}.weight", f"{n}/embedding") for n in
                ("word_embeddings", "position_embeddings", "token_type_embeddings"))
          + ln("embeddings.LayerNorm", "embeddings_norm")
          + convert.prefixed(layer, "encoder.layer.{i}.", "layer_{i}/"))
  return (convert.prefixed(vision, _V, "vision/") + convert.prefixed(text, _T, "text/")
          + lin("vision_proj", "vision_proj") + lin("text_proj", "text_proj"))


# Entries of the model that GenRL's embedding path never reads (README section 7); the
# checkpoint-only `temp` and `itm_head.*` lie outside the namespaces. BERT layers from
# `fusion_layer` on are unneeded too (`needed_keys`): which ones depends on the size.
UNNEEDED = (_V + "img_pos_embed", _V + "clip_pos_embed", _V + "clip_img_pos_embed",
            _V + "clip_decoder.", _V + "final_clip_decoder.", "text_encoder.cls.",
            _T + "embeddings.position_ids")
TABLE = convert.RuleTable(
    name="InternVideo2", namespaces=(_V, "text_encoder.", "vision_proj.", "text_proj."),
    rules=_rules(), excluded=UNNEEDED)
_TEXT_LAYER = re.compile(re.escape(_T) + r"encoder\.layer\.(\d+)\.")


def needed_keys(keys: list[str], fusion_layer: int) -> tuple[list[str], list[str]]:
  """Splits checkpoint keys into (needed, unneeded) for the embedding path, in order."""
  def needed(key: str) -> bool:
    m = _TEXT_LAYER.match(key)
    return TABLE.owns(key) and not (m and int(m.group(1)) >= fusion_layer)
  return [k for k in keys if needed(k)], [k for k in keys if not needed(k)]


def interpolate_pos_embed(table: np.ndarray, num_frames: int, grid: int) -> np.ndarray:
  """A `(1, 1 + T0*G*G, C)` position table -> `(1, 1 + num_frames*G*G, C)`.

  Row 0 ([CLS]) is kept; the rest, viewed as `(T0, G*G, C)`, is interpolated linearly
  along time with half-pixel centres (`F.interpolate(mode='linear', align_corners=False)`,
  upper index clamped), as `interpolate_pos_embed_internvideo2_new`. Float32.
  """
  table = np.asarray(table, np.float32)
  rows, width = table.shape[1], table.shape[-1]
  if table.ndim != 3 or table.shape[0] != 1 or (rows - 1) % (grid * grid) or rows == 1:
    raise ValueError(f"position table of shape {table.shape}: expected (1, 1 + T*{grid}*"
                     f"{grid}, C) for some number of frames T")
  t0 = (rows - 1) // (grid * grid)
  if t0 == num_frames:
    return table
  src = np.maximum((np.arange(num_frames) + 0.5) * t0 / num_frames - 0.5, 0.0)
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, t0 - 1)
  frac = (src - lo).astype(np.float32)[:, None, None]
  x = table[0, 1:].reshape(t0, grid * grid, width)
  out = (1 - frac) * x[lo] + frac * x[hi]
  return np.concatenate([table[:, :1], out.reshape(1, -1, width)], axis=1)


def _shape_of(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
  if key not in state_dict:
    raise KeyError(f"InternVideo2 checkpoint is missing {key!r} (needed to read the sizes)")
  return tuple(np.shape(state_dict[key]))


def infer_config(state_dict: Mapping[str, Any], size: str = "1b", **overrides: Any
                 ) -> InternVideo2Config:
  """The sizes read off the checkpoint's shapes; head counts, frames and text length
  (which shapes cannot give) from `SIZES[size]`; then `overrides` (any field)."""
  if size not in SIZES:
    raise ValueError(f"config.vlm.size={size!r}: expected one of {sorted(SIZES)}")
  s = lambda key: _shape_of(state_dict, key)
  depth = 0
  while f"{_V}blocks.{depth}.norm1.weight" in state_dict:
    depth += 1
  layers = sorted({int(m.group(1)) for k in state_dict if (m := _TEXT_LAYER.match(k))})
  cross = [i for i in layers if f"{_T}encoder.layer.{i}.crossattention.self.query.weight"
           in state_dict]
  patch = s(_V + "patch_embed.proj.weight")
  base = SIZES[size]
  img_size = base.img_size
  if _V + "img_pos_embed" in state_dict:  # (1, 1 + G*G, C): the grid, hence S
    img_size = math.isqrt(s(_V + "img_pos_embed")[1] - 1) * patch[-1]
  words = s(_T + "embeddings.word_embeddings.weight")
  sizes = dict(
      img_size=img_size, patch_size=patch[-1], vision_width=s(_V + "cls_token")[-1],
      vision_depth=depth, vision_mlp=s(_V + "blocks.0.mlp.fc1.weight")[0],
      clip_embed_dim=s(_V + "clip_projector.cross_attn.proj.weight")[0],
      text_width=words[1], vocab_size=words[0],
      text_intermediate=s(_T + "encoder.layer.0.intermediate.dense.weight")[0],
      fusion_layer=cross[0] if cross else len(layers),
      max_positions=s(_T + "embeddings.position_embeddings.weight")[0],
      type_vocab_size=s(_T + "embeddings.token_type_embeddings.weight")[0],
      embed_dim=s("vision_proj.weight")[0])
  return dataclasses.replace(base, **{**sizes, **overrides})


def torch_to_flax(state_dict: Mapping[str, Any], config: InternVideo2Config) -> Params:
  """Checkpoint entries (torch names and layouts) -> float32 Flax params of `config`.

  Unneeded entries are logged and skipped; the position table is interpolated to
  `config.num_frames`. Raises KeyError naming missing needed keys, ValueError naming a
  misshaped one with both shapes (Flax layout) or an owned key that no rule maps.
  """
  needed, unneeded = needed_keys(list(state_dict), config.fusion_layer)
  if unneeded:
    logging.info("InternVideo2: skipping %d checkpoint entries the embedding path does not "
                 "use: %s", len(unneeded), ", ".join(unneeded))
  arrays = {k: np.asarray(state_dict[k], np.float32) for k in needed}
  pos = _V + "pos_embed"
  if pos in arrays:
    try:
      arrays[pos] = interpolate_pos_embed(arrays[pos], config.num_frames, config.grid)
    except ValueError as e:
      raise ValueError(f"InternVideo2: {pos}: {e} (expected "
                       f"{(1, config.num_tokens, config.vision_width)})") from None
  params = convert.torch_to_flax(arrays, TABLE)
  convert.check_params(params, param_shapes(config), TABLE)
  return params


def flax_to_torch(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `torch_to_flax` (same table): Flax params -> the needed torch entries
  (8-frame position table)."""
  return convert.flax_to_torch(params, TABLE)


def load_checkpoint(path: str) -> dict[str, np.ndarray]:
  """The state dict of an InternVideo2 checkpoint, float32, torch names and layouts.

  `.pt`: read with the restricted unpickler (no torch; nothing in the file is executed);
  the state dict under 'model', else 'module' (deepspeed), else the top level; float32 or
  bfloat16/float16 tensors up-cast exactly. `.npz`: `param/<key>` arrays (the fixtures).
  Integer buffers (`position_ids`) keep their dtype.
  """
  snap = snapshot_lib.load_snapshot(path)
  if snap.metadata.get("format") not in ("torch_state_dict", "npz"):
    raise snapshot_lib.SnapshotError(f"{path}: not an InternVideo2 checkpoint (a state dict "
                                     f"of tensors, bare or under 'model'/'module')")
  return {k: v.astype(np.float32) if jnp.issubdtype(v.dtype, jnp.floating) else v
          for k, v in snap.state_dict.items()}


def load(path: str, size: str = "1b", **overrides: Any
         ) -> tuple[InternVideo2Config, Params]:
  """`(config, float32 params)` of a checkpoint file (`load_checkpoint`, `infer_config`,
  `torch_to_flax`)."""
  state_dict = load_checkpoint(path)
  config = infer_config(state_dict, size, **overrides)
  return config, torch_to_flax(state_dict, config)


# --- the embedder ----------------------------------------------------------------------


def parse_overrides(spec: str, option: str = "config.vlm.size_overrides") -> dict[str, int]:
  """`'vision_heads=4,text_heads=4'` -> `{'vision_heads': 4, 'text_heads': 4}`."""
  fields = {f.name for f in dataclasses.fields(InternVideo2Config)}
  out = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    name, _, value = item.partition("=")
    if name.strip() not in fields or not value.strip().lstrip("-").isdigit():
      raise ValueError(f"{option}={spec!r}: expected comma-separated <field>=<int> with "
                       f"fields of InternVideo2Config: {sorted(fields)}")
    out[name.strip()] = int(value)
  return out


# The official stage-2 checkpoint's file name without extension: the name of the
# embeddings the reference's datasets carry (`genrl_jax.data.npz_import.REFERENCE_VLM`).
OFFICIAL_CHECKPOINT = "InternVideo2-stage2_1b-224p-f4"


def tokenizer_dir(checkpoint: str, tokenizer: str) -> str:
  """The vocabulary directory: `config.vlm.tokenizer`, else the checkpoint's folder."""
  return os.path.expanduser(tokenizer or os.path.dirname(os.path.abspath(
      os.path.expanduser(checkpoint))))


def check_files(checkpoint: str, tokenizer: str) -> None:
  """One-line errors naming the config option when a file is missing."""
  if not checkpoint or not os.path.isfile(os.path.expanduser(checkpoint)):
    raise FileNotFoundError(
        f"config.vlm.model={checkpoint!r} is not a file: config.vlm.name='internvideo2' "
        f"needs the InternVideo2 stage-2 checkpoint ({OFFICIAL_CHECKPOINT}.pt, see the "
        "README's 'InternVideo2' section) to embed text or video")
  vocab_dir = tokenizer_dir(checkpoint, tokenizer)
  if not os.path.isfile(os.path.join(vocab_dir, VOCAB_FILE)):
    raise FileNotFoundError(
        f"config.vlm.tokenizer={tokenizer!r}: no {VOCAB_FILE} in {vocab_dir}: expected a "
        f"directory holding the BERT WordPiece vocabulary (bert-large-uncased's "
        f"{VOCAB_FILE}); empty means the checkpoint's folder")


def internvideo2_identifier(checkpoint: str, dtype: str = "float32") -> str:
  """`internvideo2:<checkpoint file name without extension>` (+ `:bfloat16` when computed
  in bfloat16); with no checkpoint given, that of the official file.

  The file's name, not a digest of its 2.8 GB: the reference's datasets name their
  `clip_video` embeddings this way (`genrl_jax import-npz` records them as
  `internvideo2:InternVideo2-stage2_1b-224p-f4`), so a run finds them with or without the
  checkpoint at hand, and a prompt-cache lookup reads no weights. Weights of another
  model must therefore come under another file name.
  """
  if dtype not in DTYPES:
    raise ValueError(f"config.vlm.dtype={dtype!r}: expected one of {sorted(DTYPES)}")
  stem = (os.path.splitext(os.path.basename(os.path.expanduser(checkpoint)))[0]
          if checkpoint else OFFICIAL_CHECKPOINT)
  suffix = "" if dtype == "float32" else f":{dtype}"
  return f"internvideo2:{stem}{suffix}"


class InternVideo2Embedder:
  """The `Embedder` of InternVideo2 stage 2, data-parallel over a mesh of local devices.

  Attributes:
    identifier: see `internvideo2_identifier`.
    embed_dim: the joint space's size (512 for the 1B model).
    config: the `InternVideo2Config`.
    batch_size: clips (or texts) per device call, a multiple of the device count.
  """

  def __init__(self, checkpoint: str, tokenizer: str, size: str = "1b",
               overrides: Mapping[str, int] | None = None, dtype: str = "float32",
               batch_size: int = 64, devices: list[jax.Device] | None = None):
    """Loads the checkpoint (`config.vlm.model`) and the vocabulary directory
    (`config.vlm.tokenizer`, empty: the checkpoint's folder); `size`/`overrides` name what
    the shapes cannot give (heads);
    `dtype` 'float32' or 'bfloat16' (`config.vlm.dtype`)."""
    sharded.check_batch_size(batch_size)
    identifier = internvideo2_identifier(checkpoint, dtype)
    check_files(checkpoint, tokenizer)
    config, params = load(os.path.expanduser(checkpoint), size, **dict(overrides or {}))
    self._setup(identifier, config, params,
                Tokenizer(tokenizer_dir(checkpoint, tokenizer), config.max_txt_l), dtype,
                batch_size, devices)

  @classmethod
  def from_params(cls, config: InternVideo2Config, params: Params, identifier: str,
                  tokenizer: Tokenizer | None = None, dtype: str = "float32",
                  batch_size: int = 64, devices: list[jax.Device] | None = None
                  ) -> "InternVideo2Embedder":
    """An embedder of given params (e.g. random ones, for benchmarks); without a
    tokenizer it embeds video only."""
    if dtype not in DTYPES:
      raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    embedder = cls.__new__(cls)
    embedder._setup(identifier, config, params, tokenizer, dtype, batch_size, devices)  # pylint: disable=protected-access
    return embedder

  def _setup(self, identifier: str, config: InternVideo2Config, params: Params,
             tokenizer: Tokenizer | None, dtype: str, batch_size: int,
             devices: list[jax.Device] | None) -> None:
    self.identifier, self.config, self.tokenizer = identifier, config, tokenizer
    self.embed_dim = config.embed_dim
    self._model = InternVideo2(config, DTYPES[dtype])
    self._parallel = sharded.DataParallel(params, batch_size, devices)
    self.mesh, self.batch_size = self._parallel.mesh, self._parallel.batch_size
    self._video_fn = self._parallel.jit(self._video_features, 1)
    self._text_fn = self._parallel.jit(self._text_features, 2)

  def _video_features(self, params: Params, frames: jax.Array) -> jax.Array:
    """uint8 `(n, T, H, W, 3)` -> unit `(n, E)`."""
    x = preprocess(frames, self.config.img_size)
    return self._model.apply({"params": params}, x, method=InternVideo2.encode_video)

  def _text_features(self, params: Params, input_ids: jax.Array, attention_mask: jax.Array
                     ) -> jax.Array:
    """int `(n, L)` ids and mask -> unit `(n, E)`."""
    return self._model.apply({"params": params}, input_ids, attention_mask,
                             method=InternVideo2.encode_text)

  def embed_video(self, frames: np.ndarray) -> np.ndarray:
    """uint8 `(N, T, H, W, 3)` RGB clips (T = `config.num_frames`, 8) -> float32 `(N, E)`."""
    frames = np.asarray(frames)
    t = self.config.num_frames
    if (frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[1] != t
        or frames.shape[-1] != 3 or 0 in frames.shape[2:]):
      raise ValueError(f"InternVideo2Embedder.embed_video expects uint8 RGB clips "
                       f"(N, {t}, H, W, 3); got {frames.dtype} {frames.shape}")
    return self._parallel.run(self._video_fn, self.embed_dim, frames)

  def embed_text(self, texts: list[str]) -> np.ndarray:
    """`N` strings -> float32 `(N, E)`; beyond 39 word pieces a text is cut."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
      raise ValueError(f"InternVideo2Embedder.embed_text expects a list of strings, got "
                       f"{texts!r}")
    if self.tokenizer is None:
      raise ValueError("this InternVideo2Embedder was built without a tokenizer")
    ids, mask = self.tokenizer(list(texts))
    return self._parallel.run(self._text_fn, self.embed_dim, ids, mask)
