"""InternVideo2 checkpoints: reading them, inferring the sizes and converting the weights
to the Flax model's params (`internvideo2_model`).

`load_checkpoint(path)` reads the official `.pt` with the project's restricted unpickler
(`genrl_jax.reference.snapshot`: no torch, nothing from the file executed), the state dict
under 'model', 'module' or at the top level, float32 or bfloat16 (up-cast exactly), or an
`.npz` of `param/<key>` arrays. `torch_to_flax` keeps the needed entries (unneeded ones are
logged and skipped), interpolates the 4-frame position table to 8 frames
(`interpolate_pos_embed`) and converts with ONE table (`TABLE`, `genrl_jax.reference.convert`
rules), which `flax_to_torch` reads backwards. Missing or misshaped needed entries are
one-line errors naming the torch key and both shapes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

from absl import logging
import jax.numpy as jnp
import numpy as np

from genrl_jax.reference import rules
from genrl_jax.reference import snapshot as snapshot_lib
from genrl_jax.vlm.internvideo2_model import InternVideo2Config, Params, SIZES, param_shapes


_V, _T = "vision_encoder.", "text_encoder.bert."


def _rules() -> tuple[rules.Rule, ...]:
  """Torch key <-> Flax path for every needed entry (keys as in the checkpoint)."""
  R, L = rules.Rule, rules.Layout  # pylint: disable=invalid-name
  lin, ln = rules.linear_rules, rules.layer_norm_rules
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
            + rules.prefixed(block, "blocks.{i}.", "blocks_{i}/")
            + rules.prefixed(pool, "clip_projector.", "clip_projector/"))
  layer = (lin("attention.self.query", "query") + lin("attention.self.key", "key")
           + lin("attention.self.value", "value")
           + lin("attention.output.dense", "attention_output")
           + ln("attention.output.LayerNorm", "attention_norm")
           + lin("intermediate.dense", "intermediate") + lin("output.dense", "output")
           + ln("output.LayerNorm", "output_norm"))
  text = (tuple(R(f"embeddings.{n}.weight", f"{n}/embedding") for n in
                ("word_embeddings", "position_embeddings", "token_type_embeddings"))
          + ln("embeddings.LayerNorm", "embeddings_norm")
          + rules.prefixed(layer, "encoder.layer.{i}.", "layer_{i}/"))
  return (rules.prefixed(vision, _V, "vision/") + rules.prefixed(text, _T, "text/")
          + lin("vision_proj", "vision_proj") + lin("text_proj", "text_proj"))


# Entries of the model that GenRL's embedding path never reads (README section 7); the
# checkpoint-only `temp` and `itm_head.*` lie outside the namespaces. BERT layers from
# `fusion_layer` on are unneeded too (`needed_keys`): which ones depends on the size.
UNNEEDED = (_V + "img_pos_embed", _V + "clip_pos_embed", _V + "clip_img_pos_embed",
            _V + "clip_decoder.", _V + "final_clip_decoder.", "text_encoder.cls.",
            _T + "embeddings.position_ids")
TABLE = rules.RuleTable(
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
    raise ValueError(f"config.vlm.internvideo2.size={size!r}: expected one of {sorted(SIZES)}")
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
  params = rules.torch_to_flax(arrays, TABLE)
  rules.check_params(params, param_shapes(config), TABLE)
  return params


def flax_to_torch(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `torch_to_flax` (same table): Flax params -> the needed torch entries
  (8-frame position table)."""
  return rules.flax_to_torch(params, TABLE)


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
