"""Parity of behaviour learning with the reference's `actor_critic.npz` (fixture README §6).

The full update replays the reference's random draws (README §5): the action noise of
every imagined step and the sampled one-hot priors, injected with the straight-through
gradient, so imagined sequences, rewards, returns, losses, gradients and the parameters
after the update can be compared directly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import parity_fixtures as pf

pf.require_fixtures()

from genrl_jax import dists  # noqa: E402  (after the module-level skip)
from genrl_jax import mfwm as mfwm_lib  # noqa: E402
from genrl_jax import world_model as wm_lib  # noqa: E402
from genrl_jax.behavior import actor_critic as ac  # noqa: E402
from genrl_jax.behavior import learner  # noqa: E402
from genrl_jax.reference import convert  # noqa: E402
from genrl_jax.behavior.learner import BehaviorState  # noqa: E402

PREFIX = "_imag_behavior."
ACTOR_OPT = pf.optimizer("actor_opt")
CRITIC_OPT = pf.optimizer("critic_opt")
SIZES = pf.sizes()
TOL_RETURN = dict(rtol=1e-5, atol=1e-6)
SEQ_KEYS = ("deter", "logit", "feat", "action")


def _fixture():
  return pf.load_fixture("actor_critic")


@functools.lru_cache(maxsize=None)
def _modules() -> tuple[mfwm_lib.MFWM, learner.Behavior]:
  fx = _fixture()
  sizes = convert.infer_behavior_sizes(fx.params, PREFIX)
  actor = ac.Actor(sizes["action_dim"], sizes["actor_units"], sizes["actor_layers"])
  critic = ac.Critic(sizes["critic_units"], sizes["critic_layers"])
  wm_sizes = convert.infer_world_model_sizes(pf.load_fixture("agent_state_dict").params,
                                             discrete=SIZES.discrete)
  return mfwm_lib.MFWM(wm_lib.WorldModel(**wm_sizes)), learner.Behavior(actor, critic)


def _config() -> ml_collections.ConfigDict:
  """The fixture's behaviour settings (README §2), read from its agent config."""
  agent = pf.agent_config()
  score_fn, alignment = pf.reward_alignment()
  return ml_collections.ConfigDict(dict(
      horizon=SIZES.imag_horizon, discount=agent["discount"], lambda_=agent["discount_lambda"],
      actor_entropy=float(agent["actor_ent"]), slow_target_every=agent["slow_target_update"],
      slow_target_fraction=float(agent["slow_target_fraction"]), actor_optimizer=ACTOR_OPT,
      critic_optimizer=CRITIC_OPT,
      reward=dict(score_fn=score_fn, alignment=alignment, n_frames=SIZES.n_frames)))


def _behavior_params() -> dict:
  return jax.tree.map(jnp.asarray, convert.torch_behavior_to_flax(_fixture().params, PREFIX))


def _mfwm_params() -> dict:
  wm = convert.torch_world_model_to_flax(_fixture().params, strict=False)
  return {"world_model": jax.tree.map(jnp.asarray, wm)}


def _state(optimizer) -> BehaviorState:
  fx = _fixture()
  p = _behavior_params()
  target = {k: jnp.asarray(fx.inputs[f"target_{k}"]) for k in learner.TARGET_KEYS}
  state = learner.create_state(_modules()[1], optimizer, {"actor": p["actor"],
                                                          "critic": p["critic"]}, target)
  return state.replace(target_critic=p["target_critic"], return_ema=p["return_ema"])


def _flat_start() -> dict:
  fx = _fixture()
  return {k: jnp.asarray(fx.inputs[f"start_{k}"]).reshape((-1,) + fx.inputs[f"start_{k}"].shape[2:])
          for k in ("deter", "stoch", "logit")}


def _replay() -> dict:
  fx = _fixture()
  return {"action_eps": jnp.asarray(fx.outputs["imag_action_eps"]),
          "stoch": jnp.asarray(fx.outputs["seq_stoch"][1:])}


@functools.lru_cache(maxsize=None)
def _update():
  """Our update on the fixture's inputs: `(new_state, metrics, seq, grads)`."""
  mfwm, behavior = _modules()
  optimizer = learner.make_optimizer(_config())
  state = _state(optimizer)
  kwargs = dict(mfwm=mfwm, behavior=behavior, config=_config(), replay=_replay())
  loss_fn = functools.partial(learner.behavior_loss, state=state, starts=_flat_start(),
                              key=None, mfwm_params=_mfwm_params(), **kwargs)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p)[0]))(state.params)
  update = jax.jit(functools.partial(learner.behavior_update, optimizer=optimizer, **kwargs))
  new, metrics, seq = update(state, _flat_start(), None, _mfwm_params())
  return new, metrics, seq, grads


