"""Parity of the connector and aligner with the GenRL PyTorch reference fixtures.

`aligner.npz` (UNet denoiser), `connector.npz` (learned initial state, prior step,
embedding-actions, `video_imagine` with denoising, the connector update's loss, metrics and
gradients) and the connector half of `world_model_update.npz` (loss and gradients on the
world model's replayed posterior, the shared-Adam update with the double weight decay).
The reference's random draws are replayed (README section 5); tolerances are README
section 7. Params are converted with `genrl_jax.reference.convert` into our
`{'connector', 'aligner'}` tree.
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

from genrl_jax import aligner as aligner_lib  # noqa: E402
from genrl_jax import connector as conn_lib  # noqa: E402  (after the module-level skip)
from genrl_jax.reference import convert  # noqa: E402
from genrl_jax.train import optimizer as opt_lib  # noqa: E402

MODEL_OPT = pf.optimizer("model_opt")
SIZES = pf.sizes()
LATENT_KEYS = ("stoch", "deter", "logit")
GRAD_PREFIX = "connector_step/"


@functools.lru_cache(maxsize=None)
def _modules() -> tuple[conn_lib.Connector, aligner_lib.Aligner]:
  """The fixtures' connector and aligner, sizes read off the agent's state dict."""
  sizes = convert.infer_connector_sizes(pf.load_fixture("agent_state_dict").params,
                                        discrete=SIZES.discrete)
  connector = conn_lib.Connector(**sizes)
  return connector, aligner_lib.Aligner(embed_dim=connector.embed_dim)


def _config() -> ml_collections.ConfigDict:
  """`config.connector` as the fixtures' agent (README section 2), from its agent config."""
  agent = pf.agent_config()
  return ml_collections.ConfigDict(dict(
      lafite_noise=float(agent["clip_lafite_noise"]),
      loss_scale=float(agent["connector"]["loss_scale"]), kl=pf.kl("connector_kl")))


def _params(name: str, strict: bool = True) -> dict:
  return jax.tree.map(jnp.asarray,
                      convert.torch_connector_to_flax(pf.load_fixture(name).params, strict=strict))


def _apply(params: dict, method, *args):
  return _modules()[0].apply({"params": params["connector"]}, *args, method=method)


def _assert_stoch_equal(actual, desired, err_msg: str = "") -> None:
  # One-hot values must be bit-exact (README section 7; argmax margins >= 6e-5).
  np.testing.assert_array_equal(np.asarray(actual), desired, err_msg=err_msg)


def _assert_grads_close(ours: dict, ref: dict) -> None:
  """README section 7: rtol 1e-4, atol 1e-6 x max|g_ref| (over the file's gradients)."""
  assert len(ref) == SIZES.n_params["connector"] and set(ours) == set(ref)
  atol = pf.GRAD_ATOL_FRACTION * max(np.max(np.abs(g)) for g in ref.values())
  for key in ref:
    np.testing.assert_allclose(ours[key], ref[key], rtol=pf.GRAD_RTOL, atol=atol, err_msg=key)


@functools.partial(jax.jit, static_argnames=("with_grads",))
def _loss(params, embed, wm_post, recorded, with_grads=True):
  connector, aligner = _modules()
  fn = lambda p: conn_lib.connector_loss(connector, aligner, p, embed, wm_post, None, _config(),
                                         recorded)
  if with_grads:
    return jax.value_and_grad(fn, has_aux=True)(params)
  return fn(params), None


# --- aligner --------------------------------------------------------------------------


