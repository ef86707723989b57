"""The GenRL agent's conversion tables: the reference PyTorch state dict <-> our Flax params
(the rule machinery they use is `genrl_jax.reference.rules`).

The reference (github.com/mazpie/genrl) stores an agent as a `GenRLAgent.state_dict()`
with keys such as `wm.encoder._conv_model.0.weight` in torch layouts (method.md §11).
Every mapping lives in one table of `Rule`s: a torch key pattern (relative to a prefix),
the Flax param path it becomes, and the layout change of the array. The same table is
read forwards (torch -> Flax) and backwards (Flax -> torch), so the two directions cannot
disagree.

Extension point: a component is a `RuleTable` (a namespace of torch keys plus its rules).
`WORLD_MODEL` covers `wm.{encoder,rssm,heads.decoder,heads.reward}`; `CONNECTOR` covers
`wm.connector.*` (prior-only RSSM, `initial_state_pred`, `aligner`) and gives our
`{'connector', 'aligner'}` params. `torch_mfwm_to_flax` converts all `wm.*` keys (world
model + connector + aligner) at once. `BEHAVIOR` covers one `ActorCritic` (relative to
`_imag_behavior.` or `_acting_behavior.`, which have the same structure: actor, critic,
`_target_critic`, buffer `ema_vals`), built from the same blocks (`mlp_rules`, `_linear`,
`prefixed`), and gives our `{'actor', 'critic', 'target_critic', 'return_ema'}` params
(`torch_behavior_to_flax` / `flax_behavior_to_torch`). `TABLES` and `AGENT_PREFIXES` say
where each table sits in a `GenRLAgent.state_dict()`; `unmapped_agent_keys` lists the keys
of a whole agent that no table maps.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from genrl_jax import aligner as aligner_lib
from genrl_jax import connector as connector_lib
from genrl_jax import world_model
from genrl_jax.behavior import actor_critic
from genrl_jax.reference.rules import (Layout, Params, Rule, RuleTable, check_params,
                                       flax_to_torch, layer_norm_rules, linear_rules, prefixed,
                                       torch_to_flax)


def _dense_norm(torch: str, flax: str) -> tuple[Rule, ...]:
  """A reference `Sequential(Linear, NormLayer)` -> our `DenseNormAct` (`dense`, `norm`)."""
  return linear_rules(f"{torch}.0", f"{flax}/dense") + layer_norm_rules(f"{torch}.1._layer", f"{flax}/norm")


def rssm_prior_rules() -> tuple[Rule, ...]:
  """Prior half of `EnsembleRSSM` (ensemble member 0) -> our `RSSM` (shared with the
  connector, which has no posterior layers)."""
  return (_dense_norm("_img_in", "img_in")
          + (Rule("_cell._layer.weight", "cell/dense/kernel", Layout.LINEAR),)
          + layer_norm_rules("_cell._norm", "cell/norm")
          + _dense_norm("_ensemble_img_out.0", "img_out")
          + linear_rules("_ensemble_img_dist.0", "img_dist"))


def rssm_posterior_rules() -> tuple[Rule, ...]:
  """Posterior layers of the world-model RSSM."""
  return _dense_norm("_obs_out", "obs_out") + linear_rules("_obs_dist", "obs_dist")


def mlp_rules(out_layer: bool = True) -> tuple[Rule, ...]:
  """Reference `MLP` (`dense{i}`, `norm{i}._layer`, `_out._out`) -> our `MLP`
  (`layer{i}/dense`, `layer{i}/norm`, `out`): reward head and critics; the actor uses the
  trunk alone (`out_layer=False`) and adds its own heads (`actor_rules`)."""
  rules = linear_rules("dense{i}", "layer{i}/dense") + layer_norm_rules("norm{i}._layer", "layer{i}/norm")
  return rules + (linear_rules("_out._out", "out") if out_layer else ())


def encoder_rules() -> tuple[Rule, ...]:
  """`_conv_model.{3i}` = Conv2d, `.{3i+1}.norm` = ImgChLayerNorm (`3i+2` is the SiLU)."""
  return (Rule("_conv_model.{i}.weight", "conv{i}/kernel", Layout.CONV, 3, 0),
          Rule("_conv_model.{i}.bias", "conv{i}/bias", Layout.COPY, 3, 0)
          ) + layer_norm_rules("_conv_model.{i}.norm", "norm{i}", 3, 1)


def decoder_rules() -> tuple[Rule, ...]:
  """`_conv_in.0` = Linear, `_conv_model.{3i}` = ConvTranspose2d, `.{3i+1}.norm` = LN (the
  last block's norm is an identity without params)."""
  return (linear_rules("_conv_in.0", "conv_in")
          + (Rule("_conv_model.{i}.weight", "deconv{i}/kernel", Layout.CONV_TRANSPOSE, 3, 0),
             Rule("_conv_model.{i}.bias", "deconv{i}/bias", Layout.COPY, 3, 0))
          + layer_norm_rules("_conv_model.{i}.norm", "norm{i}", 3, 1))


# Keys relative to `wm.`; Flax paths of `WorldModel` params.
WORLD_MODEL = RuleTable(
    name="world model",
    namespaces=("encoder.", "rssm.", "heads."),
    rules=(prefixed(encoder_rules(), "encoder.", "encoder/")
           + prefixed(rssm_prior_rules() + rssm_posterior_rules(), "rssm.", "rssm/")
           + prefixed(decoder_rules(), "heads.decoder.", "decoder/")
           + prefixed(mlp_rules(), "heads.reward.", "reward_head/")),
    # `wm.connector.*` belongs to the connector table, not to the WM.
    excluded=("connector.",))


def initial_state_rules() -> tuple[Rule, ...]:
  """`VideoSSM.initial_state_pred` = Sequential(Linear, NormLayer, SiLU, Linear, NormLayer,
  SiLU, Linear) -> our `MLP(hidden, 2, out=deter)` (`layer{0,1}/{dense,norm}`, `out`)."""
  return (linear_rules("initial_state_pred.0", "layer0/dense")
          + layer_norm_rules("initial_state_pred.1._layer", "layer0/norm")
          + linear_rules("initial_state_pred.3", "layer1/dense")
          + layer_norm_rules("initial_state_pred.4._layer", "layer1/norm")
          + linear_rules("initial_state_pred.6", "out"))


def aligner_rules() -> tuple[Rule, ...]:
  """`UNetDenoiser` `{down,mid,up}.{i}` `ResidualLinear`s (`layer`, `norm_layer._layer`,
  `res_proj`) -> our `Aligner` `{down,mid,up}{i}/{layer,norm,res_proj}` (a block without a
  norm (`up.0`) or with an identity residual simply has no such keys)."""
  rules: tuple[Rule, ...] = ()
  for group in ("down", "mid", "up"):
    rules += (linear_rules(f"{group}.{{i}}.layer", f"{group}{{i}}/layer")
              + layer_norm_rules(f"{group}.{{i}}.norm_layer._layer", f"{group}{{i}}/norm")
              + linear_rules(f"{group}.{{i}}.res_proj", f"{group}{{i}}/res_proj"))
  return rules


# Keys relative to `wm.connector.` (every key there is owned: the reference deletes the
# posterior layers `_obs_out`/`_obs_dist`, so finding them is an error); Flax paths of the
# `{'connector': Connector params, 'aligner': Aligner params}` tree.
CONNECTOR = RuleTable(
    name="connector",
    namespaces=("",),
    rules=(prefixed(rssm_prior_rules(), "", "connector/rssm/")
           + prefixed(initial_state_rules(), "", "connector/initial_net/")
           + prefixed(aligner_rules(), "aligner.", "aligner/")))


# --- world model ----------------------------------------------------------------------


def _get(state_dict: Mapping[str, Any], key: str) -> np.ndarray:
  if key not in state_dict:
    raise KeyError(f"state dict is missing key {key!r} (needed to infer the model sizes)")
  return np.asarray(state_dict[key])


def _indexed(state_dict: Mapping[str, Any], template: str, stride: int = 1,
             offset: int = 0) -> list[np.ndarray]:
  """Arrays at `template.format(i=stride*i+offset)` for i = 0, 1, ... while present (at
  least one: KeyError naming the first key otherwise)."""
  out = [_get(state_dict, template.format(i=offset))]
  while (key := template.format(i=stride * len(out) + offset)) in state_dict:
    out.append(np.asarray(state_dict[key]))
  return out


def _with_stoch(sizes: dict[str, Any], stoch_flat: int, discrete: int | None
                ) -> dict[str, Any]:
  """Adds `stoch, discrete` (or `stoch_flat` when `discrete` is unknown) to `sizes`."""
  if discrete is None:
    return dict(sizes, stoch_flat=stoch_flat)
  if stoch_flat % discrete:
    raise ValueError(f"stoch * discrete = {stoch_flat} is not divisible by discrete={discrete}")
  return dict(sizes, stoch=stoch_flat // discrete, discrete=discrete)


def _module_kwargs(sizes: Mapping[str, Any]) -> dict[str, Any]:
  """Module fields from inferred sizes; `stoch_flat` alone stands in as `stoch x 1`."""
  kwargs = dict(sizes)
  if "stoch_flat" in kwargs:
    kwargs.update(stoch=kwargs.pop("stoch_flat"), discrete=1)
  return kwargs


def infer_world_model_sizes(state_dict: Mapping[str, Any], prefix: str = "wm.",
                            discrete: int | None = None) -> dict[str, Any]:
  """`WorldModel` constructor arguments read off the parameter shapes.

  The shapes only give `stoch * discrete`: pass `discrete` (the reference default is 32,
  the fixtures use 8) to get `stoch` and `discrete`; without it the result has
  `stoch_flat` instead (enough for shapes: `WorldModel(stoch=stoch_flat, discrete=1)` has
  the same params). Assumes 64x64 images (embed = 32 * cnn_depth).
  """
  p = prefix
  enc = _indexed(state_dict, p + "encoder._conv_model.{i}.weight", 3)
  dec = _indexed(state_dict, p + "heads.decoder._conv_model.{i}.weight", 3)
  depth = enc[0].shape[0]
  deter = _get(state_dict, p + "rssm._cell._layer.weight").shape[0] // 3
  img_in = _get(state_dict, p + "rssm._img_in.0.weight")
  stoch_flat = _get(state_dict, p + "rssm._ensemble_img_dist.0.weight").shape[0]
  reward = _indexed(state_dict, p + "heads.reward.dense{i}.weight")
  embed = 32 * depth
  obs_in = _get(state_dict, p + "rssm._obs_out.0.weight").shape[1]
  if obs_in not in (embed, embed + deter):
    raise ValueError(f"{p}rssm._obs_out.0.weight takes {obs_in} inputs; expected the embed "
                     f"({embed}) or deter + embed ({embed + deter})")
  sizes = dict(action_dim=img_in.shape[1] - stoch_flat, deter=deter, hidden=img_in.shape[0],
               cnn_depth=depth, encoder_kernels=tuple(w.shape[-1] for w in enc),
               decoder_kernels=tuple(w.shape[-1] for w in dec),
               mlp_units=reward[0].shape[0], mlp_layers=len(reward),
               single_obs_posterior=obs_in == embed)
  return _with_stoch(sizes, stoch_flat, discrete)


def world_model_param_shapes(sizes: Mapping[str, Any]) -> Params:
  """Param shapes (`jax.ShapeDtypeStruct`s) of the `WorldModel` with these sizes."""
  kwargs = _module_kwargs(sizes)
  model = world_model.WorldModel(**kwargs)
  return jax.eval_shape(lambda k: world_model.init_world_model(model, k), jax.random.PRNGKey(0))


def torch_world_model_to_flax(state_dict: Mapping[str, Any], prefix: str = "wm.",
                              strict: bool = True) -> Params:
  """Reference `wm.{encoder,rssm,heads.decoder,heads.reward}.*` -> `WorldModel` params.

  Args:
    state_dict: torch key -> array (torch layout; numpy or anything `np.asarray` takes).
      Keys outside `prefix` and the connector (`<prefix>connector.*`) are ignored.
    prefix: where the world model sits in the state dict ('wm.' in a `GenRLAgent`).
    strict: also require every world-model param (KeyError naming the missing torch
      keys) and check shapes against a `WorldModel` built from the inferred sizes.
      `strict=False` converts a subset (e.g. a fixture holding only the encoder).
  Returns:
    `{'encoder', 'rssm', 'decoder', 'reward_head'}` tree of float numpy arrays.
  Raises:
    ValueError naming world-model keys that no rule maps (e.g. a second ensemble member).
  """
  params = torch_to_flax(state_dict, WORLD_MODEL, prefix)
  if strict:
    expected = world_model_param_shapes(infer_world_model_sizes(state_dict, prefix))
    check_params(params, expected, WORLD_MODEL, prefix)
  return params


def flax_world_model_to_torch(params: Mapping[str, Any], prefix: str = "wm."
                              ) -> dict[str, np.ndarray]:
  """`WorldModel` params (or a gradient tree of the same structure) -> torch state dict
  entries under `prefix`, in torch layouts."""
  return flax_to_torch(params, WORLD_MODEL, prefix)


# --- connector and aligner ------------------------------------------------------------


def infer_connector_sizes(state_dict: Mapping[str, Any], prefix: str = "wm.connector.",
                          discrete: int | None = None) -> dict[str, Any]:
  """`Connector` constructor arguments read off the parameter shapes.

  As for the world model, the shapes only give `stoch * discrete`: pass `discrete` to get
  `stoch` and `discrete`, else the result has `stoch_flat`. `embed_dim` comes from the
  aligner's first layer, `n_frames` = initial-state input width - `embed_dim`.
  """
  p = prefix
  deter = _get(state_dict, p + "_cell._layer.weight").shape[0] // 3
  img_in = _get(state_dict, p + "_img_in.0.weight")
  stoch_flat = _get(state_dict, p + "_ensemble_img_dist.0.weight").shape[0]
  action_dim = _get(state_dict, p + "initial_state_pred.0.weight").shape[1]
  embed_dim = _get(state_dict, p + "aligner.down.0.layer.weight").shape[1]
  if img_in.shape[1] != stoch_flat + action_dim:
    raise ValueError(f"{p}_img_in.0.weight takes {img_in.shape[1]} inputs; expected stoch "
                     f"({stoch_flat}) + embedding-action ({action_dim}) = "
                     f"{stoch_flat + action_dim}")
  if action_dim < embed_dim:
    raise ValueError(f"{p}initial_state_pred.0.weight takes {action_dim} inputs, fewer than "
                     f"the aligner's embedding dim {embed_dim}")
  sizes = dict(embed_dim=embed_dim, n_frames=action_dim - embed_dim, deter=deter,
               hidden=img_in.shape[0])
  return _with_stoch(sizes, stoch_flat, discrete)


def connector_param_shapes(sizes: Mapping[str, Any]) -> Params:
  """`{'connector', 'aligner'}` param shapes (`jax.ShapeDtypeStruct`s) for these sizes."""
  kwargs = _module_kwargs(sizes)
  connector = connector_lib.Connector(**kwargs)
  aligner = aligner_lib.Aligner(embed_dim=connector.embed_dim)

  def init(key):
    k1, k2 = jax.random.split(key)
    return {"connector": connector.init(k1, jax.numpy.zeros((1, connector.action_dim)))["params"],
            "aligner": aligner.init(k2, jax.numpy.zeros((1, connector.embed_dim)))["params"]}

  return jax.eval_shape(init, jax.random.PRNGKey(0))


def torch_connector_to_flax(state_dict: Mapping[str, Any], prefix: str = "wm.connector.",
                            strict: bool = True) -> Params:
  """Reference `wm.connector.*` (`VideoSSM` incl. `initial_state_pred` and `aligner`) ->
  `{'connector': Connector params, 'aligner': Aligner params}`.

  Keys outside `prefix` are ignored; every key under it must be mapped (ValueError naming
  the others). `strict` also requires every param (KeyError naming the missing torch keys)
  and checks the shapes against modules built from the inferred sizes.
  """
  params = torch_to_flax(state_dict, CONNECTOR, prefix)
  if strict:
    expected = connector_param_shapes(infer_connector_sizes(state_dict, prefix))
    check_params(params, expected, CONNECTOR, prefix)
  return params


def flax_connector_to_torch(params: Mapping[str, Any], prefix: str = "wm.connector."
                            ) -> dict[str, np.ndarray]:
  """`{'connector', 'aligner'}` params (or gradients; either part may be left out) ->
  torch state dict entries under `prefix`, in torch layouts."""
  return flax_to_torch(params, CONNECTOR, prefix)


# --- whole multimodal-foundation world model (`wm.*`) ----------------------------------

MFWM_PARTS = ("world_model", "connector", "aligner")


def torch_mfwm_to_flax(state_dict: Mapping[str, Any], prefix: str = "wm.",
                       strict: bool = True) -> Params:
  """All reference `wm.*` keys -> `{'world_model', 'connector', 'aligner'}`.

  Keys outside `prefix` (e.g. the behaviours) are ignored; a key under `prefix` that
  belongs to neither the world model nor the connector raises a ValueError naming it.
  `strict` as in `torch_world_model_to_flax` / `torch_connector_to_flax` (missing keys
  raise a KeyError naming them).
  """
  foreign = [k for k in state_dict if k.startswith(prefix)
             and not WORLD_MODEL.owns(k[len(prefix):])
             and not k[len(prefix):].startswith("connector.")]
  if foreign:
    raise ValueError(f"no conversion rule for torch keys {sorted(foreign)} (neither world "
                     f"model {list(WORLD_MODEL.namespaces)} nor connector)")
  params = {"world_model": torch_world_model_to_flax(state_dict, prefix, strict)}
  params.update(torch_connector_to_flax(state_dict, prefix + "connector.", strict))
  return params


def flax_mfwm_to_torch(params: Mapping[str, Any], prefix: str = "wm."
                       ) -> dict[str, np.ndarray]:
  """Inverse of `torch_mfwm_to_flax` (params or gradients; parts may be left out)."""
  unknown = sorted(set(params) - set(MFWM_PARTS))
  if unknown:
    raise ValueError(f"unknown parts {unknown}; expected a subset of {list(MFWM_PARTS)}")
  out = {}
  if "world_model" in params:
    out.update(flax_world_model_to_torch(params["world_model"], prefix))
  rest = {k: params[k] for k in ("connector", "aligner") if k in params}
  if rest:
    out.update(flax_connector_to_torch(rest, prefix + "connector."))
  return out


# --- behaviours (`_imag_behavior.*`, `_acting_behavior.*`) -----------------------------

BEHAVIOR_PREFIXES = ("_imag_behavior.", "_acting_behavior.")


def actor_rules() -> tuple[Rule, ...]:
  """Reference actor `MLP` with a `normal` `DistLayer` -> our `Actor`: the trunk is an
  `MLP` without output layer, `_out._out` is the mean head, `_out._std` the std head."""
  return (prefixed(mlp_rules(out_layer=False), "", "trunk/")
          + linear_rules("_out._out", "mean") + linear_rules("_out._std", "std"))


# Keys relative to a behaviour prefix (every key there is owned, so an unknown one is an
# error); Flax paths of the `{'actor', 'critic', 'target_critic', 'return_ema'}` tree. The
# critics are twohot `MLP`s like the reward head; `ema_vals` is the `RewardEMA` buffer.
BEHAVIOR = RuleTable(
    name="behavior",
    namespaces=("",),
    rules=(prefixed(actor_rules(), "actor.", "actor/")
           + prefixed(mlp_rules(), "critic.", "critic/mlp/")
           + prefixed(mlp_rules(), "_target_critic.", "target_critic/mlp/")
           + (Rule("ema_vals", "return_ema"),)))


def infer_behavior_sizes(state_dict: Mapping[str, Any], prefix: str = "_imag_behavior."
                         ) -> dict[str, Any]:
  """Actor and critic sizes read off the parameter shapes.

  Returns `{'action_dim', 'feat_dim', 'actor_units', 'actor_layers', 'critic_units',
  'critic_layers'}`. Raises KeyError naming a missing key the sizes need, ValueError when
  the actor and critic disagree on the feature width or the actor's heads disagree.
  The target critic is not read: `check_params` holds it to the critic's shapes.
  """
  p = prefix
  actor = _indexed(state_dict, p + "actor.dense{i}.weight")
  critic = _indexed(state_dict, p + "critic.dense{i}.weight")
  mean = _get(state_dict, p + "actor._out._out.weight")
  std = _get(state_dict, p + "actor._out._std.weight")
  if mean.shape[0] != std.shape[0]:
    raise ValueError(f"{p}actor._out._out.weight has {mean.shape[0]} outputs but "
                     f"{p}actor._out._std.weight has {std.shape[0]}: the mean and std heads "
                     f"must give one value per action dim")
  feat_dim = actor[0].shape[1]
  if critic[0].shape[1] != feat_dim:
    raise ValueError(f"{p}critic.dense0.weight takes {critic[0].shape[1]} inputs but "
                     f"{p}actor.dense0.weight takes {feat_dim}: actor and critic read the "
                     f"same feature")
  return dict(action_dim=mean.shape[0], feat_dim=feat_dim, actor_units=actor[0].shape[0],
              actor_layers=len(actor), critic_units=critic[0].shape[0],
              critic_layers=len(critic))


def behavior_param_shapes(sizes: Mapping[str, Any]) -> Params:
  """`{'actor', 'critic', 'target_critic', 'return_ema'}` param shapes
  (`jax.ShapeDtypeStruct`s) of the actor-critic with these sizes."""
  actor = actor_critic.Actor(sizes["action_dim"], sizes["actor_units"], sizes["actor_layers"])
  critic = actor_critic.Critic(sizes["critic_units"], sizes["critic_layers"])

  def init(key):
    k1, k2 = jax.random.split(key)
    feat = jax.numpy.zeros((1, sizes["feat_dim"]))
    critic_params = critic.init(k2, feat)["params"]
    return {"actor": actor.init(k1, feat)["params"], "critic": critic_params,
            "target_critic": critic_params,
            "return_ema": jax.numpy.zeros((2,), jax.numpy.float32)}

  return jax.eval_shape(init, jax.random.PRNGKey(0))


def torch_behavior_to_flax(state_dict: Mapping[str, Any], prefix: str = "_imag_behavior.",
                           strict: bool = True) -> Params:
  """Reference `ActorCritic` keys under `prefix` -> `{'actor', 'critic', 'target_critic',
  'return_ema'}` (numpy arrays, Flax layouts; `return_ema` is the `ema_vals` buffer (2,)).

  Args:
    state_dict: torch key -> array (torch layout). Keys outside `prefix` are ignored.
    prefix: '_imag_behavior.' (the behaviour trained in imagination on the prompt) or
      '_acting_behavior.' (same structure) in a `GenRLAgent`.
    strict: also require every param (KeyError naming the missing torch keys) and check
      shapes against an `Actor`/`Critic` built from the inferred sizes.
  Raises:
    ValueError naming keys under `prefix` that no rule maps.
  """
  params = torch_to_flax(state_dict, BEHAVIOR, prefix)
  if strict:
    expected = behavior_param_shapes(infer_behavior_sizes(state_dict, prefix))
    check_params(params, expected, BEHAVIOR, prefix)
  return params


def flax_behavior_to_torch(params: Mapping[str, Any], prefix: str = "_imag_behavior."
                           ) -> dict[str, np.ndarray]:
  """Inverse of `torch_behavior_to_flax` (params or gradients; parts may be left out, e.g.
  `{'actor': grads}`) -> torch state dict entries under `prefix`, in torch layouts."""
  return flax_to_torch(params, BEHAVIOR, prefix)


# Registry of the component tables, and where each sits in a `GenRLAgent.state_dict()`
# (keys relative to these prefixes).
TABLES: dict[str, RuleTable] = {"world_model": WORLD_MODEL, "connector": CONNECTOR,
                                "behavior": BEHAVIOR}
AGENT_PREFIXES: dict[str, tuple[str, ...]] = {"world_model": ("wm.",),
                                              "connector": ("wm.connector.",),
                                              "behavior": BEHAVIOR_PREFIXES}


def torch_keys(state_dict: Mapping[str, Any], table: RuleTable, prefix: str = ""
               ) -> Sequence[str]:
  """The keys of `state_dict` that `table` owns under `prefix`, in their original order."""
  return [k for k in state_dict if k.startswith(prefix) and table.owns(k[len(prefix):])]


def unmapped_agent_keys(state_dict: Mapping[str, Any]) -> list[str]:
  """Keys of a `GenRLAgent.state_dict()` that no table of `TABLES` (at its
  `AGENT_PREFIXES`) maps to a Flax param, in their original order (empty for a complete
  conversion)."""
  def mapped(key: str) -> bool:
    for name, table in TABLES.items():
      for prefix in AGENT_PREFIXES[name]:
        rel = key[len(prefix):]
        if (key.startswith(prefix) and table.owns(rel)
            and any(rule.match_torch(rel) is not None for rule in table.rules)):
          return True
    return False

  return [k for k in state_dict if not mapped(k)]
