"""Tests of genrl_jax.envs: pixel time steps, registry, Stickman model and rewards, kitchen."""

import importlib.util
import math
import sys

import numpy as np
import pytest

import genrl_jax.envs as envs  # selects MUJOCO_GL before mujoco is imported
from genrl_jax.envs import list_tasks, make_env, rendering

HAS_KITCHEN = importlib.util.find_spec("gymnasium_robotics") is not None
needs_kitchen = pytest.mark.skipif(not HAS_KITCHEN, reason="gymnasium-robotics not installed")

PAPER_STICKMAN_TASKS = ("walk", "run", "stand", "hands_up", "lying_down", "one_foot", "high_kick",
                        "headstand", "flip", "sit_knees", "lunge_pose", "boxing", "legs_up",
                        "arabesque", "flipping", "backflip", "urlb_flip")
TIME_STEP_KEYS = {
    "observation", "reward", "discount", "is_first", "is_last", "is_terminal", "action"
}


def _check_time_step(ts, env, *, first):
  assert set(ts) == TIME_STEP_KEYS
  obs = ts["observation"]
  assert obs.shape == env.obs_shape == (64, 64, 3)
  assert obs.dtype == np.uint8
  assert isinstance(ts["reward"], np.float32) and np.isfinite(ts["reward"])
  assert isinstance(ts["discount"], np.float32)
  assert ts["action"].shape == (env.action_dim,) and ts["action"].dtype == np.float32
  for key in ("is_first", "is_last", "is_terminal"):
    assert isinstance(ts[key], bool)
  assert ts["is_first"] is first
  assert ts["is_terminal"] == (ts["discount"] == 0)
  if first:
    assert ts["reward"] == 0 and not ts["is_last"]
    np.testing.assert_array_equal(ts["action"], 0)


def _rollout(env, actions):
  steps = [env.reset()]
  steps += [env.step(a) for a in actions]
  return steps


# ------------------------------------------------------------------------------------
# Registry.


def test_list_tasks_contains_reference_tasks():
  tasks = list_tasks()
  assert tasks == sorted(tasks) and len(tasks) == len(set(tasks))
  required = [
      "walker_walk", "walker_run", "walker_stand", "cheetah_run", "quadruped_walk", "quadruped_run",
      "kitchen_microwave", "kitchen_light"
  ]
  required += [f"stickman_{t}" for t in PAPER_STICKMAN_TASKS]
  assert set(required) <= set(tasks)


def test_unknown_task_lists_close_matches():
  with pytest.raises(ValueError, match="walker_walk"):
    make_env("walker_wlak")
  with pytest.raises(ValueError, match="stickman_high_kick"):
    make_env("stikman_high_kick")
  with pytest.raises(ValueError, match="unknown task"):
    make_env("nonsense")


def test_suite_load_stickman():
  envs.register_dm_control_domains()
  from dm_control import suite

  assert ("stickman", "walk") in suite.ALL_TASKS
  env = suite.load("stickman", "walk", task_kwargs={"random": 0})
  ts = env.reset()
  assert set(ts.observation) == {"orientations", "height", "velocity"}
  assert env.action_spec().shape == (10,)


# ------------------------------------------------------------------------------------
# Every task: reset and five steps.


@pytest.mark.parametrize("task", list_tasks())
def test_every_task_resets_and_steps(task):
  if task.startswith("kitchen_") and not HAS_KITCHEN:
    pytest.skip("gymnasium-robotics not installed")
  env = make_env(task, seed=0, fast_render=True)
  try:
    assert env.task == task
    rng = np.random.default_rng(0)
    ts = env.reset()
    _check_time_step(ts, env, first=True)
    for _ in range(5):
      action = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
      ts = env.step(action)
      _check_time_step(ts, env, first=False)
      np.testing.assert_array_equal(ts["action"], action)
      assert not ts["is_last"]
      assert ts["discount"] == 1 and not ts["is_terminal"]
  finally:
    env.close()


def test_action_dims_and_cameras():
  expected = {
      "walker_walk": (6, 0),
      "cheetah_run": (6, 0),
      "quadruped_walk": (12, 2),
      "quadruped_run": (12, 2),
      "stickman_walk": (10, 0)
  }
  for task, (dim, camera) in expected.items():
    env = make_env(task, fast_render=True)
    assert env.action_dim == dim and env.camera_id == camera, task


