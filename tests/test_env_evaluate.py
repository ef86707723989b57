"""Evaluation of policies in the environments: returns, episode bookkeeping, normalised
scores and recorded frames."""

from __future__ import annotations

import numpy as np
import pytest

from genrl_jax.envs import evaluate as evaluate_lib
from genrl_jax.envs import make_env
from genrl_jax.envs import baseline_policies
from genrl_jax.envs import vector as vector_lib

TASK = "stickman_walk"
KW = dict(fast_render=True, env_kwargs={"time_limit": 0.5})  # 20 control steps of 25 ms


class _Scripted:
  """Action = a fixed function of (env row, step within episode): replayable by hand."""

  def __init__(self, action_dim):
    self.action_dim = action_dim

  def initial_carry(self, num):
    return np.zeros(num, np.int64)

  def __call__(self, obs, carry, step):
    carry = np.where(obs["is_first"], 0, carry)
    actions = np.sin(0.3 * carry[:, None] + np.arange(self.action_dim)[None]).astype(np.float32)
    return actions, carry + 1


def _by_hand(seed: int, episodes: int, action_dim: int, zero: bool = False,
             render: bool = True) -> list[float]:
  """Episodes played one after the other on one env, as the reference evaluates, with
  `_Scripted`'s actions (or zeros)."""
  env = make_env(TASK, seed=seed, fast_render=True, time_limit=0.5, render=render)
  out = []
  for _ in range(episodes):
    env.reset()
    total, t, last = 0.0, 0, False
    while not last:
      action = np.sin(0.3 * t + np.arange(action_dim)) * (0.0 if zero else 1.0)
      ts = env.step(action.astype(np.float32))
      total, t, last = total + float(ts["reward"]), t + 1, ts["is_last"]
    out.append(total)
  return out


def test_evaluate_one_env_is_the_reference_protocol_and_normalises_scores():
  with vector_lib.SerialEnvs(TASK, 1, seed=3, **KW) as envs:
    result = evaluate_lib.evaluate(envs, _Scripted(envs.action_dim), 3, record_episodes=2)
  expected = _by_hand(3, 3, envs.action_dim)
  np.testing.assert_allclose(result.returns, expected, rtol=1e-6)
  np.testing.assert_array_equal(result.lengths, [10, 10, 10])  # 20 steps / action repeat 2
  assert result.mean_return == pytest.approx(np.mean(expected))
  assert result.normalized_score == pytest.approx((np.mean(expected) - 35) / (960 - 35))
  assert [f.shape for f in result.frames] == [(11, 64, 64, 3)] * 2
  assert result.summary()["episodes"] == 3


def test_evaluate_spreads_episodes_over_envs_and_resets_the_policy_rows():
  with vector_lib.SerialEnvs(TASK, 2, seed=3, **KW) as envs:
    result = evaluate_lib.evaluate(envs, _Scripted(envs.action_dim), 3)
  # Env 0 (seed 3) plays episodes 0 and 2, env 1 (seed 4) episode 1.
  first, third = _by_hand(3, 2, envs.action_dim)
  (second,) = _by_hand(4, 1, envs.action_dim)
  np.testing.assert_allclose(result.returns, [first, second, third], rtol=1e-6)


def test_evaluate_random_policy_on_parallel_envs_gives_finite_bounded_returns():
  with vector_lib.make_envs(TASK, 2, seed=0, parallel=True, **KW) as envs:
    result = evaluate_lib.evaluate(envs, evaluate_lib.RandomPolicy(envs.action_dim, 0), 2,
                                   record_episodes=0)
  assert result.returns.shape == (2,) and np.all(np.isfinite(result.returns))
  assert np.all((result.returns >= 0) & (result.returns <= 10 * 2)) and result.frames == []


def test_evaluate_refuses_no_episodes():
  with vector_lib.SerialEnvs(TASK, 1, seed=0, **KW) as envs:
    with pytest.raises(ValueError, match="num_episodes=0"):
      evaluate_lib.evaluate(envs, evaluate_lib.RandomPolicy(envs.action_dim), 0)


def test_blind_envs_give_black_frames_and_the_rendered_returns():
  seen, blind = (make_env(TASK, seed=2, fast_render=True, render=r, time_limit=0.5)
                 for r in (True, False))
  actions = np.random.default_rng(1).uniform(-1, 1, (6, seen.action_dim)).astype(np.float32)
  for env in (seen, blind):
    env.reset()
  steps = [(seen.step(a), blind.step(a)) for a in actions]
  assert [float(a["reward"]) for a, _ in steps] == [float(b["reward"]) for _, b in steps]
  assert all(not b["observation"].any() for _, b in steps)
  assert any(a["observation"].any() for a, _ in steps)


def _eval_config(episodes: int):
  import synthetic  # pylint: disable=g-import-not-at-top
  config = synthetic.micro_config()
  with config.unlocked():
    config.task = TASK
    config.eval.random_episodes = episodes
    config.eval.time_limit = 0.5
  return config