def test_parity_aligner():
  fx = pf.load_fixture("aligner")
  params = _params("aligner", strict=False)
  assert list(params) == ["aligner"]
  assert len(jax.tree.leaves(params)) == SIZES.n_params["aligner"]
  y = _modules()[1].apply({"params": params["aligner"]}, fx.inputs["x"])
  np.testing.assert_allclose(y, fx.outputs["y"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(aligner_lib.normalize(y), fx.outputs["y_normalized"], **pf.TOL_SINGLE)


# --- connector: single steps ----------------------------------------------------------


def test_parity_connector_initial_state():
  fx = pf.load_fixture("connector")
  params = _params("connector")
  # deter/logit are deterministic; the sampled stoch is replayed (README section 5).
  init = _apply(params, conn_lib.Connector.initial, fx.inputs["init_embed_action"], None,
                fx.outputs["init_stoch"])
  for k in ("deter", "logit"):
    np.testing.assert_allclose(init[k], fx.outputs[f"init_{k}"], **pf.TOL_SINGLE, err_msg=k)
  _assert_stoch_equal(init["stoch"], fx.outputs["init_stoch"])


def test_parity_connector_img_step():
  fx = pf.load_fixture("connector")
  params = _params("connector")
  prev = {"deter": fx.inputs["img_prev_deter"], "stoch": fx.inputs["img_prev_stoch"]}
  out = _apply(params, conn_lib.Connector.img_step, prev, fx.inputs["img_action"])
  for k in ("deter", "logit"):
    np.testing.assert_allclose(out[k], fx.outputs[f"img_{k}"], **pf.TOL_SINGLE, err_msg=k)
  _assert_stoch_equal(out["stoch"], fx.outputs["img_stoch"])


def test_parity_connector_embedding_actions():
  fx = pf.load_fixture("connector")
  actions = conn_lib.embedding_actions(_modules()[0], jnp.asarray(fx.inputs["vi_video_embed"]))
  np.testing.assert_allclose(actions, fx.outputs["get_action"], **pf.TOL_SINGLE)
  # temporal one-hots multiplied by 0
  assert not np.any(np.asarray(actions[..., SIZES.embed_dim:]))


# --- connector: video_imagine ---------------------------------------------------------


@jax.jit
def _imagine(params, embed, recorded_init_stoch):
  connector, aligner = _modules()
  states = conn_lib.imagine(connector, params, embed, None, sample=False, denoise=True,
                            aligner=aligner, recorded_init_stoch=recorded_init_stoch)
  return states, aligner.apply({"params": params["aligner"]}, embed)


@pytest.mark.parametrize("prefix", ["vi", "vt"])
def test_parity_connector_imagine(prefix):
  """`video_imagine(sample=False, denoise=True)`: the initial stoch is the recorded draw,
  later steps take the mode. `vt` is the text-prompt rollout (N = B T, H + 2 steps) whose
  `prior[:, 1:]`, time-major, is the reward target."""
  fx = pf.load_fixture("connector")
  params = _params("connector")
  states, raw = _imagine(params, fx.inputs[f"{prefix}_video_embed"],
                         fx.outputs[f"{prefix}_initial_stoch"])
  np.testing.assert_allclose(raw, fx.outputs[f"{prefix}_aligner_raw"], **pf.TOL_SINGLE)
  for k in ("deter", "logit"):
    np.testing.assert_allclose(states[k], fx.outputs[f"{prefix}_prior_{k}"], **pf.TOL_SCAN,
                               err_msg=k)
  _assert_stoch_equal(states["stoch"], fx.outputs[f"{prefix}_prior_stoch"])
  if prefix == "vt":
    target = jax.tree.map(lambda x: jnp.swapaxes(x[:, 1:], 0, 1), states)
    for k in ("deter", "logit"):
      np.testing.assert_allclose(target[k], fx.outputs[f"vt_target_{k}"], **pf.TOL_SCAN,
                                 err_msg=k)
    _assert_stoch_equal(target["stoch"], fx.outputs["vt_target_stoch"])


# --- connector: update loss and gradients (connector.npz) -----------------------------


def _initkl_chunks(stoch: np.ndarray, n_chunks: int | None = None) -> jax.Array:
  """Recorded initial stochs `(B * C, S, K)` (rows in (batch, chunk) order) -> `(B, C, S, K)`,
  C = `n_chunks` (default: the initial-KL chunk starts of the fixture set)."""
  n_chunks = len(SIZES.initial_kl_starts) if n_chunks is None else n_chunks
  return jnp.asarray(pf.chunk_rows(stoch, n_chunks, item_ndim=2))


@functools.lru_cache(maxsize=None)
def _upd_results():
  fx = pf.load_fixture("connector")
  params = _params("connector")
  wm_post = {k: jnp.asarray(fx.inputs[f"upd_wm_post_{k}"]) for k in LATENT_KEYS}
  recorded = {"lafite_noise": jnp.asarray(fx.outputs["upd_lafite_noise"]),
              "initial_stoch": jnp.asarray(fx.outputs["upd_initial_main_stoch"]),
              "initkl_stoch": _initkl_chunks(fx.outputs["upd_initial_initkl_stoch"])}
  (loss, metrics), grads = _loss(params, jnp.asarray(fx.inputs["upd_video_embed"]), wm_post,
                                 recorded)
  return params, loss, metrics, grads


def test_parity_connector_update_loss_metrics():
  fx = pf.load_fixture("connector")
  _, loss, metrics, _ = _upd_results()
  np.testing.assert_allclose(loss, fx.outputs["upd_loss"], **pf.TOL_METRIC)
  np.testing.assert_allclose(metrics["connector_model_loss"], fx.outputs["upd_loss"],
                             **pf.TOL_METRIC)
  for name in ("aligner_cosine_distance", "connector_kl", "connector_initial_kl"):
    np.testing.assert_allclose(metrics[name], fx.outputs[f"upd_metric/{name}"], **pf.TOL_METRIC,
                               err_msg=name)


def test_parity_connector_update_initial_states():
  """The learned initial states of the update: the main rollout's (embedding of frame
  n_frames - 1, the first chunk's last frame) and the initial-KL metric's (one per chunk
  start t0 = n_frames, 2 n_frames, ... < T)."""
  fx = pf.load_fixture("connector")
  params = _params("connector")
  connector = _modules()[0]
  clean = conn_lib.chunk_embeddings(jnp.asarray(fx.inputs["upd_video_embed"]), SIZES.n_frames)
  actions = conn_lib.embedding_actions(connector, clean)
  starts = list(SIZES.initial_kl_starts)
  for name, t in (("main", [0]), ("initkl", starts)):
    chunk_actions = actions[:, t]  # (B, C, A)
    stoch = _initkl_chunks(fx.outputs[f"upd_initial_{name}_stoch"], len(t))
    init = jax.vmap(lambda a, s: _apply(params, conn_lib.Connector.initial, a, None, s),
                    in_axes=1, out_axes=1)(chunk_actions, stoch)
    for k in ("deter", "logit"):
      want = fx.outputs[f"upd_initial_{name}_{k}"].reshape(init[k].shape)
      np.testing.assert_allclose(init[k], want, **pf.TOL_SINGLE, err_msg=f"{name} {k}")


def test_parity_connector_update_gradients():
  fx = pf.load_fixture("connector")
  *_, grads = _upd_results()
  assert len(jax.tree.leaves(grads)) == SIZES.n_params["connector"]
  _assert_grads_close(convert.flax_connector_to_torch(grads), fx.grads)


# --- connector half of the world-model update (world_model_update.npz) ----------------


def _decayed_once(params):
  """The reference computes the connector loss after the world-model step, whose weight
  decay has already scaled the connector params by (1 - wd) (README section 4,
  "Optimizer"); Adam moved nothing there (no gradients)."""
  return jax.tree.map(lambda p: p * (1.0 - MODEL_OPT["wd"]), params)


@functools.lru_cache(maxsize=None)
def _wmu_results(order: str):
  """Loss, metrics and gradients of our connector loss on `world_model_update.npz`, with the
  world model's posterior (`out/post_*`) and the connector's draws replayed.

  order 'reference': evaluated at the once-decayed params, as the reference does;
  'joint': at the stored params, as our train step does (one pass for both losses).
  """
  fx = pf.load_fixture("world_model_update")
  params = _params("world_model_update")  # strict: all connector + aligner params
  if order == "reference":
    params = _decayed_once(params)
  wm_post = {k: jnp.asarray(fx.outputs[f"post_{k}"]) for k in LATENT_KEYS}
  # The initial-KL metric's draw is not recorded in this file: that metric is not checked.
  recorded = {"lafite_noise": jnp.asarray(fx.outputs["connector_lafite_noise"]),
              "initial_stoch": jnp.asarray(fx.outputs["connector_initial_main_stoch"])}
  return _loss(params, jnp.asarray(fx.inputs["clip_video"]), wm_post, recorded)


@pytest.mark.parametrize("order", ["reference", "joint"])
def test_parity_world_model_update_connector_metrics(order):
  fx = pf.load_fixture("world_model_update")
  (loss, metrics), _ = _wmu_results(order)
  np.testing.assert_allclose(loss, fx.outputs["metric/connector_model_loss"], **pf.TOL_METRIC)
  for name in ("aligner_cosine_distance", "connector_kl", "connector_model_loss"):
    np.testing.assert_allclose(metrics[name], fx.outputs[f"metric/{name}"], **pf.TOL_METRIC,
                               err_msg=name)


def test_parity_world_model_update_connector_initial_state():
  fx = pf.load_fixture("world_model_update")
  params = _decayed_once(_params("world_model_update"))
  clean = conn_lib.chunk_embeddings(jnp.asarray(fx.inputs["clip_video"]), SIZES.n_frames)
  action = conn_lib.embedding_actions(_modules()[0], clean)[:, 0]
  init = _apply(params, conn_lib.Connector.initial, action, None,
                fx.outputs["connector_initial_main_stoch"])
  for k in ("deter", "logit"):
    np.testing.assert_allclose(init[k], fx.outputs[f"connector_initial_main_{k}"],
                               **pf.TOL_SINGLE, err_msg=k)


@pytest.mark.parametrize("order", ["reference", "joint"])
def test_parity_world_model_update_connector_gradients(order):
  fx = pf.load_fixture("world_model_update")
  _, grads = _wmu_results(order)
  # Pre-clip global norm over the connector + aligner params (float64 in the fixture).
  ref_norm = float(fx.outputs["metric/connector_model_grad_norm"])
  np.testing.assert_allclose(float(optax.tree.norm(grads)), ref_norm, rtol=pf.GRAD_RTOL)
  assert ref_norm < MODEL_OPT["clip"]  # not clipped: stored grads are the raw ones
  ref = {k[len(GRAD_PREFIX):]: v for k, v in fx.grads.items() if k.startswith(GRAD_PREFIX)}
  _assert_grads_close(convert.flax_connector_to_torch(grads), ref)


def _step(params, grads, decay_times: int):
  tx = opt_lib.make_optimizer(ml_collections.ConfigDict(MODEL_OPT), decay_times=decay_times)
  updates, _ = tx.update(grads, tx.init(params), params)
  return optax.apply_updates(params, updates)


def test_parity_world_model_update_connector_post_from_stored_grads():
  """Clip -> decay -> Adam on the fixture's own connector gradients (README section 7,
  tight, atol 1e-7). The reference decays the connector params twice per iteration (WM
  step and connector step, one shared Adam): `decay_times=2` matches, a single decay is off
  by about wd x |p| (~1e-6)."""
  fx = pf.load_fixture("world_model_update")
  params = _params("world_model_update")
  stored = {k[len(GRAD_PREFIX):]: v for k, v in fx.grads.items() if k.startswith(GRAD_PREFIX)}
  grads = jax.tree.map(jnp.asarray, convert.torch_connector_to_flax(stored))
  post = {k: v for k, v in fx.post.items() if k.startswith("wm.connector.")}
  assert len(post) == SIZES.n_params["connector"]

  def worst(decay_times):
    new = convert.flax_connector_to_torch(jax.jit(_step, static_argnums=2)(params, grads,
                                                                           decay_times))
    assert set(new) == set(post)
    return max(float(np.max(np.abs(new[k] - post[k]))) for k in post), new

  err2, new = worst(2)
  for key in post:
    np.testing.assert_allclose(new[key], post[key], rtol=0, atol=pf.POST_TIGHT_ATOL, err_msg=key)
  err1, _ = worst(1)
  assert err1 > pf.POST_TIGHT_ATOL, (err1, err2)  # a single decay is detectably wrong


def test_parity_world_model_update_connector_post_end_to_end():
  """Our own gradients through our optimizer (double decay): within 2 lr (README section 7,
  the first Adam step is about -lr sign(g))."""
  fx = pf.load_fixture("world_model_update")
  params = _params("world_model_update")
  _, grads = _wmu_results("joint")
  new = convert.flax_connector_to_torch(jax.jit(_step, static_argnums=2)(params, grads, 2))
  for key in new:
    np.testing.assert_allclose(new[key], fx.post[key], rtol=0, atol=2 * MODEL_OPT["lr"],
                               err_msg=key)
