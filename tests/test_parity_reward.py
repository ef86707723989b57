"""Parity of the GenRL reward (`genrl_jax.behavior.reward`) with the PyTorch reference.

The `parity` tests compare with `reward.npz` and `actor_critic.npz` (fixture README
sections 4 "Imag reward" and 6), using the decoder's first Linear (`_conv_in.0`, converted
with `genrl_jax.reference.convert`) as the projection. The other tests hold the
implementation, which projects each time step once and shares the projections between
alignment windows, to a naive numpy transcription of the reference's `compute_reward` /
`video_text_reward`, which re-projects every window.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import parity_fixtures as pf

pf.require_fixtures()

from genrl_jax import nets  # noqa: E402  (after the module-level skip)
from genrl_jax.behavior import reward as rw  # noqa: E402
from genrl_jax.reference import convert  # noqa: E402

# README section 7: rewards (`compute_reward_*`, `vtr_reward`) rtol 1e-5, atol 1e-6; the
# alignment scores are means of the same per-step scores. `vtr_best_index` is exact.
TOL_REWARD = dict(rtol=1e-5, atol=1e-6)
SIZES = pf.sizes()
N_FRAMES = SIZES.n_frames  # the connector's n_frames in the fixtures (README section 2)


def _projection(name: str):
  """`stoch_flat (..., S*K) -> (..., 32 * depth)`: our decoder's `project` on the fixture's
  converted `wm.heads.decoder._conv_in.0` (the only decoder params it holds)."""
  params = convert.torch_world_model_to_flax(pf.load_fixture(name).params, strict=False)
  decoder_params = params["decoder"]
  decoder = nets.ConvDecoder(depth=SIZES.cnn_depth, kernels=SIZES.decoder_kernels)
  return lambda x: decoder.apply({"params": decoder_params}, x, method=nets.ConvDecoder.project)


def _latents(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  return {"stoch": arrays[f"{prefix}_stoch"], "logit": arrays[f"{prefix}_logit"]}


# --- parity with the reference fixtures -----------------------------------------------


@pytest.mark.parametrize("score_fn", ["cosine", "max_cosine"])
def test_parity_compute_reward(score_fn):
  # `compute_reward(agent, agent_seq, target, score_fn)`: step i against target step i.
  fixture = pf.load_fixture("reward")
  agent, target = _latents(fixture.inputs, "agent"), _latents(fixture.inputs, "target")
  reward, info = rw.genrl_reward(agent, target, _projection("reward"), score_fn,
                                 alignment="none")
  assert reward.shape == agent["stoch"].shape[:2] + (1,) and info == {}
  np.testing.assert_allclose(reward[..., 0], fixture.outputs[f"compute_reward_{score_fn}"],
                             **TOL_REWARD)


def test_parity_video_text_reward():
  # `video_text_reward` with the fixture's imag_reward_args (README: max_cosine, sequence).
  fixture = pf.load_fixture("reward")
  args = fixture.config["agent_config"]["imag_reward_args"]
  assert not args["weighted_align"]  # not implemented (GenRL's setting is False)
  agent, target = _latents(fixture.inputs, "agent"), _latents(fixture.inputs, "target")
  reward, info = rw.genrl_reward(agent, target, _projection("reward"), *pf.reward_alignment(),
                                 n_frames=N_FRAMES)
  length, n = agent["stoch"].shape[:2]
  assert info["align_score"].shape == (length - N_FRAMES, n)
  np.testing.assert_allclose(info["align_score"], fixture.outputs["vtr_align_score"],
                             **TOL_REWARD)
  np.testing.assert_array_equal(info["best_index"], fixture.outputs["vtr_best_index"])
  np.testing.assert_allclose(reward, fixture.outputs["vtr_reward"], **TOL_REWARD)


def test_parity_actor_critic_imagined_reward():
  # The reward of the full imag-behaviour update: the imagined `seq` against the target.
  fixture = pf.load_fixture("actor_critic")
  agent = _latents(fixture.outputs, "seq")
  target = _latents(fixture.inputs, "target")
  reward, info = rw.genrl_reward(agent, target, _projection("actor_critic"),
                                 *pf.reward_alignment(), n_frames=N_FRAMES)
  np.testing.assert_allclose(info["align_score"], fixture.outputs["vtr_align_score"],
                             **TOL_REWARD)
  np.testing.assert_array_equal(info["best_index"], fixture.outputs["vtr_best_index"])
  np.testing.assert_allclose(reward, fixture.outputs["reward_raw"], **TOL_REWARD)


# --- the implementation against a naive transcription of the reference ----------------

T, N, S, K, D_OUT, SMALL_N_FRAMES = 12, 5, 3, 4, 7, 4
UNIMIX = 0.01


def _np_log_probs(logit: np.ndarray) -> np.ndarray:
  """Log of the unimix probabilities `0.99 softmax + 0.01 / K` (renormalised)."""
  e = np.exp(logit - logit.max(-1, keepdims=True))
  probs = (1 - UNIMIX) * e / e.sum(-1, keepdims=True) + UNIMIX / logit.shape[-1]
  return np.log(probs / probs.sum(-1, keepdims=True))


def _np_compute_reward(agent: dict, target: dict, weight: np.ndarray, bias: np.ndarray,
                       score_fn: str) -> np.ndarray:
  """The reference `compute_reward` on numpy float64 latents (time dims broadcast)."""
  if score_fn == "neg_kl":
    la, lt = _np_log_probs(agent["logit"]), _np_log_probs(target["logit"])
    kl = np.sum(np.exp(la) * (la - lt), axis=(-2, -1))
    s, k = target["logit"].shape[-2:]
    return -kl / (np.log(k) * s)
  flat = lambda x: x.reshape(x.shape[:-2] + (-1,))
  u = flat(target["stoch"]) @ weight + bias  # projected again on every call
  v = flat(agent["stoch"]) @ weight + bias
  nu, nv = np.linalg.norm(u, axis=-1), np.linalg.norm(v, axis=-1)
  if score_fn == "cosine":
    return np.sum(u * v, -1) / (np.maximum(nu, 1e-8) * np.maximum(nv, 1e-8))
  if score_fn == "max_cosine":
    m = np.maximum(nu, nv)[..., None]
    return np.sum((u / m) * (v / m), -1)
  neg = -np.linalg.norm(u - v, axis=-1) / np.sqrt(u.shape[-1])
  return np.exp(neg) if score_fn == "exp_neg_mse" else neg


def _np_video_text_reward(agent: dict, target: dict, weight: np.ndarray, bias: np.ndarray,
                          score_fn: str, alignment: str, n_frames: int):
  """The reference `video_text_reward` after the target is cached: returns
  `(reward (T, N, 1), align_score or None, best_index or None)`."""
  compute = lambda a, t: _np_compute_reward(a, t, weight, bias, score_fn)
  length = agent["stoch"].shape[0]
  if alignment == "none":
    return compute(agent, target)[..., None], None, None
  if alignment == "initial":
    initial = {k: v[0] for k, v in target.items()}
    align_score = compute(agent, initial)  # (T, N): every agent step against target[0]
  else:
    short_target = {k: v[:n_frames] for k, v in target.items()}
    align_score = np.stack([
        compute({k: v[t:t + n_frames] for k, v in agent.items()}, short_target).mean(0)
        for t in range(length - n_frames)])
  best = np.argmax(align_score, axis=0)
  # The reference's index construction: clip(cumsum(cumsum(one_hot(best))) - 1, 0).T
  one_hot = np.eye(length, dtype=np.int64)[best]
  index = np.clip(np.cumsum(np.cumsum(one_hot, 1), 1) - 1, 0, None).T  # (T, N)
  aligned = {k: np.take_along_axis(v, index.reshape(index.shape + (1,) * (v.ndim - 2)), 0)
             for k, v in target.items()}
  return compute(agent, aligned)[..., None], align_score, best


def _random_problem(seed: int = 0):
  """Small random latents (soft "stoch" so that no two scores tie) and a projection."""
  rng = np.random.default_rng(seed)
  def latents():
    logit = rng.normal(size=(T, N, S, K)).astype(np.float32)
    stoch = rng.dirichlet(np.ones(K), size=(T, N, S)).astype(np.float32)
    return {"stoch": stoch, "logit": logit}
  weight = rng.normal(size=(S * K, D_OUT)).astype(np.float32)
  bias = rng.normal(size=(D_OUT,)).astype(np.float32)
  return latents(), latents(), weight, bias


def _float64(tree: dict) -> dict:
  return {k: np.asarray(v, np.float64) for k, v in tree.items()}


@pytest.mark.parametrize("alignment", rw.ALIGNMENTS)
@pytest.mark.parametrize("score_fn", rw.SCORE_FNS)
def test_matches_naive_reference_transcription(score_fn, alignment):
  agent, target, weight, bias = _random_problem()
  reward, info = rw.genrl_reward(agent, target, lambda x: x @ weight + bias, score_fn,
                                 alignment, n_frames=SMALL_N_FRAMES)
  want, align_score, best = _np_video_text_reward(
      _float64(agent), _float64(target), weight.astype(np.float64), bias.astype(np.float64),
      score_fn, alignment, SMALL_N_FRAMES)
  assert reward.shape == (T, N, 1)
  if alignment == "none":
    assert info == {}
  else:
    # Guard against ill-conditioned draws: the best window must win by a clear margin.
    top2 = np.sort(align_score, axis=0)[-2:]
    assert np.min(top2[1] - top2[0]) > 1e-5  # float32 rounding is ~1e-7 here
    assert info["align_score"].shape == align_score.shape
    np.testing.assert_allclose(info["align_score"], align_score, **TOL_REWARD)
    np.testing.assert_array_equal(info["best_index"], best)
  np.testing.assert_allclose(reward, want, **TOL_REWARD)


def test_initial_alignment_considers_every_step():
  # The reference's `align_initial` takes the argmax over all T agent steps, not only over
  # the T - n_frames window starts of `align_sequence`.
  agent, target, weight, bias = _random_problem()
  agent["stoch"][T - 1] = target["stoch"][0]  # only the last step matches target[0] exactly
  _, info = rw.genrl_reward(agent, target, lambda x: x @ weight + bias, "cosine", "initial",
                            n_frames=SMALL_N_FRAMES)
  assert info["align_score"].shape == (T, N)
  np.testing.assert_array_equal(info["best_index"], np.full((N,), T - 1))


@pytest.mark.parametrize("alignment", rw.ALIGNMENTS)
@pytest.mark.parametrize("score_fn", ["max_cosine", "cosine", "neg_mse", "exp_neg_mse"])
@pytest.mark.parametrize("jit", [False, True])
def test_projects_each_sequence_once(score_fn, alignment, jit):
  # One projection of all T agent steps and one of all T target steps, however many
  # alignment windows there are (the reference projects again for every window).
  agent, target, weight, bias = _random_problem()
  calls = []

  def project(x):
    calls.append(tuple(x.shape))
    return x @ weight + bias

  fn = lambda a, t: rw.genrl_reward(a, t, project, score_fn, alignment, SMALL_N_FRAMES)
  reward, _ = (jax.jit(fn) if jit else fn)(agent, target)
  assert calls == [(T, N, S * K)] * 2
  assert reward.shape == (T, N, 1)


def test_neg_kl_does_not_project():
  agent, target, _, _ = _random_problem()
  calls = []
  rw.genrl_reward(agent, target, lambda x: calls.append(x) or x, "neg_kl")
  assert not calls


def test_reward_gradient_reaches_the_agent_stoch():
  # Dynamics backpropagation needs d reward / d agent stoch (straight-through in the
  # reference); the alignment argmax itself carries no gradient.
  agent, target, weight, bias = _random_problem()

  def total(stoch):
    reward, _ = rw.genrl_reward({**agent, "stoch": stoch}, target, lambda x: x @ weight + bias,
                                "max_cosine", "sequence", SMALL_N_FRAMES)
    return jnp.sum(reward)

  grad = jax.grad(total)(jnp.asarray(agent["stoch"]))
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)