def test_random_baseline_is_measured_once_per_setting_and_reported(tmp_path, monkeypatch):
  from genrl_jax.stages import evaluation as eval_stage  # pylint: disable=g-import-not-at-top
  config = _eval_config(3)
  first = eval_stage.random_baseline(config, str(tmp_path), progress=False)
  assert first["episodes"] == 3 and len(first["returns"]) == 3
  assert first["mean_return"] == pytest.approx(np.mean(first["returns"]))
  assert first["std_return"] == pytest.approx(np.std(first["returns"]))
  assert first["source"] == "measured (3 episodes)"
  assert (tmp_path / "random_policy" / f"{TASK}.json").exists()

  def no_episodes(*args, **kwargs):
    raise AssertionError("the saved baseline should have been read")

  monkeypatch.setattr(evaluate_lib, "evaluate", no_episodes)
  assert eval_stage.random_baseline(config, str(tmp_path), progress=False) == first
  with pytest.raises(AssertionError, match="saved baseline"):  # other settings: measured
    eval_stage.random_baseline(_eval_config(2), str(tmp_path), progress=False)
  with pytest.raises(ValueError, match="config.eval.random_episodes=0"):
    eval_stage.random_baseline(_eval_config(0), str(tmp_path), progress=False)

  random = dict(first, mean_return=100.0, std_return=10.0)
  report = lambda ret: eval_stage.learning_report(
      {"mean_return": ret}, random, {"prompt_target_mse": 0.1}, {"open_loop_mse": 0.2,
                                                                 "mean_frame_mse": 0.3,
                                                                 "split": "train"})
  assert report(120.5)["beats_random"] and not report(120.0)["beats_random"]
  assert report(0.0) | {"beats_random": None} == {
      "random_mean_return": 100.0, "random_std_return": 10.0, "random_episodes": 3,
      "random_source": "measured (3 episodes)", "beats_random": None,
      "prompt_target_mse": 0.1, "prompt_mean_frame_mse": None, "open_loop_mse": 0.2,
      "open_loop_mean_frame_mse": 0.3, "open_loop_split": "train", "mfwm_fingerprint": None}
  # The behaviour's MFWM named (12 hex); open-loop errors of another MFWM left out.
  errors = {"open_loop_mse": 0.2, "mean_frame_mse": 0.3, "split": "train",
            "mfwm_fingerprint": "ab" * 32}
  same = eval_stage.learning_report({"mean_return": 0.0}, random,
                                    {"mfwm_fingerprint": "ab" * 32}, errors)
  assert same["mfwm_fingerprint"] == "ab" * 6 and same["open_loop_mse"] == 0.2
  other = eval_stage.learning_report({"mean_return": 0.0}, random,
                                     {"mfwm_fingerprint": "cd" * 32}, errors)
  assert other["mfwm_fingerprint"] == "cd" * 6
  assert other["open_loop_mse"] is other["open_loop_mean_frame_mse"] is None


def test_recorded_frames_start_with_the_reset_frame():
  with vector_lib.SerialEnvs(TASK, 2, seed=3, **KW) as envs:
    result = evaluate_lib.evaluate(envs, _Scripted(envs.action_dim), 3, record_episodes=3)
  with vector_lib.SerialEnvs(TASK, 2, seed=3, **KW) as envs:
    first = envs.reset()["observation"]
  np.testing.assert_array_equal(result.frames[0][0], first[0])
  np.testing.assert_array_equal(result.frames[1][0], first[1])
  assert not (result.frames[0][0] == result.frames[0][-1]).all()


def test_zero_policy_baseline_is_all_zero_actions_on_the_evaluation_seeds(tmp_path):
  from genrl_jax.stages import evaluation as eval_stage  # pylint: disable=g-import-not-at-top
  config = _eval_config(2)
  seed = config.seed * 1000 + baseline_policies.EVAL_SEED_SALT
  action_dim = make_env(TASK, seed=0, render=False).action_dim
  result = baseline_policies.baseline_returns(config, "zero", 2, progress=False)
  expected = _by_hand(seed, 2, action_dim, zero=True, render=False)
  np.testing.assert_allclose(result.returns, expected, rtol=1e-6)
  scripted = _by_hand(seed, 2, action_dim, render=False)
  assert not np.allclose(expected, scripted)  # the check can tell the actions apart
  random = eval_stage.random_baseline(config, str(tmp_path), progress=False)
  np.testing.assert_allclose(
      baseline_policies.baseline_returns(config, "random", 2, progress=False).returns,
      random["returns"])
  with pytest.raises(ValueError, match="baseline policy 'expert'"):
    baseline_policies.baseline_returns(config, "expert", 2, progress=False)


def test_baselines_script_prints_both_policies_per_task(capsys):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "baselines.py")
  spec = importlib.util.spec_from_file_location("baselines_script", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  rows = module.main([f"--tasks={TASK}", "--episodes=2", "--time_limit=0.5"])
  assert [r["task"] for r in rows] == [TASK]
  assert all(np.isfinite(rows[0][k]) for k in ("random_mean", "random_std", "zero_mean",
                                                  "zero_std"))
  assert f"| {TASK} | {rows[0]['random_mean']:.1f} +- " in capsys.readouterr().out