# ------------------------------------------------------------------------------------
# Determinism, action handling, action repeat.


@pytest.mark.parametrize("task", ["walker_walk", "stickman_walk"])
def test_deterministic_for_seed(task):
  actions = np.random.default_rng(1).uniform(-1, 1, (6, 10))
  dim = make_env(task, fast_render=True).action_dim
  actions = actions[:, :dim]
  a = _rollout(make_env(task, seed=3, fast_render=True), actions)
  b = _rollout(make_env(task, seed=3, fast_render=True), actions)
  c = _rollout(make_env(task, seed=4, fast_render=True), actions)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["observation"], y["observation"])
    assert x["reward"] == y["reward"]
  assert any(not np.array_equal(x["observation"], z["observation"]) for x, z in zip(a, c))


def test_fast_render_does_not_change_dynamics():
  actions = np.random.default_rng(3).uniform(-1, 1, (4, 6))
  fast = _rollout(make_env("walker_run", seed=2, fast_render=True), actions)
  slow = _rollout(make_env("walker_run", seed=2), actions)
  assert [t["reward"] for t in fast] == [t["reward"] for t in slow]


def test_bad_actions_raise():
  env = make_env("walker_walk", fast_render=True)
  env.reset()
  for bad in (np.zeros(5), np.zeros((1, 6)), np.zeros(7), 0.0):
    with pytest.raises(ValueError, match=r"\(6,\)"):
      env.step(bad)
  for value in (np.nan, np.inf, -np.inf):
    action = np.zeros(6)
    action[2] = value
    with pytest.raises(ValueError, match=r"\(6,\)"):
      env.step(action)
  ts = env.step(np.zeros(6))  # still usable after a rejected action
  assert not ts["is_first"]


def test_step_before_reset_raises():
  env = make_env("walker_walk", fast_render=True)
  with pytest.raises(RuntimeError, match="reset"):
    env.step(np.zeros(6))


def test_actions_are_clipped_and_recorded():
  env = make_env("cheetah_run", fast_render=True)
  env.reset()
  ts = env.step(np.array([5, -5, 0.5, -0.5, 1, -1], np.float64))
  np.testing.assert_allclose(ts["action"], [1, -1, 0.5, -0.5, 1, -1])
  np.testing.assert_allclose(env.physics.data.ctrl, [1, -1, 0.5, -0.5, 1, -1])


def test_reward_is_sum_over_action_repeat():
  from genrl_jax.envs.dmc import load_dm_env

  actions = np.random.default_rng(2).uniform(-1, 1, (4, 6))
  env = make_env("walker_walk", seed=5, fast_render=True, action_repeat=2)
  raw = load_dm_env("walker", "walk", seed=5)
  env.reset()
  raw.reset()
  for action in actions:
    ts = env.step(action)
    expected = sum(raw.step(action).reward for _ in range(2))
    assert ts["reward"] == pytest.approx(expected, rel=1e-6)


def test_stickman_episode_length():
  env = make_env("stickman_stand", fast_render=True, size=16)
  ts, steps = env.reset(), 0
  while not ts["is_last"]:
    ts = env.step(np.zeros(env.action_dim))
    steps += 1
  assert steps == 500  # 25 s / 0.025 s = 1000 env steps, action repeat 2
  assert ts["discount"] == 1 and not ts["is_terminal"]
  with pytest.raises(RuntimeError, match="reset"):
    env.step(np.zeros(env.action_dim))
  assert env.reset()["is_first"]


# ------------------------------------------------------------------------------------
# Rendering settings.


def test_fast_render_settings():
  fast = make_env("walker_walk", seed=0, fast_render=True)
  slow = make_env("walker_walk", seed=0)
  model = fast.physics.model.ptr
  assert (model.light_castshadow == 0).all()
  assert model.vis.global_.offwidth == 64 and model.vis.global_.offheight == 64
  assert model.vis.quality.offsamples == 0
  assert slow.physics.model.ptr.vis.quality.offsamples > 0
  a, b = fast.reset()["observation"], slow.reset()["observation"]
  assert a.shape == b.shape
  diff = np.abs(a.astype(int) - b.astype(int)).mean()
  assert 0 < diff < 40  # same scene, no shadow / anti-aliasing


