"""The reference state-dict converter (`genrl_jax.reference.convert`) on the fixture agent."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import parity_fixtures as pf

pf.require_fixtures()
SIZES = pf.sizes()
N = SIZES.n_params  # key counts of the fixture agent's state dict, per part

from genrl_jax import world_model as wm_lib  # noqa: E402  (after the module-level skip)
from genrl_jax.reference import convert  # noqa: E402


def _state_dict() -> dict[str, np.ndarray]:
  return dict(pf.load_fixture("agent_state_dict").params)


def _world_model_keys(state_dict) -> list[str]:
  return list(convert.torch_keys(state_dict, convert.WORLD_MODEL, "wm."))


def test_world_model_keys_are_those_of_the_spec():
  keys = _world_model_keys(_state_dict())
  assert len(keys) == N["wm"]
  assert not any(k.startswith("wm.connector.") for k in keys)


def test_round_trip_torch_flax_torch():
  state_dict = _state_dict()
  back = convert.flax_world_model_to_torch(convert.torch_world_model_to_flax(state_dict))
  keys = _world_model_keys(state_dict)
  assert sorted(back) == sorted(keys)
  for key in keys:
    assert back[key].dtype == state_dict[key].dtype, key
    np.testing.assert_array_equal(back[key], state_dict[key], err_msg=key)


def test_converted_tree_matches_the_module():
  state_dict = _state_dict()
  sizes = convert.infer_world_model_sizes(state_dict, discrete=SIZES.discrete)
  # What the shapes say, checked against what the fixture's config JSON says.
  assert sizes == dict(action_dim=SIZES.action_dim, deter=SIZES.deter, hidden=SIZES.hidden,
                       cnn_depth=SIZES.cnn_depth, encoder_kernels=SIZES.encoder_kernels,
                       decoder_kernels=SIZES.decoder_kernels, mlp_units=SIZES.reward_units,
                       mlp_layers=SIZES.reward_layers,
                       single_obs_posterior=SIZES.single_obs_posterior, stoch=SIZES.stoch,
                       discrete=SIZES.discrete)
  params = convert.torch_world_model_to_flax(state_dict)
  model = wm_lib.WorldModel(**sizes)
  expected = jax.eval_shape(lambda k: wm_lib.init_world_model(model, k), jax.random.PRNGKey(0))
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert got.shape == want.shape


def test_layouts():
  state_dict = _state_dict()
  params = convert.torch_world_model_to_flax(state_dict)
  w = state_dict["wm.rssm._img_in.0.weight"]  # Linear (out, in)
  np.testing.assert_array_equal(params["rssm"]["img_in"]["dense"]["kernel"], w.T)
  w = state_dict["wm.encoder._conv_model.3.weight"]  # Conv2d (O, I, kh, kw)
  np.testing.assert_array_equal(params["encoder"]["conv1"]["kernel"], w.transpose(2, 3, 1, 0))
  w = state_dict["wm.heads.decoder._conv_model.9.weight"]  # ConvTranspose2d (I, O, kh, kw)
  np.testing.assert_array_equal(params["decoder"]["deconv3"]["kernel"], w.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["encoder"]["norm3"]["scale"],
                                state_dict["wm.encoder._conv_model.10.norm.weight"])
  np.testing.assert_array_equal(params["reward_head"]["layer1"]["norm"]["scale"],
                                state_dict["wm.heads.reward.norm1._layer.weight"])


@pytest.mark.parametrize("key", ["wm.rssm._obs_dist.bias",
                                 "wm.heads.decoder._conv_model.7.norm.weight",
                                 "wm.heads.reward._out._out.weight"])
def test_missing_key_raises_naming_it(key):
  state_dict = _state_dict()
  del state_dict[key]
  with pytest.raises(KeyError, match=key.replace(".", r"\.")):
    convert.torch_world_model_to_flax(state_dict)


def test_missing_key_needed_for_sizes_raises_naming_it():
  state_dict = _state_dict()
  del state_dict["wm.rssm._img_in.0.weight"]
  with pytest.raises(KeyError, match=r"wm\.rssm\._img_in\.0\.weight"):
    convert.torch_world_model_to_flax(state_dict)


@pytest.mark.parametrize("key", ["wm.rssm._ensemble_img_dist.1.weight",
                                 "wm.heads.discount.dense0.weight", "wm.encoder.extra_buffer"])
def test_unknown_key_raises_naming_it(key):
  state_dict = _state_dict()
  state_dict[key] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_world_model_to_flax(state_dict)


def test_extra_layer_raises_naming_it():
  # Matches a rule, but the model inferred from the other keys has no such layer.
  state_dict = _state_dict()
  key = f"wm.heads.reward.norm{SIZES.reward_layers}._layer.weight"
  state_dict[key] = np.zeros((SIZES.reward_units,), np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_world_model_to_flax(state_dict)


def test_wrong_shape_raises_naming_it():
  state_dict = _state_dict()
  key = "wm.rssm._obs_dist.bias"
  state_dict[key] = np.zeros((state_dict[key].shape[0] + 1,), np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_world_model_to_flax(state_dict)


def test_non_strict_converts_a_subset():
  fixture = pf.load_fixture("encoder")
  params = convert.torch_world_model_to_flax(fixture.params, strict=False)
  assert list(params) == ["encoder"]
  with pytest.raises(KeyError, match="missing key"):
    convert.torch_world_model_to_flax(fixture.params)


def test_unmapped_flax_path_raises():
  params = convert.torch_world_model_to_flax(_state_dict())
  params["rssm"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(ValueError, match="rssm/extra/kernel"):
    convert.flax_world_model_to_torch(params)


def test_other_prefix():
  state_dict = {"agent." + k: v for k, v in _state_dict().items()}
  params = convert.torch_world_model_to_flax(state_dict, prefix="agent.wm.")
  back = convert.flax_world_model_to_torch(params, prefix="agent.wm.")
  assert len(back) == N["wm"] and all(k.startswith("agent.wm.") for k in back)


# --- connector + aligner, and the whole `wm.*` (MFWM) ---------------------------------

from genrl_jax import aligner as aligner_lib  # noqa: E402
from genrl_jax import connector as connector_lib  # noqa: E402


def _wm_keys(state_dict) -> list[str]:
  return [k for k in state_dict if k.startswith("wm.")]


def test_connector_keys_are_those_of_the_spec():
  state_dict = _state_dict()
  keys = list(convert.torch_keys(state_dict, convert.CONNECTOR, "wm.connector."))
  assert len(keys) == N["connector"]
  assert sum(k.startswith("wm.connector.aligner.") for k in keys) == N["aligner"]
  assert len(_wm_keys(state_dict)) == N["wm"] + N["connector"]


def test_mfwm_round_trip_all_wm_keys():
  state_dict = _state_dict()
  params = convert.torch_mfwm_to_flax(state_dict)
  assert sorted(params) == ["aligner", "connector", "world_model"]
  back = convert.flax_mfwm_to_torch(params)
  keys = _wm_keys(state_dict)
  assert sorted(back) == sorted(keys)
  for key in keys:
    assert back[key].dtype == state_dict[key].dtype, key
    np.testing.assert_array_equal(back[key], state_dict[key], err_msg=key)


def test_connector_round_trip_and_parts():
  state_dict = _state_dict()
  params = convert.torch_connector_to_flax(state_dict)
  assert sorted(params) == ["aligner", "connector"]
  back = convert.flax_connector_to_torch(params)
  assert len(back) == N["connector"]
  for key, value in back.items():
    np.testing.assert_array_equal(value, state_dict[key], err_msg=key)
  # Either part alone (e.g. aligner gradients) converts back on its own.
  only_aligner = convert.flax_connector_to_torch({"aligner": params["aligner"]})
  assert len(only_aligner) == N["aligner"] and all(".aligner." in k for k in only_aligner)


def test_connector_tree_matches_the_modules():
  state_dict = _state_dict()
  sizes = convert.infer_connector_sizes(state_dict, discrete=SIZES.discrete)
  assert sizes == dict(embed_dim=SIZES.embed_dim, n_frames=SIZES.n_frames, deter=SIZES.deter,
                       hidden=SIZES.hidden, stoch=SIZES.stoch, discrete=SIZES.discrete)
  params = convert.torch_connector_to_flax(state_dict)
  connector = connector_lib.Connector(**sizes)
  aligner = aligner_lib.Aligner(embed_dim=SIZES.embed_dim)
  action = jax.numpy.zeros((1, SIZES.embed_dim + SIZES.n_frames))
  expected = {
      "connector": jax.eval_shape(lambda k: connector.init(k, action),
                                  jax.random.PRNGKey(0))["params"],
      "aligner": jax.eval_shape(lambda k: aligner.init(k, jax.numpy.zeros((1, SIZES.embed_dim))),
                                jax.random.PRNGKey(0))["params"]}
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert got.shape == want.shape


def test_connector_layouts():
  state_dict = _state_dict()
  params = convert.torch_connector_to_flax(state_dict)
  c, a = params["connector"], params["aligner"]
  p = "wm.connector."
  np.testing.assert_array_equal(c["rssm"]["img_in"]["dense"]["kernel"],
                                state_dict[p + "_img_in.0.weight"].T)
  np.testing.assert_array_equal(c["rssm"]["cell"]["dense"]["kernel"],
                                state_dict[p + "_cell._layer.weight"].T)
  np.testing.assert_array_equal(c["rssm"]["img_out"]["norm"]["scale"],
                                state_dict[p + "_ensemble_img_out.0.1._layer.weight"])
  np.testing.assert_array_equal(c["rssm"]["img_dist"]["bias"],
                                state_dict[p + "_ensemble_img_dist.0.bias"])
  for torch_i, flax_path in (("0", ("layer0", "dense", "kernel")),
                             ("3", ("layer1", "dense", "kernel")),
                             ("6", ("out", "kernel"))):
    leaf = c["initial_net"]
    for name in flax_path:
      leaf = leaf[name]
    np.testing.assert_array_equal(leaf, state_dict[f"{p}initial_state_pred.{torch_i}.weight"].T)
  np.testing.assert_array_equal(c["initial_net"]["layer1"]["norm"]["bias"],
                                state_dict[p + "initial_state_pred.4._layer.bias"])
  np.testing.assert_array_equal(a["up1"]["res_proj"]["kernel"],
                                state_dict[p + "aligner.up.1.res_proj.weight"].T)
  np.testing.assert_array_equal(a["mid0"]["norm"]["scale"],
                                state_dict[p + "aligner.mid.0.norm_layer._layer.weight"])
  assert "norm" not in a["up0"] and "res_proj" not in a["up0"]


@pytest.mark.parametrize("key", ["wm.connector._cell._norm.bias",
                                 "wm.connector.initial_state_pred.4._layer.weight",
                                 "wm.connector.aligner.up.1.res_proj.bias",
                                 "wm.connector.aligner.mid.1.norm_layer._layer.weight",
                                 "wm.rssm._obs_dist.bias"])
def test_mfwm_missing_key_raises_naming_it(key):
  state_dict = _state_dict()
  del state_dict[key]
  with pytest.raises(KeyError, match=key.replace(".", r"\.")):
    convert.torch_mfwm_to_flax(state_dict)


@pytest.mark.parametrize("key", ["wm.connector._obs_out.0.weight",  # deleted in the reference
                                 "wm.connector._ensemble_img_dist.1.weight",
                                 "wm.connector.aligner.down.0.extra",
                                 "wm.connector.clip_const",
                                 "wm.discount_head.weight"])
def test_mfwm_unknown_key_raises_naming_it(key):
  state_dict = _state_dict()
  state_dict[key] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_mfwm_to_flax(state_dict)


@pytest.mark.parametrize("key", ["wm.connector.aligner.up.2.layer.weight",
                                 "wm.connector.aligner.up.0.res_proj.bias"])
def test_connector_extra_layer_raises_naming_it(key):
  # Matches a rule, but the modules built from the inferred sizes have no such param.
  state_dict = _state_dict()
  d = SIZES.embed_dim
  state_dict[key] = np.zeros((d, d) if key.endswith("weight") else (d,), np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_connector_to_flax(state_dict)


def test_connector_wrong_rank_raises_naming_it():
  state_dict = _state_dict()
  key = "wm.connector.initial_state_pred.3.weight"
  state_dict[key] = np.zeros(state_dict[key].shape[:1], np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_connector_to_flax(state_dict)


def test_connector_wrong_shape_raises_naming_it():
  state_dict = _state_dict()
  key = "wm.connector.aligner.down.1.res_proj.weight"
  rows, cols = state_dict[key].shape
  state_dict[key] = np.zeros((rows, cols + 1), np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_connector_to_flax(state_dict)


def test_mfwm_ignores_other_components_and_unknown_parts():
  state_dict = _state_dict()
  assert any(k.startswith("_imag_behavior.") for k in state_dict)  # ignored, not an error
  params = convert.torch_mfwm_to_flax(state_dict)
  with pytest.raises(ValueError, match="behavior"):
    convert.flax_mfwm_to_torch({**params, "behavior": {}})
  with pytest.raises(ValueError, match="connector/extra/kernel"):
    convert.flax_connector_to_torch({"connector": {"extra": {"kernel": np.zeros((2, 2))}}})


# --- behaviours (`_imag_behavior.*`, `_acting_behavior.*`) and the whole agent ----------

from genrl_jax.behavior import actor_critic as ac_lib  # noqa: E402

IMAG = "_imag_behavior."


def _behavior_fixture_params() -> dict[str, np.ndarray]:
  """The `_imag_behavior.*` arrays of `actor_critic.npz`."""
  params = pf.load_fixture("actor_critic").params
  return {k: v for k, v in params.items() if k.startswith(IMAG)}


def _assert_same_tree(params, expected) -> None:
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for path, got in jax.tree_util.tree_leaves_with_path(params):
    want = expected
    for entry in path:
      want = want[entry.key]
    assert got.shape == want.shape, jax.tree_util.keystr(path)
    assert got.dtype == want.dtype, jax.tree_util.keystr(path)


def test_behavior_keys_are_those_of_each_behavior():
  state_dict = _state_dict()
  for prefix in convert.BEHAVIOR_PREFIXES:
    assert len(convert.torch_keys(state_dict, convert.BEHAVIOR, prefix)) == N["behavior"], prefix
  assert len(_behavior_fixture_params()) == N["behavior"]


def test_behavior_tree_matches_the_modules():
  state_dict = _behavior_fixture_params()
  sizes = convert.infer_behavior_sizes(state_dict, IMAG)
  assert sizes == dict(action_dim=SIZES.action_dim, feat_dim=SIZES.feat_dim,
                       actor_units=SIZES.actor_units, actor_layers=SIZES.actor_layers,
                       critic_units=SIZES.critic_units, critic_layers=SIZES.critic_layers)
  params = convert.torch_behavior_to_flax(state_dict)
  assert sorted(params) == ["actor", "critic", "return_ema", "target_critic"]
  expected = convert.behavior_param_shapes(sizes)
  _assert_same_tree(params, expected)
  # The same structure as our modules' own init (no hand-written expectation).
  feat = jax.numpy.zeros((1, SIZES.feat_dim))
  actor = ac_lib.Actor(SIZES.action_dim, SIZES.actor_units, SIZES.actor_layers).init(
      jax.random.PRNGKey(0), feat)["params"]
  critic = ac_lib.Critic(SIZES.critic_units, SIZES.critic_layers).init(
      jax.random.PRNGKey(0), feat)["params"]
  _assert_same_tree(params["actor"], actor)
  _assert_same_tree(params["critic"], critic)
  _assert_same_tree(params["target_critic"], critic)


@pytest.mark.parametrize("source,prefix", [("actor_critic", IMAG), ("agent_state_dict", IMAG),
                                           ("agent_state_dict", "_acting_behavior.")])
def test_behavior_round_trip_torch_flax_torch(source, prefix):
  state_dict = pf.load_fixture(source).params
  keys = list(convert.torch_keys(state_dict, convert.BEHAVIOR, prefix))
  back = convert.flax_behavior_to_torch(convert.torch_behavior_to_flax(state_dict, prefix),
                                        prefix)
  assert len(keys) == N["behavior"] and sorted(back) == sorted(keys)
  for key in keys:
    assert back[key].dtype == state_dict[key].dtype, key
    assert back[key].shape == state_dict[key].shape, key
    np.testing.assert_array_equal(back[key], state_dict[key], err_msg=key)


def test_behavior_layouts():
  state_dict = _behavior_fixture_params()
  params = convert.torch_behavior_to_flax(state_dict)
  a, c, t = params["actor"], params["critic"]["mlp"], params["target_critic"]["mlp"]
  np.testing.assert_array_equal(a["trunk"]["layer0"]["dense"]["kernel"],
                                state_dict[IMAG + "actor.dense0.weight"].T)
  np.testing.assert_array_equal(a["trunk"]["layer1"]["norm"]["scale"],
                                state_dict[IMAG + "actor.norm1._layer.weight"])
  np.testing.assert_array_equal(a["mean"]["kernel"], state_dict[IMAG + "actor._out._out.weight"].T)
  np.testing.assert_array_equal(a["std"]["bias"], state_dict[IMAG + "actor._out._std.bias"])
  np.testing.assert_array_equal(c["out"]["kernel"], state_dict[IMAG + "critic._out._out.weight"].T)
  np.testing.assert_array_equal(t["layer1"]["norm"]["bias"],
                                state_dict[IMAG + "_target_critic.norm1._layer.bias"])
  np.testing.assert_array_equal(params["return_ema"], state_dict[IMAG + "ema_vals"])


def test_parity_behavior_heads():
  fixture = pf.load_fixture("actor_critic")
  params = convert.torch_behavior_to_flax(fixture.params)
  sizes = convert.infer_behavior_sizes(fixture.params, IMAG)
  actor = ac_lib.Actor(sizes["action_dim"], sizes["actor_units"], sizes["actor_layers"])
  critic = ac_lib.Critic(sizes["critic_units"], sizes["critic_layers"])
  feat = fixture.inputs["feat"]
  mean, std = actor.apply({"params": params["actor"]}, feat)
  np.testing.assert_allclose(mean, fixture.outputs["actor_mean"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(std, fixture.outputs["actor_std"], **pf.TOL_SINGLE)
  logits = critic.apply({"params": params["critic"]}, feat)
  np.testing.assert_allclose(logits, fixture.outputs["critic_logits"], **pf.TOL_SINGLE)
  # The target critic starts as a copy of the critic (README section 2).
  slow = critic.apply({"params": params["target_critic"]}, feat)
  np.testing.assert_array_equal(slow, logits)


@pytest.mark.parametrize("key", ["actor._out._std.bias", "actor.norm1._layer.weight",
                                 "critic._out._out.bias", "_target_critic.dense1.weight",
                                 "ema_vals"])
def test_behavior_missing_key_raises_naming_it(key):
  state_dict = _state_dict()
  del state_dict[IMAG + key]
  with pytest.raises(KeyError, match=(IMAG + key).replace(".", r"\.")):
    convert.torch_behavior_to_flax(state_dict)


@pytest.mark.parametrize("key", ["actor.dense0.weight", "actor._out._out.weight",
                                 "critic.dense0.weight"])
def test_behavior_missing_key_needed_for_sizes_raises_naming_it(key):
  state_dict = _state_dict()
  del state_dict["_acting_behavior." + key]
  with pytest.raises(KeyError, match=("_acting_behavior." + key).replace(".", r"\.")):
    convert.torch_behavior_to_flax(state_dict, "_acting_behavior.")


@pytest.mark.parametrize("key", ["actor._out._scale.weight", "critic._out._std.weight",
                                 "reward_ema.range", "_target_critic.extra_buffer"])
def test_behavior_unknown_key_raises_naming_it(key):
  state_dict = _state_dict()
  state_dict[IMAG + key] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError, match=(IMAG + key).replace(".", r"\.")):
    convert.torch_behavior_to_flax(state_dict)


@pytest.mark.parametrize("part", ["_target_critic.dense", "actor.norm"])
def test_behavior_extra_layer_raises_naming_it(part):
  # Matches a rule, but the modules built from the inferred sizes have no such param.
  state_dict = _state_dict()
  layers, units = ((SIZES.critic_layers, SIZES.critic_units) if "critic" in part
                   else (SIZES.actor_layers, SIZES.actor_units))
  key, shape = ((f"{part}{layers}.weight", (units, units)) if part.endswith("dense")
                else (f"{part}{layers}._layer.bias", (units,)))
  state_dict[IMAG + key] = np.zeros(shape, np.float32)
  with pytest.raises(ValueError, match=(IMAG + key).replace(".", r"\.")):
    convert.torch_behavior_to_flax(state_dict)


@pytest.mark.parametrize("key,axis", [("ema_vals", 0), ("_target_critic._out._out.weight", 0),
                                      ("actor._out._std.bias", 0)])
def test_behavior_wrong_shape_raises_naming_it(key, axis):
  state_dict = _state_dict()
  shape = list(state_dict[IMAG + key].shape)
  shape[axis] += 1
  state_dict[IMAG + key] = np.zeros(shape, np.float32)
  with pytest.raises(ValueError, match=(IMAG + key).replace(".", r"\.")):
    convert.torch_behavior_to_flax(state_dict)


@pytest.mark.parametrize("key,axis,change,other", [
    ("critic.dense0.weight", 1, 2, "actor.dense0.weight"),  # feature size
    ("actor._out._std.weight", 0, -1, "actor._out._out.weight")])  # action size
def test_behavior_inconsistent_sizes_raise_naming_both_keys(key, axis, change, other):
  state_dict = _state_dict()
  shape = list(state_dict[IMAG + key].shape)
  shape[axis] += change
  state_dict[IMAG + key] = np.zeros(shape, np.float32)
  with pytest.raises(ValueError, match=(IMAG + key).replace(".", r"\.")) as info:
    convert.infer_behavior_sizes(state_dict, IMAG)
  assert IMAG + other in str(info.value)


def test_behavior_parts_and_unmapped_flax_path():
  params = convert.torch_behavior_to_flax(_state_dict())
  only_actor = convert.flax_behavior_to_torch({"actor": params["actor"]}, "_acting_behavior.")
  assert len(only_actor) == N["actor"]
  assert all(k.startswith("_acting_behavior.actor.") for k in only_actor)
  params["critic"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(ValueError, match="critic/extra/kernel"):
    convert.flax_behavior_to_torch(params)


def test_behavior_ignores_other_prefixes():
  # E.g. train.py's `_backup_acting_behavior` (README section 8) is not `_acting_behavior.`.
  state_dict = _state_dict()
  state_dict.update({"_backup" + k: v for k, v in state_dict.items()
                     if k.startswith("_acting_behavior.")})
  params = convert.torch_behavior_to_flax(state_dict, "_acting_behavior.")
  assert len(convert.flax_behavior_to_torch(params, "_acting_behavior.")) == N["behavior"]


def test_agent_state_dict_is_covered_by_the_tables():
  state_dict = _state_dict()
  assert len(state_dict) == N["total"]
  unmapped = convert.unmapped_agent_keys(state_dict)
  assert not unmapped, f"no table maps these agent keys: {unmapped}"
  # Each key belongs to exactly one (table, prefix).
  owners = {}
  for name, table in convert.TABLES.items():
    for prefix in convert.AGENT_PREFIXES[name]:
      for key in convert.torch_keys(state_dict, table, prefix):
        owners.setdefault(key, []).append(prefix)
  assert sorted(owners) == sorted(state_dict)
  shared = {k: v for k, v in owners.items() if len(v) > 1}
  assert not shared, f"keys owned by several tables: {shared}"
  counts = {}
  for prefixes in owners.values():
    counts[prefixes[0]] = counts.get(prefixes[0], 0) + 1
  assert counts == {"wm.": N["wm"], "wm.connector.": N["connector"],
                    "_acting_behavior.": N["behavior"], "_imag_behavior.": N["behavior"]}


def test_unmapped_agent_keys_lists_them():
  state_dict = _state_dict()
  extra = ["wm.heads.discount.dense0.weight", "_imag_behavior.actor._out._scale.weight",
           "reward_ema.range"]
  state_dict.update({k: np.zeros((3,), np.float32) for k in extra})
  assert convert.unmapped_agent_keys(state_dict) == extra
