"""Table-driven conversion between torch state dicts and Flax params: the machinery.

A component is a `RuleTable`: the torch keys it owns (a namespace relative to a prefix) and
its `Rule`s, each a torch key pattern, the Flax param path it becomes and the layout change
of the array (`Layout`). The same table is read forwards (`torch_to_flax`) and backwards
(`flax_to_torch`), so the two directions cannot disagree; `check_params` compares converted
params with the shapes a model expects. The GenRL agent's tables are in
`genrl_jax.reference.convert`, InternVideo2's in `genrl_jax.vlm.internvideo2_convert`, and
CLIP's in `genrl_jax.vlm.clip_model`.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any, Iterable, Mapping

import numpy as np

Params = dict[str, Any]


class Layout(enum.Enum):
  """How an array changes between the torch and the Flax layout."""
  COPY = "copy"                # biases, LayerNorm weight (-> scale) and bias, buffers
  LINEAR = "linear"            # nn.Linear (out, in) -> Dense kernel (in, out)
  CONV = "conv"                # nn.Conv2d (O, I, kh, kw) -> Conv kernel (kh, kw, I, O)
  # nn.ConvTranspose2d (I, O, kh, kw) -> ConvTranspose(transpose_kernel=True) kernel
  # (kh, kw, O, I): the same axis permutation as CONV, named apart for readability.
  CONV_TRANSPOSE = "conv_transpose"
  CONV3D = "conv3d"            # nn.Conv3d (O, I, kt, kh, kw) -> Conv kernel (kt, kh, kw, I, O)


_TO_FLAX_AXES = {Layout.LINEAR: (1, 0), Layout.CONV: (2, 3, 1, 0),
                 Layout.CONV_TRANSPOSE: (2, 3, 1, 0), Layout.CONV3D: (2, 3, 4, 1, 0)}


def _check_rank(x: np.ndarray, layout: Layout, name: str) -> None:
  if layout is not Layout.COPY and x.ndim != len(_TO_FLAX_AXES[layout]):
    raise ValueError(f"{name}: a {layout.value} weight has {len(_TO_FLAX_AXES[layout])} axes, "
                     f"got shape {tuple(x.shape)}")


def to_flax_array(x: np.ndarray, layout: Layout, name: str = "array") -> np.ndarray:
  x = np.asarray(x)
  _check_rank(x, layout, name)
  if layout is Layout.COPY:
    return x.copy()
  return np.ascontiguousarray(np.transpose(x, _TO_FLAX_AXES[layout]))


def to_torch_array(x: np.ndarray, layout: Layout, name: str = "array") -> np.ndarray:
  x = np.asarray(x)
  _check_rank(x, layout, name)
  if layout is Layout.COPY:
    return x.copy()
  return np.ascontiguousarray(np.transpose(x, np.argsort(_TO_FLAX_AXES[layout])))


def torch_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
  """The torch-layout shape of a Flax-layout array of `shape`."""
  if layout is Layout.COPY:
    return tuple(shape)
  return tuple(shape[a] for a in np.argsort(_TO_FLAX_AXES[layout]))


@dataclasses.dataclass(frozen=True)
class Rule:
  """One torch key family <-> one Flax param path family.

  `torch` and `flax` are templates with at most one `{i}` placeholder (a layer index);
  `flax` is '/'-separated. The torch index is `stride * i + offset` (torch `Sequential`s
  interleave layers with norms and activations, e.g. encoder convs sit at 0, 3, 6, 9 and
  their norms at 1, 4, 7, 10), so both directions are exact inverses.
  """
  torch: str
  flax: str
  layout: Layout = Layout.COPY
  stride: int = 1
  offset: int = 0

  def __post_init__(self):
    if ("{i}" in self.torch) != ("{i}" in self.flax):
      raise ValueError(f"rule {self}: both templates must have an index placeholder, or none")

  @staticmethod
  def _regex(template: str) -> re.Pattern[str]:
    parts = template.split("{i}")
    return re.compile(r"(\d+)".join(re.escape(p) for p in parts))

  def match_torch(self, key: str) -> str | None:
    """The Flax path of a relative torch key, or None if the rule does not apply."""
    m = self._regex(self.torch).fullmatch(key)
    if m is None:
      return None
    if not m.groups():
      return self.flax
    t = int(m.group(1))
    if t < self.offset or (t - self.offset) % self.stride:
      return None
    return self.flax.format(i=(t - self.offset) // self.stride)

  def match_flax(self, path: str) -> str | None:
    """The relative torch key of a Flax path, or None if the rule does not apply."""
    m = self._regex(self.flax).fullmatch(path)
    if m is None:
      return None
    if not m.groups():
      return self.torch
    return self.torch.format(i=self.stride * int(m.group(1)) + self.offset)


def prefixed(rules: Iterable[Rule], torch_prefix: str, flax_prefix: str) -> tuple[Rule, ...]:
  """The same rules under a torch key prefix and a Flax path prefix (reuse of blocks)."""
  return tuple(dataclasses.replace(r, torch=torch_prefix + r.torch, flax=flax_prefix + r.flax)
               for r in rules)


def linear_rules(torch: str, flax: str, stride: int = 1, offset: int = 0) -> tuple[Rule, ...]:
  """nn.Linear `<torch>.weight/.bias` -> Dense `<flax>/kernel/bias`."""
  return (Rule(f"{torch}.weight", f"{flax}/kernel", Layout.LINEAR, stride, offset),
          Rule(f"{torch}.bias", f"{flax}/bias", Layout.COPY, stride, offset))


def layer_norm_rules(torch: str, flax: str, stride: int = 1, offset: int = 0
                     ) -> tuple[Rule, ...]:
  """nn.LayerNorm `<torch>.weight/.bias` -> LayerNorm `<flax>/scale/bias`."""
  return (Rule(f"{torch}.weight", f"{flax}/scale", Layout.COPY, stride, offset),
          Rule(f"{torch}.bias", f"{flax}/bias", Layout.COPY, stride, offset))



@dataclasses.dataclass(frozen=True)
class RuleTable:
  """A component: the torch keys it owns (relative to the caller's prefix) and its rules.

  A relative key is owned when it starts with one of `namespaces` and with none of
  `excluded` (sub-namespaces owned by another table). An owned key that no rule maps is an
  error, never silently dropped.
  """
  name: str
  namespaces: tuple[str, ...]
  rules: tuple[Rule, ...]
  excluded: tuple[str, ...] = ()

  def owns(self, key: str) -> bool:
    return key.startswith(self.namespaces) and not key.startswith(self.excluded)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for name, value in params.items():
    path = f"{prefix}{name}"
    if isinstance(value, Mapping):
      flat.update(flatten_params(value, path + "/"))
    else:
      flat[path] = value
  return flat


def _unflatten(flat: Mapping[str, Any]) -> Params:
  tree: Params = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def torch_to_flax(state_dict: Mapping[str, Any], table: RuleTable, prefix: str = ""
                  ) -> Params:
  """Converts the keys of `state_dict` that `table` owns (under `prefix`).

  Keys outside the table are ignored (they belong to other components); owned keys with
  no rule raise a ValueError naming them. Does not check for missing keys (see
  `check_params`). Returns a nested dict of numpy arrays in Flax layout.
  """
  flat, unknown = {}, []
  for key, value in state_dict.items():
    if not key.startswith(prefix) or not table.owns(key[len(prefix):]):
      continue
    rel = key[len(prefix):]
    for rule in table.rules:
      path = rule.match_torch(rel)
      if path is not None:
        flat[path] = to_flax_array(np.asarray(value), rule.layout, key)
        break
    else:
      unknown.append(key)
  if unknown:
    raise ValueError(f"{table.name}: no conversion rule for torch keys {sorted(unknown)}")
  return _unflatten(flat)


def _flax_rule(path: str, table: RuleTable) -> tuple[Rule, str] | tuple[None, None]:
  """The rule mapping a Flax path and the relative torch key it gives."""
  for rule in table.rules:
    key = rule.match_flax(path)
    if key is not None:
      return rule, key
  return None, None


def flax_to_torch(params: Mapping[str, Any], table: RuleTable, prefix: str = ""
                  ) -> dict[str, np.ndarray]:
  """Inverse of `torch_to_flax`: Flax params (or grads, same tree) -> torch-layout dict.

  Every leaf must be mapped by a rule (ValueError naming the unmapped paths).
  """
  out, unknown = {}, []
  for path, value in flatten_params(params).items():
    rule, key = _flax_rule(path, table)
    if rule is None:
      unknown.append(path)
    else:
      out[prefix + key] = to_torch_array(np.asarray(value), rule.layout, path)
  if unknown:
    raise ValueError(f"{table.name}: no conversion rule for Flax param paths {sorted(unknown)}")
  return out


def check_params(params: Mapping[str, Any], expected: Mapping[str, Any], table: RuleTable,
                 prefix: str = "") -> None:
  """Raises if `params` lacks a leaf of `expected` (KeyError naming the torch keys) or has
  a leaf of another shape (ValueError). `expected` may hold `jax.ShapeDtypeStruct`s."""
  have, want = flatten_params(params), flatten_params(expected)
  name = lambda path: f"{prefix}{_flax_rule(path, table)[1]}"
  missing = [name(p) for p in want if p not in have]
  if missing:
    raise KeyError(f"{table.name}: state dict is missing keys {sorted(missing)}")
  extra = [name(p) for p in have if p not in want]
  if extra:
    raise ValueError(f"{table.name}: state dict has keys the model does not: {sorted(extra)}")
  bad = [f"{name(p)}: {tuple(have[p].shape)} in Flax layout, expected {tuple(want[p].shape)}"
         for p in want if tuple(have[p].shape) != tuple(want[p].shape)]
  if bad:
    raise ValueError(f"{table.name}: shape mismatch: {bad}")
