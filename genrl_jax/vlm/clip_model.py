"""CLIP in Flax linen, read from and written to the Hugging Face checkpoint format.

No transformers model class is used (transformers 5 has no Flax models; it is needed only
for the tokenizer). The pieces:

  `ClipConfig`   the fields of a hub `config.json` (`CLIPConfig`: `text_config`,
                 `vision_config`, `projection_dim`, `logit_scale_init_value`) this model
                 reads; absent fields take CLIPConfig's defaults (ViT-B/32).
  `CLIP`         the linen module: `image_features(pixels)` and `text_features(ids, mask)`,
                 CLIP's projected (not normalised) features.
  `init_params`  random parameters of a seed.
  `load_params`  parameters from `model.safetensors` (PyTorch layout, read with numpy: no
                 torch) or from `flax_model.msgpack` (what transformers' Flax CLIP and older
                 versions of this package saved).
  `save`         `config.json` and `model.safetensors`, loadable by transformers' PyTorch
                 `CLIPModel.from_pretrained` too.

Module and parameter names, initialisers and the order of operations mirror transformers'
`FlaxCLIPModule` (4.57): its parameter tree is ours, `flax_model.msgpack` needs no renaming,
`init_params(config, seed)` draws the values `FlaxCLIPModel(config, seed=seed)` draws
(linen derives each module's init key from its path), and the forward pass gives its
features (tests/test_vlm_clip.py compares both while transformers 4 is installed).

PyTorch layout (`TORCH_LEAVES`): the key of `a/b/kernel` is `a.b.weight` with dense kernels
transposed to `(out, in)` and the patch convolution's from HWIO to OIHW; LayerNorm `scale`
and Embed `embedding` are `weight`; `bias`, `class_embedding`, `logit_scale` keep their
names. PyTorch's `position_ids` buffers, present in some checkpoints, are skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict
import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.reference import rules

SAFETENSORS_FILE = "model.safetensors"
MSGPACK_FILE = "flax_model.msgpack"
WEIGHT_FILES = (SAFETENSORS_FILE, MSGPACK_FILE)  # in order of preference


def quick_gelu(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(1.702 * x)


# config.hidden_act -> activation, as transformers' Flax ACT2FN.
ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
    "silu": nn.swish,
    "swish": nn.swish,
    "tanh": nn.tanh,
}


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """`text_config` of a CLIP `config.json` (defaults: CLIPTextConfig's)."""
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  pad_token_id: int = 1
  bos_token_id: int = 49406
  # Text is pooled at the first eos token; 2 marks configs older than transformers PR
  # #24773, which pool at the largest token id instead (CLIP's eos has the largest id).
  eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """`vision_config` of a CLIP `config.json` (defaults: CLIPVisionConfig's)."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """The fields of a CLIP `config.json` the model uses (defaults: CLIPConfig's)."""
  text_config: TextConfig = TextConfig()
  vision_config: VisionConfig = VisionConfig()
  projection_dim: int = 512
  logit_scale_init_value: float = 2.6592

  @classmethod
  def from_dict(cls, d: dict[str, Any], source: str = "config") -> ClipConfig:
    """From a parsed `config.json`; keys of other models' fields are ignored.

    `text_config_dict`/`vision_config_dict` (old configs) override `text_config`/
    `vision_config`, as in transformers. Raises ValueError for a non-CLIP model or an
    unknown activation.
    """
    if d.get("model_type", "clip") != "clip":
      raise ValueError(f"{source} is a {d['model_type']!r} model; config.vlm.name='clip' "
                       "needs a CLIP model (model_type 'clip')")
    towers = {}
    for name, tower in (("text_config", TextConfig), ("vision_config", VisionConfig)):
      given = {**(d.get(name) or {}), **(d.get(name + "_dict") or {})}
      fields = {f.name for f in dataclasses.fields(tower)}
      towers[name] = tower(**{k: v for k, v in given.items() if k in fields})
      if towers[name].hidden_act not in ACTIVATIONS:
        raise ValueError(f"{source}: {name}.hidden_act={towers[name].hidden_act!r} is not "
                         f"one of {sorted(ACTIVATIONS)}")
    top = {k: d[k] for k in ("projection_dim", "logit_scale_init_value") if k in d}
    return cls(**towers, **top)

  def to_dict(self) -> dict[str, Any]:
    """A `config.json` dict that transformers' `CLIPConfig` reads too."""
    return dict(dataclasses.asdict(self), model_type="clip", architectures=["CLIPModel"])


def read_config(path: str) -> ClipConfig:
  """`ClipConfig` of a `config.json` file."""
  with open(path, encoding="utf-8") as f:
    return ClipConfig.from_dict(json.load(f), source=path)


# Initialisers of transformers' Flax CLIP (jax's `normal()` has std 0.01).
_DENSE_INIT = jax.nn.initializers.normal(0.01)
_EMBED_INIT = jax.nn.initializers.normal()
_PROJECTION_INIT = jax.nn.initializers.normal(0.02)


class Attention(nn.Module):
  """Multi-head self-attention, `(B, L, D)` -> `(B, L, D)`; causal for the text tower."""
  config: TextConfig | VisionConfig
  causal: bool = False

  def setup(self):
    d = self.config.hidden_size
    if d % self.config.num_attention_heads:
      raise ValueError(f"hidden_size {d} is not a multiple of num_attention_heads "
                       f"{self.config.num_attention_heads}")
    # Created in FlaxCLIPAttention's order (k, v, q, out).
    self.k_proj = nn.Dense(d, kernel_init=_DENSE_INIT)
    self.v_proj = nn.Dense(d, kernel_init=_DENSE_INIT)
    self.q_proj = nn.Dense(d, kernel_init=_DENSE_INIT)
    self.out_proj = nn.Dense(d, kernel_init=_DENSE_INIT)

  def __call__(self, x: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """`attention_mask`: int `(B, L)`, 0 for padding keys; None: all keys."""
    b, length, d = x.shape
    heads = (b, length, self.config.num_attention_heads, -1)
    query = self.q_proj(x).reshape(heads)
    key = self.k_proj(x).reshape(heads)
    value = self.v_proj(x).reshape(heads)
    mask = None
    if self.causal:
      mask = nn.make_causal_mask(jnp.ones((1, length), "i4"))  # (1, 1, L, L)
    if attention_mask is not None:
      mask = nn.combine_masks(jnp.expand_dims(attention_mask, (-3, -2)), mask, dtype="i4")
    bias = None
    if mask is not None:
      bias = jax.lax.select(mask > 0, jnp.full(mask.shape, 0.0, jnp.float32),
                            jnp.full(mask.shape, jnp.finfo(jnp.float32).min, jnp.float32))
    weights = nn.dot_product_attention_weights(query, key, bias=bias, dtype=jnp.float32)
    out = jnp.einsum("...hqk,...khd->...qhd", weights, value).reshape(b, length, d)
    return self.out_proj(out)


class Mlp(nn.Module):
  config: TextConfig | VisionConfig

  def setup(self):
    self.fc1 = nn.Dense(self.config.intermediate_size, kernel_init=_DENSE_INIT)
    self.fc2 = nn.Dense(self.config.hidden_size, kernel_init=_DENSE_INIT)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(ACTIVATIONS[self.config.hidden_act](self.fc1(x)))


class EncoderLayer(nn.Module):
  """Pre-norm transformer block, `(B, L, D)` -> `(B, L, D)`."""
  config: TextConfig | VisionConfig
  causal: bool = False

  def setup(self):
    eps = self.config.layer_norm_eps
    self.self_attn = Attention(self.config, self.causal)
    self.layer_norm1 = nn.LayerNorm(epsilon=eps)
    self.mlp = Mlp(self.config)
    self.layer_norm2 = nn.LayerNorm(epsilon=eps)

  def __call__(self, x: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
    x = x + self.self_attn(self.layer_norm1(x), attention_mask)
    return x + self.mlp(self.layer_norm2(x))


class _Layers(nn.Module):
  """The blocks, named "0", "1", ... (transformers' `FlaxCLIPLayerCollection`)."""
  config: TextConfig | VisionConfig
  causal: bool = False

  def setup(self):
    self.layers = [EncoderLayer(self.config, self.causal, name=str(i))
                   for i in range(self.config.num_hidden_layers)]

  def __call__(self, x: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
    for layer in self.layers:
      x = layer(x, attention_mask)
    return x


class Encoder(nn.Module):
  config: TextConfig | VisionConfig
  causal: bool = False

  def setup(self):
    self.layers = _Layers(self.config, self.causal)

  def __call__(self, x: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    return self.layers(x, attention_mask)


class TextEmbeddings(nn.Module):
  config: TextConfig

  def setup(self):
    d = self.config.hidden_size
    self.token_embedding = nn.Embed(self.config.vocab_size, d, embedding_init=_EMBED_INIT)
    self.position_embedding = nn.Embed(self.config.max_position_embeddings, d,
                                       embedding_init=_EMBED_INIT)

  def __call__(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
    return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class TextTransformer(nn.Module):
  """int `(B, L)` tokens -> `(B, D)` final-normed state at the end-of-text token."""
  config: TextConfig

  def setup(self):
    self.embeddings = TextEmbeddings(self.config)
    self.encoder = Encoder(self.config, causal=True)
    self.final_layer_norm = nn.LayerNorm(epsilon=self.config.layer_norm_eps)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               position_ids: jax.Array) -> jax.Array:
    x = self.embeddings(input_ids, position_ids)
    x = self.final_layer_norm(self.encoder(x, attention_mask))
    eos = self.config.eos_token_id
    # As transformers: legacy configs (eos id 2) pool at the largest id, others at the
    # first eos token.
    at = input_ids.argmax(-1) if eos == 2 else (input_ids == eos).argmax(-1)
    return x[jnp.arange(x.shape[0]), at]


class VisionEmbeddings(nn.Module):
  config: VisionConfig

  def setup(self):
    d, p = self.config.hidden_size, self.config.patch_size
    self.class_embedding = self.param("class_embedding",
                                      jax.nn.initializers.normal(stddev=0.02), (d,))
    self.patch_embedding = nn.Conv(d, kernel_size=(p, p), strides=(p, p), padding="VALID",
                                   use_bias=False, kernel_init=_EMBED_INIT)
    self.position_embedding = nn.Embed((self.config.image_size // p) ** 2 + 1, d,
                                       embedding_init=_EMBED_INIT)

  def __call__(self, pixels: jax.Array) -> jax.Array:
    """`(B, S, S, C)` -> `(B, 1 + (S/p)^2, D)`: class token, then patches row by row."""
    patches = self.patch_embedding(pixels)
    b, h, w, d = patches.shape
    cls = jnp.broadcast_to(self.class_embedding, (b, 1, d))
    x = jnp.concatenate([cls, patches.reshape(b, h * w, d)], axis=1)
    return x + self.position_embedding(jnp.arange(h * w + 1, dtype="i4")[None])


class VisionTransformer(nn.Module):
  """`(B, S, S, C)` normalised pixels -> `(B, D)` post-normed class-token state."""
  config: VisionConfig

  def setup(self):
    eps = self.config.layer_norm_eps
    self.embeddings = VisionEmbeddings(self.config)
    self.pre_layrnorm = nn.LayerNorm(epsilon=eps)  # sic: the checkpoints' name
    self.encoder = Encoder(self.config)
    self.post_layernorm = nn.LayerNorm(epsilon=eps)

  def __call__(self, pixels: jax.Array) -> jax.Array:
    x = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
    return self.post_layernorm(x[:, 0])


class CLIP(nn.Module):
  """CLIP's two towers and projections (`FlaxCLIPModule`'s parameter tree)."""
  config: ClipConfig

  def setup(self):
    c = self.config
    self.text_model = TextTransformer(c.text_config)
    self.vision_model = VisionTransformer(c.vision_config)
    self.visual_projection = nn.Dense(c.projection_dim, use_bias=False,
                                      kernel_init=_PROJECTION_INIT)
    self.text_projection = nn.Dense(c.projection_dim, use_bias=False,
                                    kernel_init=_PROJECTION_INIT)
    # Not used for features; kept so checkpoints round-trip.
    self.logit_scale = self.param(
        "logit_scale", lambda _, shape: jnp.ones(shape) * c.logit_scale_init_value, [])

  def image_features(self, pixels: jax.Array) -> jax.Array:
    """float `(B, S, S, C)` normalised pixels (NHWC) -> `(B, projection_dim)`."""
    return self.visual_projection(self.vision_model(pixels))

  def text_features(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                    position_ids: jax.Array | None = None) -> jax.Array:
    """int `(B, L)` tokens, `L <= max_position_embeddings`, and mask (1: token, 0:
    padding; None: all tokens) -> `(B, projection_dim)`."""
    input_ids = jnp.asarray(input_ids, "i4")
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    return self.text_projection(self.text_model(input_ids, jnp.asarray(attention_mask, "i4"),
                                                jnp.asarray(position_ids, "i4")))

  def __call__(self, input_ids: jax.Array, pixels: jax.Array,
               attention_mask: jax.Array | None = None,
               position_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`(text features, image features)`; used to initialise both towers at once."""
    image = self.image_features(pixels)
    return self.text_features(input_ids, attention_mask, position_ids), image


def _init_inputs(config: ClipConfig) -> tuple[jax.Array, jax.Array]:
  s = config.vision_config.image_size
  return (jnp.zeros((1, 1), "i4"),
          jnp.zeros((1, s, s, config.vision_config.num_channels), jnp.float32))


def init_params(config: ClipConfig, seed: int = 0) -> dict[str, Any]:
  """Random parameters: the values `FlaxCLIPModel(config, seed=seed).params` has.

  The key is split as `FlaxCLIPPreTrainedModel.init_weights` splits it; the inputs' values
  do not matter. Not jitted, as there: compiled, the normal draws of 31 of the tiny
  model's 78 parameters differ in the last bit (relative 1e-7).
  """
  params_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = CLIP(config).init({"params": params_rng, "dropout": dropout_rng},
                                *_init_inputs(config))
  return jax.tree.map(np.asarray, variables["params"])


def param_shapes(config: ClipConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flat parameter path -> shape, without allocating anything."""
  shapes = jax.eval_shape(CLIP(config).init, jax.random.PRNGKey(0), *_init_inputs(config))
  return {path: tuple(v.shape) for path, v in flatten_dict(shapes["params"]).items()}


# The converter table: Flax leaf name -> PyTorch leaf name. Kernels change layout as
# `rules.Layout` says (dense kernels LINEAR, the patch conv CONV); the rest is copied.
TORCH_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias",
                "class_embedding": "class_embedding", "logit_scale": "logit_scale"}


def _layout(path: tuple[str, ...], ndim: int) -> rules.Layout:
  if path[-1] != "kernel":
    return rules.Layout.COPY
  return {2: rules.Layout.LINEAR, 4: rules.Layout.CONV}[ndim]


def torch_key(path: tuple[str, ...]) -> str:
  """The PyTorch state-dict key of a Flax parameter path."""
  return ".".join([*path[:-1], TORCH_LEAVES[path[-1]]])


def to_torch_state(params: Any) -> dict[str, np.ndarray]:
  """Flax parameters -> PyTorch-layout `{key: C-contiguous array}` (for safetensors)."""
  state = {}
  for path, value in flatten_dict(params).items():
    # np.array, not np.ascontiguousarray: the latter turns the scalar logit_scale into (1,).
    value = np.asarray(value)
    state[torch_key(path)] = np.array(
        rules.to_torch_array(value, _layout(path, value.ndim), torch_key(path)), order="C")
  return state


def from_torch_state(state: dict[str, np.ndarray], config: ClipConfig,
                     source: str = "state") -> dict[str, Any]:
  """PyTorch-layout arrays -> float32 Flax parameters of the model `config` describes.

  Raises ValueError naming the first missing, misshaped or unexpected key.
  """
  return _checked(state, config, source, torch=True)


def _checked(arrays: dict[str, np.ndarray], config: ClipConfig, source: str,
             torch: bool) -> dict[str, Any]:
  """Nested float32 parameters from a file's `{name: array}`, after checking that it holds
  exactly the parameters of `config`'s model with their shapes.

  `torch`: names and layout are PyTorch's (`TORCH_LEAVES`); else the Flax paths joined
  with '/'. Errors name the file's key and give shapes in the file's layout.
  """
  expected = param_shapes(config)
  names = {p: torch_key(p) if torch else "/".join(p) for p in expected}
  unexpected = [k for k in sorted(set(arrays) - set(names.values()))
                if not (torch and k.endswith("position_ids"))]  # PyTorch buffers
  if unexpected:
    raise ValueError(f"{source}: unexpected weight {unexpected[0]!r} ({len(unexpected)} "
                     f"unexpected in all); not a CLIP checkpoint?")
  flat = {}
  for path, shape in expected.items():
    name = names[path]
    if name not in arrays:
      raise ValueError(f"{source}: missing weight {name!r}")
    layout = _layout(path, len(shape)) if torch else rules.Layout.COPY
    want = rules.torch_shape(shape, layout)
    if tuple(np.shape(arrays[name])) != want:
      raise ValueError(f"{source}: weight {name!r} has shape {tuple(np.shape(arrays[name]))}"
                       f" but config.json asks for {want}")
    flat[path] = np.asarray(rules.to_flax_array(arrays[name], layout, name), np.float32)
  return unflatten_dict(flat)


def load_params(path: str, config: ClipConfig) -> dict[str, Any]:
  """Parameters from a `model.safetensors` (PyTorch layout) or `flax_model.msgpack` file.

  Raises ValueError naming a missing, misshaped or unexpected weight.
  """
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return from_torch_state(load_file(path), config, source=path)
  from flax import serialization  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    tree = serialization.msgpack_restore(f.read())
  arrays = {"/".join(p): v for p, v in flatten_dict(tree).items()}
  return _checked(arrays, config, path, torch=False)


def save(directory: str, config: ClipConfig, params: Any) -> None:
  """Writes `config.json` and `model.safetensors` (PyTorch layout) into `directory`."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config.to_dict(), f, indent=2)
  save_file(to_torch_state(params), os.path.join(directory, SAFETENSORS_FILE),
            metadata={"format": "pt"})