def test_gl_backend_selection(monkeypatch):
  import mujoco  # noqa: F401  (so that selecting now warns)

  monkeypatch.setattr(rendering, "_selected", None)
  monkeypatch.setattr(rendering, "_error", None)
  monkeypatch.setenv("MUJOCO_GL", "osmesa")
  assert rendering.select_gl_backend() == "osmesa"  # a user's choice is kept

  monkeypatch.delenv("MUJOCO_GL")
  monkeypatch.setattr(rendering, "egl_available", lambda: False)
  monkeypatch.setattr(rendering, "osmesa_available", lambda: True)
  with pytest.warns(RuntimeWarning):  # mujoco is already imported in this process
    assert rendering.select_gl_backend() == "osmesa"

  monkeypatch.delenv("MUJOCO_GL")
  monkeypatch.setattr(rendering, "osmesa_available", lambda: False)
  with pytest.warns(RuntimeWarning):
    assert rendering.select_gl_backend() is None
  with pytest.raises(RuntimeError, match="libegl1 libegl-mesa0 libgl1-mesa-dri") as info:
    rendering.require_gl_backend()
  assert "libosmesa6" in str(info.value)


# ------------------------------------------------------------------------------------
# Stickman model and rewards.


def _stickman(task="stand"):
  from genrl_jax.envs.dmc import load_dm_env

  return load_dm_env("stickman", task, seed=0)


def test_stickman_model_facts():
  env = _stickman()
  physics = env.physics
  model = physics.model
  assert model.nu == 10 and model.nv == 13 and model.nq == 13
  assert model.nbody == 16  # world + 15 bodies
  assert model.opt.timestep == pytest.approx(0.0025)
  assert env.control_timestep() == pytest.approx(0.025)
  assert physics.model.stat.extent == pytest.approx(2.0)

  gears = {
      "right_hip": 100,
      "right_knee": 50,
      "right_ankle": 20,
      "left_hip": 100,
      "left_knee": 50,
      "left_ankle": 20,
      "left_shoulder": 100,
      "left_elbow": 50,
      "right_shoulder": 100,
      "right_elbow": 50
  }
  names = [model.id2name(i, "actuator") for i in range(model.nu)]
  assert names == list(gears)
  np.testing.assert_allclose(model.actuator_gear[:, 0], list(gears.values()))
  np.testing.assert_allclose(model.actuator_ctrlrange, [[-1, 1]] * 10)
  for i in range(model.nu):
    assert model.id2name(model.actuator_trnid[i, 0], "joint") == names[i]

  ranges = {
      "hip": (-20, 100),
      "knee": (-150, 0),
      "ankle": (-45, 45),
      "shoulder": (-20, 100),
      "elbow": (0, 150)
  }
  for side in ("left", "right"):
    for joint, (lo, hi) in ranges.items():
      np.testing.assert_allclose(physics.named.model.jnt_range[f"{side}_{joint}"],
                                 np.deg2rad([lo, hi]),
                                 atol=1e-9)
      assert physics.named.model.jnt_limited[f"{side}_{joint}"]
  for root in ("rootz", "rootx", "rooty"):
    assert not physics.named.model.jnt_limited[root]
  assert physics.named.model.dof_damping["right_hip"] == pytest.approx(0.1)
  assert physics.named.model.dof_armature["right_hip"] == pytest.approx(0.01)
  assert physics.named.model.dof_damping["rootx"] == 0

  assert [model.id2name(i, "camera") for i in range(model.ncam)] == ["side", "back"]
  np.testing.assert_allclose(physics.named.model.cam_pos["side"], [0, -2.25, 1.0])
  assert model.id2name(0, "sensor") == "torso_subtreelinvel"
  geom_size = physics.named.model.geom_size
  np.testing.assert_allclose(geom_size["torso", :2], [0.06, 0.25])
  assert geom_size["head", 0] == pytest.approx(0.1)
  assert geom_size["left_hand", 0] == pytest.approx(0.05)


def _set_pose(physics, qpos, qvel=None):
  with physics.reset_context():
    physics.data.qpos[:] = qpos
    physics.data.qvel[:] = 0 if qvel is None else qvel


def _lying_flat():
  qpos = np.zeros(13)
  qpos[0] = -1.25 + 0.06  # torso axis 6 cm above the floor
  qpos[2] = np.pi / 2  # rotated to horizontal
  return qpos


