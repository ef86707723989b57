"""InternVideo2 stage 2 (as GenRL uses it) in Flax: the model, its sizes and its input
preprocessing. Loading a checkpoint is `internvideo2_convert`, the tokenizer
`internvideo2_tokenizer`, and the `Embedder` built from them `internvideo2`.

The computation follows GenRL's path exactly (`ViCLIPGlobalInstance` / `get_vid_features` /
`get_txt_feat`; the InternVideo2 fixture README, `tests/fixtures/internvideo2_torch_reference`,
sections 2-5):

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

Precision: params are float32; `dtype` is the matmul/activation dtype ('float32' or
'bfloat16'). Norms, softmax and the residual stream stay float32. In float32 the matmuls
use `Precision.HIGHEST`, so GPUs/TPUs do not drop to TF32/bf16 passes (GenRL runs float32
matmuls without TF32).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = dict[str, Any]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
