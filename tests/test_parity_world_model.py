"""Parity of the world model with the GenRL PyTorch reference fixtures.

Each test loads a fixture written by the original code (README of the fixture directory),
converts its `param/` arrays with `genrl_jax.reference.convert`, runs our module on the
stored inputs and compares with the stored outputs using the README section 7 tolerances.
Reference images are NCHW `(B, T, 3, 64, 64)`; ours are NHWC, so images are transposed at
the boundary.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import parity_fixtures as pf

pf.require_fixtures()

from genrl_jax import dists  # noqa: E402  (after the module-level skip)
from genrl_jax import rssm as rssm_lib  # noqa: E402
from genrl_jax import world_model as wm_lib  # noqa: E402
from genrl_jax.reference import convert  # noqa: E402
from genrl_jax.train import optimizer as opt_lib  # noqa: E402

WM_KL = pf.kl("kl")
CONNECTOR_KL = pf.kl("connector_kl")
MODEL_OPT = pf.optimizer("model_opt")
SIZES = pf.sizes()


@functools.lru_cache(maxsize=None)
def _model() -> wm_lib.WorldModel:
  """The fixtures' small world model, sizes read off the agent's state dict."""
  state_dict = pf.load_fixture("agent_state_dict").params
  return wm_lib.WorldModel(**convert.infer_world_model_sizes(state_dict,
                                                            discrete=SIZES.discrete))


def _params(name: str) -> dict:
  """World-model params of fixture `name` (a subset of the model: `strict=False`)."""
  return convert.torch_world_model_to_flax(pf.load_fixture(name).params, strict=False)


def _apply(params: dict, method, *args):
  return _model().apply({"params": params}, *args, method=method)


def _assert_stoch_equal(actual, desired, err_msg: str = "") -> None:
  # One-hot values must be bit-exact (README section 7; argmax margins >= 1e-4).
  np.testing.assert_array_equal(np.asarray(actual), desired, err_msg=err_msg)


# --- encoder --------------------------------------------------------------------------


def test_parity_encoder():
  fx = pf.load_fixture("encoder")
  params = _params("encoder")
  obs = pf.nchw_to_nhwc(fx.inputs["observation"])  # (B, T, 64, 64, 3) uint8

  pre = wm_lib.preprocess_image(obs[0, :2])
  np.testing.assert_allclose(pf.nhwc_to_nchw(pre)[None],
                             fx.outputs["preprocessed_observation_b0_t01"],
                             **pf.TOL_PREPROCESS)

  embed, state = jax.jit(lambda p, o: _model().apply(
      {"params": p}, o, method=wm_lib.WorldModel.encode, capture_intermediates=True))(params, obs)
  np.testing.assert_allclose(embed, fx.outputs["embed"], **pf.TOL_SINGLE)

  # Frames are flattened batch-major, so rows 0 and 1 are (b=0, t=0) and (b=0, t=1).
  inter = state["intermediates"]["encoder"]
  for i in range(4):
    act = jax.nn.silu(inter[f"norm{i}"]["__call__"][0][:2])
    np.testing.assert_allclose(pf.nhwc_to_nchw(act), fx.outputs[f"block{i}_act_b0_t01"],
                               **pf.TOL_SINGLE, err_msg=f"block {i}")


# --- decoder --------------------------------------------------------------------------


def test_parity_decoder():
  fx = pf.load_fixture("decoder")
  params = _params("decoder")
  x = fx.inputs["decoder_input"]  # (B, T, S*K): one-hot stoch, then Gaussian values

  project = jax.jit(lambda p, v: _apply(p, wm_lib.WorldModel.project, v))(params, x)
  np.testing.assert_allclose(project, fx.outputs["conv_in0"], **pf.TOL_SINGLE)

  image = jax.jit(lambda p, v: _apply(p, wm_lib.WorldModel.decode, v))(params, x)
  assert image.shape == pf.nchw_to_nhwc(fx.outputs["image_mean"]).shape
  np.testing.assert_allclose(pf.nhwc_to_nchw(image), fx.outputs["image_mean"], **pf.TOL_IMAGE)

  target = wm_lib.preprocess_image(pf.nchw_to_nhwc(fx.inputs["target_observation"]))
  log_prob = dists.mse_log_prob(image, target)
  np.testing.assert_allclose(log_prob, fx.outputs["log_prob"], **pf.TOL_IMAGE_LOG_PROB)


# --- RSSM -----------------------------------------------------------------------------


def _rssm_apply(params, method, *args):
  return _model().rssm_def().apply({"params": params}, *args, method=method)


def test_parity_rssm_img_step():
  fx = pf.load_fixture("rssm")
  params = _params("rssm")["rssm"]
  prev = {"deter": fx.inputs["img_prev_deter"], "stoch": fx.inputs["img_prev_stoch"]}
  out = _rssm_apply(params, rssm_lib.RSSM.img_step, prev, fx.inputs["img_action"], None)
  np.testing.assert_allclose(out["deter"], fx.outputs["img_deter"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(out["logit"], fx.outputs["img_logit"], **pf.TOL_SINGLE)
  _assert_stoch_equal(out["stoch"], fx.outputs["img_stoch"])


def test_parity_rssm_obs_step():
  fx = pf.load_fixture("rssm")
  params = _params("rssm")["rssm"]
  prev = {k: fx.inputs[f"obs_prev_{k}"] for k in ("deter", "stoch", "logit")}
  assert fx.inputs["obs_is_first"].any() and not fx.inputs["obs_is_first"].all()
  post, prior = _rssm_apply(params, rssm_lib.RSSM.obs_step, prev, fx.inputs["obs_prev_action"],
                            fx.inputs["obs_embed"], fx.inputs["obs_is_first"], None, None)
  for name, state in (("post", post), ("prior", prior)):
    for k in ("deter", "logit"):
      np.testing.assert_allclose(state[k], fx.outputs[f"obs_{name}_{k}"], **pf.TOL_SINGLE,
                                 err_msg=f"{name} {k}")
    _assert_stoch_equal(state["stoch"], fx.outputs[f"obs_{name}_stoch"], f"{name} stoch")


@jax.jit
def _observe(params, embed, action, is_first, recorded_stoch):
  return rssm_lib.observe(_model().rssm_def(), params, embed, action, is_first,
                          recorded_stoch=recorded_stoch)


def test_parity_rssm_observe_mode():
  fx = pf.load_fixture("rssm")
  params = _params("rssm")["rssm"]
  post, prior = _observe(params, fx.inputs["embed"], fx.inputs["action"], fx.inputs["is_first"],
                         None)
  for name, state in (("post", post), ("prior", prior)):
    for k in ("deter", "logit"):
      np.testing.assert_allclose(state[k], fx.outputs[f"observe_mode_{name}_{k}"], **pf.TOL_SCAN,
                                 err_msg=f"{name} {k}")
    _assert_stoch_equal(state["stoch"], fx.outputs[f"observe_mode_{name}_stoch"], f"{name} stoch")


def test_parity_rssm_observe_replayed_samples():
  """The sampled `observe` of the original, with its posterior draws teacher-forced (README
  section 5). Prior samples influence nothing downstream, so only prior deter/logit are
  compared."""
  fx = pf.load_fixture("rssm")
  params = _params("rssm")["rssm"]
  recorded = fx.outputs["observe_sample_post_stoch"]
  post, prior = _observe(params, fx.inputs["embed"], fx.inputs["action"], fx.inputs["is_first"],
                         recorded)
  for k in ("deter", "logit"):
    np.testing.assert_allclose(post[k], fx.outputs[f"observe_sample_post_{k}"], **pf.TOL_SCAN,
                               err_msg=f"post {k}")
    np.testing.assert_allclose(prior[k], fx.outputs[f"observe_sample_prior_{k}"], **pf.TOL_SCAN,
                               err_msg=f"prior {k}")
  _assert_stoch_equal(post["stoch"], recorded)


# --- KL loss --------------------------------------------------------------------------


@pytest.mark.parametrize("setting,kl", [("wm", WM_KL), ("connector", CONNECTOR_KL)])
def test_parity_kl_loss(setting, kl):
  fx = pf.load_fixture("kl_loss")
  post, prior = fx.inputs["post_logit"], fx.inputs["prior_logit"]

  def loss_fn(post_logit, prior_logit):
    return wm_lib.kl_loss(post_logit, prior_logit, **kl)

  (loss, value), (g_post, g_prior) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      jnp.asarray(post), jnp.asarray(prior))
  np.testing.assert_allclose(loss, fx.outputs[f"{setting}_loss"], **pf.TOL_KL)
  np.testing.assert_allclose(value, fx.outputs[f"{setting}_value"], **pf.TOL_KL)
  np.testing.assert_allclose(g_post, fx.outputs[f"{setting}_grad_post_logit"], **pf.TOL_KL_GRAD)
  np.testing.assert_allclose(g_prior, fx.outputs[f"{setting}_grad_prior_logit"],
                             **pf.TOL_KL_GRAD)


# --- two-hot and reward head ----------------------------------------------------------


def test_parity_symlog_symexp():
  fx = pf.load_fixture("twohot")
  np.testing.assert_allclose(dists.symlog(jnp.asarray(fx.inputs["symlog_x"])),
                             fx.outputs["symlog"], **pf.TOL_SINGLE)
  # symexp of inputs up to +-25 reaches 7e10: relative tolerance only matters there.
  np.testing.assert_allclose(dists.symexp(jnp.asarray(fx.inputs["symexp_x"])),
                             fx.outputs["symexp"], **pf.TOL_SINGLE)


def test_parity_twohot_buckets_exact():
  np.testing.assert_array_equal(dists.BUCKETS, pf.load_fixture("twohot").outputs["buckets"])


def test_parity_twohot_dist():
  fx = pf.load_fixture("twohot")
  logits, targets = jnp.asarray(fx.inputs["logits"]), jnp.asarray(fx.inputs["targets"][:, 0])
  np.testing.assert_allclose(dists.twohot_encode(targets), fx.outputs["target_twohot"],
                             **pf.TOL_TWOHOT)
  np.testing.assert_allclose(dists.twohot_log_prob(logits, targets), fx.outputs["log_prob"],
                             **pf.TOL_TWOHOT)
  # README section 7: `mean` is symexp of a sum, rtol 1e-4.
  np.testing.assert_allclose(dists.twohot_mean(logits), fx.outputs["mean"][:, 0],
                             rtol=1e-4, atol=pf.TOL_TWOHOT["atol"])


def test_parity_reward_head():
  fx = pf.load_fixture("twohot")
  params = _params("twohot")
  logits = _apply(params, wm_lib.WorldModel.reward_logits, fx.inputs["reward_head_feat"])
  np.testing.assert_allclose(logits, fx.outputs["reward_head_logits"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(dists.twohot_mean(logits), fx.outputs["reward_head_mean"][:, 0],
                             rtol=1e-4, atol=pf.TOL_TWOHOT["atol"])  # symexp of a sum
  target = jnp.asarray(fx.inputs["reward_head_target"][:, 0])
  np.testing.assert_allclose(dists.twohot_log_prob(logits, target),
                             fx.outputs["reward_head_log_prob"], **pf.TOL_TWOHOT)


# --- whole world-model update ---------------------------------------------------------


def _wm_loss_config() -> ml_collections.ConfigDict:
  # The reference scales the image loss by loss_scales.get('observation', 1.0).
  scales = pf.agent_config()["loss_scales"]
  return ml_collections.ConfigDict(dict(kl=WM_KL, loss_scales=dict(
      kl=float(scales["kl"]), observation=float(scales.get("observation", 1.0)),
      reward=float(scales["reward"]))))


def _wm_batch(fx: pf.Fixture) -> dict[str, jax.Array]:
  """Fixture batch -> our layout: NHWC images, reward `(B, T)`."""
  return {"observation": jnp.asarray(pf.nchw_to_nhwc(fx.inputs["observation"])),
          "action": jnp.asarray(fx.inputs["action"]),
          "reward": jnp.asarray(fx.inputs["reward"][..., 0]),
          "is_first": jnp.asarray(fx.inputs["is_first"])}


@functools.lru_cache(maxsize=None)
def _wm_update_results():
  """Loss, metrics, posterior and raw gradients of our world-model loss on the
  `world_model_update` fixture, with the recorded posterior samples replayed."""
  fx = pf.load_fixture("world_model_update")
  params = convert.torch_world_model_to_flax(fx.params)  # strict: all WM params
  batch = _wm_batch(fx)
  wm_lib.check_batch(batch, _model().action_dim)
  config = _wm_loss_config()

  @jax.jit
  def loss_and_grad(p, rec):
    return jax.value_and_grad(
        lambda q: wm_lib.world_model_loss(_model(), q, batch, None, config, rec),
        has_aux=True)(p)

  (loss, (metrics, post)), grads = loss_and_grad(params, jnp.asarray(fx.outputs["post_stoch"]))
  return params, loss, metrics, post, grads


def test_parity_world_model_loss_metrics():
  fx = pf.load_fixture("world_model_update")
  _, loss, metrics, post, _ = _wm_update_results()
  _assert_stoch_equal(post["stoch"], fx.outputs["post_stoch"])
  for k in ("deter", "logit"):
    np.testing.assert_allclose(post[k], fx.outputs[f"post_{k}"], **pf.TOL_SCAN, err_msg=k)
  names = ("kl_loss", "observation_loss", "reward_loss", "model_loss", "model_kl", "prior_ent",
           "post_ent")
  for name in names:
    np.testing.assert_allclose(metrics[name], fx.outputs[f"metric/{name}"], **pf.TOL_METRIC,
                               err_msg=name)
  np.testing.assert_allclose(loss, fx.outputs["metric/model_loss"], **pf.TOL_METRIC)


def _torch_clip_coef(norm: float, clip: float) -> float:
  return min(1.0, clip / (norm + opt_lib.TORCH_CLIP_EPS))


def test_parity_world_model_gradients():
  fx = pf.load_fixture("world_model_update")
  *_, grads = _wm_update_results()
  norm = float(optax.tree.norm(grads))
  ref_norm = float(fx.outputs["metric/model_grad_norm"])
  np.testing.assert_allclose(norm, ref_norm, rtol=pf.GRAD_RTOL)
  assert ref_norm > MODEL_OPT["clip"]  # the fixture's step is clipped: that path is tested

  # The stored gradients are those seen by Adam, i.e. after torch's clip_grad_norm_.
  clipped, _ = opt_lib.clip_by_global_norm_torch(MODEL_OPT["clip"]).update(grads, None)
  ours = convert.flax_world_model_to_torch(clipped)
  ref = {k[len("model_step/"):]: v for k, v in fx.grads.items() if k.startswith("model_step/")}
  assert len(ref) == SIZES.n_params["wm"] and set(ours) == set(ref)
  # README section 7: atol = 1e-6 x max|g|. Read with the max over all WM gradients
  # (225 here) that is loose for the small RSSM gradients (max ~1e-3), so each key also
  # gets 5e-6 x its own max|g|, whichever is smaller. Not 1e-6 per key: the encoder's
  # first conv accumulates over 32 x 31 x 31 positions behind a 16-step scan, and the
  # reference itself is up to 7e-6 x max|g| away from a float64 recomputation there (ours
  # 3e-6), so per-key 1e-6 would test float32 summation order, not parity.
  global_max = max(np.max(np.abs(g)) for g in ref.values())
  for key in ref:
    atol = min(pf.GRAD_ATOL_FRACTION * global_max, 5e-6 * np.max(np.abs(ref[key])))
    np.testing.assert_allclose(ours[key], ref[key], rtol=pf.GRAD_RTOL, atol=atol, err_msg=key)


def _adam_step(params, grads):
  config = ml_collections.ConfigDict(MODEL_OPT)
  tx = opt_lib.make_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  return optax.apply_updates(params, updates)


def test_parity_world_model_post_update_from_stored_grads():
  """Clip -> decay -> Adam applied to the fixture's own gradients (README section 7, tight)."""
  fx = pf.load_fixture("world_model_update")
  params = convert.torch_world_model_to_flax(fx.params)
  # Undo torch's clipping so that our clip is exercised too: raw = stored / coef.
  ref_norm = float(fx.outputs["metric/model_grad_norm"])
  coef = _torch_clip_coef(ref_norm, MODEL_OPT["clip"])
  stored = {k[len("model_step/"):]: v for k, v in fx.grads.items() if k.startswith("model_step/")}
  raw = jax.tree.map(lambda g: jnp.asarray(g / coef),
                     convert.torch_world_model_to_flax(stored, strict=False))
  new = convert.flax_world_model_to_torch(jax.jit(_adam_step)(params, raw))
  post = {k: v for k, v in fx.post.items() if k in new}
  assert len(post) == SIZES.n_params["wm"]
  # README section 7: atol 1e-7 (the decay is written to round like torch's
  # `p (1 - wd) + adam`). A missing or doubled weight decay (1e-6 relative) fails.
  for key in post:
    np.testing.assert_allclose(new[key], post[key], rtol=0,
                               atol=pf.POST_TIGHT_ATOL, err_msg=key)


def test_parity_world_model_post_update_end_to_end():
  """Our own gradients through our optimizer: within 2 lr (README section 7: the first Adam
  step is about -lr sign(g), and a tiny |g| may flip sign within gradient tolerance)."""
  fx = pf.load_fixture("world_model_update")
  params, *_, grads = _wm_update_results()
  new = convert.flax_world_model_to_torch(jax.jit(_adam_step)(params, grads))
  for key in new:
    np.testing.assert_allclose(new[key], fx.post[key], rtol=0, atol=2 * MODEL_OPT["lr"],
                               err_msg=key)