def test_stickman_stand_reward():
  env = _stickman("stand")
  physics, task = env.physics, env.task

  _set_pose(physics, np.zeros(13))  # the model's standing pose, at rest
  assert physics.torso_height() == pytest.approx(1.25)
  assert physics.torso_upright() == pytest.approx(1.0)
  assert task.get_reward(physics) == pytest.approx(1.0, abs=1e-6)

  # Reference quirk: drifting backwards removes the move factor (speed 0, margin 0).
  qvel = np.zeros(13)
  qvel[1] = -0.1
  _set_pose(physics, np.zeros(13), qvel)
  assert task.get_reward(physics) == pytest.approx(1 / 6, abs=1e-3)

  _set_pose(physics, _lying_flat())
  assert physics.torso_height() < 0.1
  assert task.get_reward(physics) < 0.2


def test_stickman_pose_rewards():
  from genrl_jax.envs import stickman

  physics = _stickman("walk").physics
  _set_pose(physics, _lying_flat())
  assert stickman.REWARDS["lying_down"](physics) == pytest.approx(1.0, abs=1e-3)
  assert stickman.REWARDS["high_kick"](physics) < 0.01
  _set_pose(physics, np.zeros(13))
  assert stickman.REWARDS["lying_down"](physics) < 0.5
  assert stickman.REWARDS["walk"](physics) == pytest.approx(1 / 6, abs=1e-6)  # standing still
  for name, fn in stickman.REWARDS.items():
    value = fn(physics)
    assert 0.0 <= value <= 1.0 and math.isfinite(value), name


# ------------------------------------------------------------------------------------
# Kitchen.


@needs_kitchen
def test_kitchen_microwave_reward_and_length():
  env = make_env("kitchen_microwave", seed=0, fast_render=True, size=16)
  ts = env.reset()
  assert env.action_dim == 9
  ts = env.step(np.zeros(9))
  # Dense reward: -distance of the microwave door to its goal, summed over the repeat.
  assert ts["reward"] == pytest.approx(-2 * 0.75, abs=0.05)
  steps = 1
  while not ts["is_last"]:
    ts = env.step(np.zeros(9))
    steps += 1
  assert steps == 140  # 280 env steps with action repeat 2
  env.close()


@needs_kitchen
def test_kitchen_deterministic_for_seed():
  actions = np.random.default_rng(0).uniform(-1, 1, (4, 9))
  runs = []
  for seed in (0, 0, 1):
    env = make_env("kitchen_microwave", seed=seed, fast_render=True, size=32)
    runs.append(_rollout(env, actions))
    env.close()
  for x, y in zip(runs[0], runs[1]):
    np.testing.assert_array_equal(x["observation"], y["observation"])
    assert x["reward"] == y["reward"]
  # the seed drives the robot's observation noise, which feeds its controller
  assert any(
      not np.array_equal(x["observation"], z["observation"]) for x, z in zip(runs[0], runs[2]))


@needs_kitchen
def test_kitchen_eval_mode_sparse():
  env = make_env("kitchen_light", seed=0, fast_render=True, eval_mode=True)
  env.reset()
  assert env.step(np.zeros(9))["reward"] == 0
  env.close()


@needs_kitchen
def test_kitchen_joint_helper_fix():
  from gymnasium_robotics.utils import mujoco_utils

  from genrl_jax.envs import kitchen

  assert mujoco_utils.get_joint_qpos is kitchen._get_joint_qpos
  env = make_env("kitchen_microwave", fast_render=True)
  qpos = mujoco_utils.get_joint_qpos(env.model, env.data, "microwave")
  assert qpos.shape == (1,)
  assert mujoco_utils.get_joint_qpos(env.model, env.data, "kettle").shape == (7,)
  env.close()


def test_kitchen_missing_package_message(monkeypatch):
  from genrl_jax.envs import kitchen

  for name in list(sys.modules):
    if name.startswith("gymnasium_robotics"):
      monkeypatch.setitem(sys.modules, name, None)
  monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)
  monkeypatch.setattr(kitchen, "_patched", False)
  with pytest.raises(ImportError, match=r"pip install genrl_jax\[kitchen\]"):
    make_env("kitchen_microwave")


def test_the_registry_lists_the_dm_control_tasks_without_importing_them():
  from genrl_jax.envs import dmc, registry  # pylint: disable=g-import-not-at-top
  assert sorted(registry.DMC_TASKS) == dmc.dmc_task_names()
  assert list_tasks() == sorted(dmc.dmc_task_names() +
                                [f"kitchen_{t}" for t in registry.KITCHEN_TASKS])