# --- single pieces --------------------------------------------------------------------


def test_parity_actor_distribution():
  fx = _fixture()
  _, behavior = _modules()
  mean, std = behavior.actor.apply({"params": _behavior_params()["actor"]},
                                   jnp.asarray(fx.inputs["feat"]))
  np.testing.assert_allclose(mean, fx.outputs["actor_mean"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(std, fx.outputs["actor_std"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(ac.normal_entropy(std), fx.outputs["actor_entropy"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(ac.normal_log_prob(mean, std, jnp.asarray(fx.inputs["actions"])),
                             fx.outputs["actor_log_prob"], **pf.TOL_SINGLE)


def test_parity_critic_twohot():
  fx = _fixture()
  _, behavior = _modules()
  logits = behavior.critic.apply({"params": _behavior_params()["critic"]},
                                 jnp.asarray(fx.inputs["feat"]))
  np.testing.assert_allclose(logits, fx.outputs["critic_logits"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(dists.twohot_mean(logits), fx.outputs["critic_mean"][:, 0],
                             rtol=1e-4, atol=1e-5)
  log_prob = dists.twohot_log_prob(logits, jnp.asarray(fx.inputs["critic_target"][:, 0]))
  np.testing.assert_allclose(log_prob, fx.outputs["critic_log_prob"], **pf.TOL_TWOHOT)


def test_parity_lambda_return():
  fx = _fixture()
  x = {k: jnp.asarray(fx.inputs[f"lr_{k}"]) for k in ("reward", "value", "disc", "bootstrap")}
  returns = ac.lambda_return(x["reward"], x["value"], x["disc"], x["bootstrap"],
                             pf.agent_config()["discount_lambda"])
  np.testing.assert_allclose(returns, fx.outputs["lr_returns"], **TOL_RETURN)


@pytest.mark.parametrize("start", ["zero", "warm"])
def test_parity_return_ema(start):
  fx = _fixture()
  ema, offset, scale = ac.update_return_ema(jnp.asarray(fx.inputs[f"ema_vals_before_{start}"]),
                                            jnp.asarray(fx.inputs["ema_returns"]))
  np.testing.assert_allclose(ema, fx.outputs[f"ema_vals_after_{start}"], **TOL_RETURN)
  np.testing.assert_allclose(offset, fx.outputs[f"ema_offset_{start}"], **TOL_RETURN)
  np.testing.assert_allclose(scale, fx.outputs[f"ema_scale_{start}"], **TOL_RETURN)


# --- one full update ------------------------------------------------------------------


def test_parity_behavior_update_imagined_sequence():
  fx = _fixture()
  _, _, seq, _ = _update()
  np.testing.assert_array_equal(seq["stoch"], fx.outputs["seq_stoch"])
  for key in SEQ_KEYS:
    np.testing.assert_allclose(seq[key], fx.outputs[f"seq_{key}"], **pf.TOL_SCAN, err_msg=key)


def test_parity_behavior_update_reward_returns_and_alignment():
  fx = _fixture()
  _, _, seq, _ = _update()
  np.testing.assert_allclose(seq["reward"], fx.outputs["reward_raw"][..., 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(seq["best_index"], fx.outputs["vtr_best_index"])
  np.testing.assert_allclose(seq["align_score"], fx.outputs["vtr_align_score"], rtol=1e-5,
                             atol=1e-6)
  # The slow critic's values: `baseline` holds them for states 0..H-1.
  np.testing.assert_allclose(seq["slow_value"][:-1], fx.outputs["baseline"][..., 0],
                             rtol=1e-4, atol=1e-5)


def test_parity_behavior_update_metrics():
  fx = _fixture()
  _, metrics, _, _ = _update()
  expected = {k[len("metric/"):]: v for k, v in fx.outputs.items() if k.startswith("metric/")}
  # Our losses' names; the entropy scale is a constant the reference logs (0 for GenRL).
  expected.pop("imag_actor_ent_scale")
  missing = sorted(set(expected) - set(metrics))
  assert not missing, missing
  for name, value in expected.items():
    tol = dict(rtol=1e-4, atol=1e-6) if name.endswith("grad_norm") else pf.TOL_METRIC
    np.testing.assert_allclose(metrics[name], value, **tol, err_msg=name)


def test_parity_behavior_update_gradients():
  fx = _fixture()
  _, _, _, grads = _update()
  ours = convert.flax_behavior_to_torch({"actor": grads["actor"], "critic": grads["critic"]},
                                        PREFIX)
  ref = {k: v for k, v in fx.grads.items() if k.startswith(PREFIX)}
  assert set(ours) == set(ref)
  assert len(ref) == SIZES.n_params["actor"] + SIZES.n_params["critic"]
  for key, g in ref.items():
    np.testing.assert_allclose(ours[key], g, rtol=pf.GRAD_RTOL,
                               atol=pf.GRAD_ATOL_FRACTION * float(np.max(np.abs(g))),
                               err_msg=key)


def _post_state(new: BehaviorState) -> dict:
  tree = {"actor": new.params["actor"], "critic": new.params["critic"],
          "target_critic": new.target_critic, "return_ema": new.return_ema}
  return convert.flax_behavior_to_torch(jax.tree.map(np.asarray, tree), PREFIX)


def test_parity_behavior_update_post_params_end_to_end():
  """Actor and critic after decay + Adam from our gradients (within 2 lr), the slow critic
  hard-copied from the updated critic (update 0), the return EMA updated."""
  fx = _fixture()
  new, _, _, _ = _update()
  ours = _post_state(new)
  assert set(ours) == set(fx.post) and len(ours) == SIZES.n_params["behavior"]
  for key, value in fx.post.items():
    lr = (ACTOR_OPT if key.startswith(PREFIX + "actor.") else CRITIC_OPT)["lr"]
    np.testing.assert_allclose(ours[key], value, rtol=0, atol=2 * lr, err_msg=key)
  for key in ours:
    if key.startswith(PREFIX + "_target_critic."):
      critic_key = key.replace("_target_critic.", "critic.")
      np.testing.assert_array_equal(ours[key], ours[critic_key], err_msg=key)
  np.testing.assert_allclose(ours[PREFIX + "ema_vals"], fx.post[PREFIX + "ema_vals"],
                             **TOL_RETURN)
  assert int(new.step) == 1


def test_parity_behavior_optimizer_post_from_stored_grads():
  """Our clip -> decay -> Adam applied to the fixture's own gradients (README §7, tight)."""
  fx = _fixture()
  optimizer = learner.make_optimizer(_config())
  state = _state(optimizer)
  stored = convert.torch_behavior_to_flax(fx.grads, PREFIX, strict=False)
  grads = jax.tree.map(jnp.asarray, {"actor": stored["actor"], "critic": stored["critic"]})
  updates, _ = optimizer.update(grads, state.opt_state, state.params)
  new = jax.tree.map(lambda p, u: p + u, state.params, updates)
  ours = convert.flax_behavior_to_torch(jax.tree.map(np.asarray, new), PREFIX)
  for key, value in ours.items():
    np.testing.assert_allclose(value, fx.post[key], rtol=0, atol=pf.POST_TIGHT_ATOL,
                               err_msg=key)


def test_parity_behavior_update_detached_value_features_break_actor_gradients():
  """The fixture README's warning, as a guard: detaching the features of the slow critic's
  values changes the actor gradient far beyond tolerance, so the parity above really
  checks that our values are not detached."""
  fx = _fixture()
  _, _, _, grads = _update()
  ref = convert.flax_behavior_to_torch({"actor": grads["actor"]}, PREFIX)
  key = PREFIX + "actor.dense0.weight"
  np.testing.assert_allclose(ref[key], fx.grads[key], rtol=pf.GRAD_RTOL,
                             atol=pf.GRAD_ATOL_FRACTION * float(np.max(np.abs(fx.grads[key]))))
  mfwm, behavior = _modules()
  state = _state(learner.make_optimizer(_config()))
  original = ac.actor_critic_losses

  def detached(seq, reward, slow_value, *args, **kwargs):
    values = dists.twohot_mean(behavior.critic.apply({"params": state.target_critic},
                                                     jax.lax.stop_gradient(seq["feat"])))
    return original(seq, reward, values, *args, **kwargs)

  learner.actor_critic_losses = detached
  try:
    g = jax.grad(lambda p: learner.behavior_loss(
        p, state, _flat_start(), None, _mfwm_params(), mfwm=mfwm, behavior=behavior,
        config=_config(), replay=_replay())[0])(state.params)
  finally:
    learner.actor_critic_losses = original
  off = convert.flax_behavior_to_torch({"actor": g["actor"]}, PREFIX)[key]
  rel = np.linalg.norm(off - fx.grads[key]) / np.linalg.norm(fx.grads[key])
  assert rel > 0.1, rel
