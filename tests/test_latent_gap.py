"""The imagination gap (`genrl_jax/behavior/latent_gap.py`): windows of filtered episodes,
and rollouts of their own actions and of the actor from their first states, scored with
the training's reward.

The expected values are computed window by window, with the reward of one column at a time
(`reward.genrl_reward`), on the micro MFWM with random parameters of the learner's tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax.behavior import latent_gap
from genrl_jax.behavior import learner
from genrl_jax.behavior import reward as reward_lib
from genrl_jax.behavior import starts as starts_lib
from genrl_jax.behavior.imagine import imagine
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from test_behavior_learner import (ACTION_DIM, _behavior_params, _config, _prompt_target,
                                   _random_mfwm)

STRIDE = 3


def _episode(rng, length):
  return {"observation": rng.integers(0, 256, (length, 64, 64, 3), dtype=np.uint8),
          "action": rng.uniform(-1, 1, (length, ACTION_DIM)).astype(np.float32),
          "is_first": np.arange(length) == 0}


def test_windows_cut_every_stride_steps_column_per_episode_and_start():
  t = np.arange(7, dtype=np.float32)
  post = {"deter": jnp.asarray(np.stack([t, 100 + t])[..., None])}  # (2, 7, 1)
  w = latent_gap.windows(post, 3, 2)["deter"][..., 0]  # starts 0, 2, 4
  assert w.shape == (3, 6)
  expected = np.array([[b * 100 + s + i for b in range(2) for s in (0, 2, 4)]
                       for i in range(3)])
  np.testing.assert_array_equal(w, expected)
  with pytest.raises(ValueError, match="7 steps hold no window of 8"):
    latent_gap.windows(post, 8, 1)


def test_target_columns_cycle_through_the_targets_columns():
  target = {"stoch": jnp.arange(2 * 4).reshape(2, 4)}
  np.testing.assert_array_equal(latent_gap.target_columns(target, 6)["stoch"],
                                [[0, 1, 2, 3, 0, 1], [4, 5, 6, 7, 4, 5]])


def _by_hand(mfwm, params, actor, actor_params, target, episodes, config):
  """Mean reward over every window (realized) and every imagined rollout, one column at a
  time, with the posterior and prior modes. Columns are numbered episode by episode, then
  window by window, within the episodes of one length."""
  model, b = mfwm.world_model, config.behavior
  project = lambda x: model.apply({"params": params["world_model"]}, x,
                                  method=wm_lib.WorldModel.project)
  num_targets = target["stoch"].shape[1]

  @jax.jit  # one compilation for every window (a column index is traced)
  def score(seq, col):
    column = jax.tree.map(lambda x: x[:, col][:, None], target)
    reward, _ = reward_lib.genrl_reward(seq, column, project, b.reward.score_fn,
                                        b.reward.alignment, mfwm.connector.n_frames)
    return jnp.mean(reward)

  replay = jax.jit(lambda first, actions: rssm.imagine_with_actions(
      model.rssm_def(), params["world_model"]["rssm"], actions, first))
  rollout = jax.jit(lambda first: imagine(
      model.rssm_def(), params["world_model"]["rssm"], actor, actor_params, first, b.horizon,
      None, action_eps=jnp.zeros((b.horizon, 1, ACTION_DIM))))

  realized, replayed, imagined = [], [], []
  for length in sorted({len(e["is_first"]) for e in episodes}):
    column = 0
    for e in [e for e in episodes if len(e["is_first"]) == length]:
      batch = {k: v[None] for k, v in e.items()}
      post = starts_lib.offline_starts(model, params["world_model"], batch, None)  # (T, ...)
      for start in range(0, length - b.horizon, STRIDE):
        window = jax.tree.map(lambda x: x[start:start + b.horizon + 1, None], post)
        realized.append(float(score(window, column % num_targets)))
        first = jax.tree.map(lambda x: x[start][None], post)
        # Actions start + 1 .. start + H led to the window's frames after its first.
        states = replay(first, e["action"][None, start + 1:start + b.horizon + 1])
        seq = jax.tree.map(lambda f, x: jnp.concatenate([f[None], jnp.swapaxes(x, 0, 1)]),
                           first, states)
        replayed.append(float(score(seq, column % num_targets)))
        seq = rollout(first)
        imagined.append(float(score(seq, column % num_targets)))
        column += 1
  return [float(np.mean(x)) for x in (realized, replayed, imagined)], len(realized)


@pytest.mark.slow
def test_latent_rewards_match_the_reward_of_each_window_and_its_imagined_rollout():
  config = _config()
  mfwm, params = _random_mfwm()
  actor = learner.make_behavior(config, ACTION_DIM).actor
  actor_params = _behavior_params()["actor"]
  # 3 target columns, fewer than the windows of either length, so that columns cycle.
  target = jax.tree.map(lambda x: x[:, :3], _prompt_target(4))
  rng = np.random.default_rng(0)
  # Two lengths (two calls), the shorter one last so that grouping reorders them.
  episodes = [_episode(rng, 24), _episode(rng, 24), _episode(rng, 20)]
  out = latent_gap.latent_rewards(mfwm, params["world_model"], target, episodes, None,
                                  config.behavior, actor=actor, actor_params=actor_params,
                                  stride=STRIDE)
  expected, count = _by_hand(mfwm, params, actor, actor_params, target, episodes, config)
  assert out["windows"] == count
  got = [out[k] for k in ("realized", "replayed", "imagined")]
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # The three differ: filtered frames, the model's prediction of the same actions, and
  # the actor's own actions.
  assert min(abs(a - b) for a, b in [(got[0], got[1]), (got[1], got[2]), (got[0], got[2])]) > 1e-4


def test_latent_rewards_bad_arguments_raise():
  config = _config()
  mfwm, params = _random_mfwm()
  target = _prompt_target(4)
  with pytest.raises(ValueError, match="at least one episode"):
    latent_gap.latent_rewards(mfwm, params["world_model"], target, [], None, config.behavior)
  with pytest.raises(ValueError, match="both actor and actor_params"):
    latent_gap.latent_rewards(mfwm, params["world_model"], target,
                              [_episode(np.random.default_rng(0), 24)], None,
                              config.behavior, actor_params=_behavior_params()["actor"])
  with pytest.raises(ValueError, match="hold no window"):
    latent_gap.latent_rewards(mfwm, params["world_model"], target,
                              [_episode(np.random.default_rng(0), config.behavior.horizon)],
                              None, config.behavior)
