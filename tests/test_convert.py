"""The reference state-dict converter (`genrl_jax.reference.convert`) on the fixture agent."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import parity_fixtures as pf

pf.require_fixtures()

from genrl_jax import world_model as wm_lib  # noqa: E402  (after the module-level skip)
from genrl_jax.reference import convert  # noqa: E402


def _state_dict() -> dict[str, np.ndarray]:
  return dict(pf.load_fixture("agent_state_dict").params)


def _world_model_keys(state_dict) -> list[str]:
  return list(convert.torch_keys(state_dict, convert.WORLD_MODEL, "wm."))


def test_world_model_keys_are_the_61_of_the_spec():
  keys = _world_model_keys(_state_dict())
  assert len(keys) == 61
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
  sizes = convert.infer_world_model_sizes(state_dict, discrete=8)
  assert sizes == dict(action_dim=6, deter=64, hidden=64, cnn_depth=8,
                       encoder_kernels=(4, 4, 4, 4), decoder_kernels=(5, 5, 6, 6),
                       mlp_units=64, mlp_layers=2, single_obs_posterior=True, stoch=8,
                       discrete=8)
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
  key = "wm.heads.reward.norm2._layer.weight"
  state_dict[key] = np.zeros((64,), np.float32)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.torch_world_model_to_flax(state_dict)


def test_wrong_shape_raises_naming_it():
  state_dict = _state_dict()
  key = "wm.rssm._obs_dist.bias"
  state_dict[key] = np.zeros((65,), np.float32)
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
  assert len(back) == 61 and all(k.startswith("agent.wm.") for k in back)
