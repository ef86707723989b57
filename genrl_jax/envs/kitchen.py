"""Franka kitchen tasks (``kitchen_microwave``, ``kitchen_light``, ...) on
gymnasium-robotics' ``FrankaKitchen-v1`` scene.

Reference setup (method.md §9.3): 9-D joint-velocity actions in [-1, 1] (scaled x2 by the
robot), 40 physics steps per env step, robot observation noise ratio 0.1, fixed initial
pose, action repeat 2, 280 env steps per episode (140 agent steps), 64x64 frames from a
free camera (distance 2.2, lookat (-0.2, 0.5, 2.0), azimuth 70, elevation -35).
Reward: -||q_element - goal|| until the element is within its threshold, then 0
(the element is removed). With ``eval_mode=True``: 1 on completion and the episode
ends there (return in {0, 1}). ``is_terminal`` is always False.

Requires the optional dependency ``gymnasium-robotics`` (``pip install genrl_jax[kitchen]``).
"""

from __future__ import annotations

import numpy as np

from genrl_jax.envs.pixels import Env, check_action, make_time_step

# task -> (element name in the scene, qpos indices, goal, completion threshold)
KITCHEN_TASKS = {
    "microwave": ("microwave", (22,), (-0.75,), 0.25),
    "kettle":
        ("kettle", (23, 24, 25, 26, 27, 28, 29), (-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06), 0.3),
    "burner": ("bottom burner", (11, 12), (-0.88, -0.01), 0.5),
    "light": ("light switch", (17, 18), (-0.69, -0.05), 0.5),
    "slide": ("slide cabinet", (19,), (0.37,), 0.2),
    "hinge": ("hinge cabinet", (20, 21), (0.0, 1.45), 0.3),
    "top_burner": ("top burner", (15, 16), (-0.92, -0.01), 0.5),
}

EPISODE_ENV_STEPS = 280
ROBOT_NOISE_RATIO = 0.1
CAMERA = {"distance": 2.2, "lookat": (-0.2, 0.5, 2.0), "azimuth": 70.0, "elevation": -35.0}

INSTALL_HINT = ("the Franka kitchen tasks need gymnasium-robotics: pip install genrl_jax[kitchen] "
                "(or pip install 'gymnasium-robotics>=1.4.2')")

_patched = False


def _joint_width(model, joint_id: int, velocity: bool) -> int:
  import mujoco

  kind = int(model.jnt_type[joint_id])
  if kind == int(mujoco.mjtJoint.mjJNT_FREE):
    return 6 if velocity else 7
  if kind == int(mujoco.mjtJoint.mjJNT_BALL):
    return 3 if velocity else 4
  return 1


def _joint_id(model, name: str) -> int:
  import mujoco

  joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
  if joint_id == -1:
    raise ValueError(f"Joint with name '{name}' is not part of the model!")
  return joint_id


def _joint_slice(model, name: str, velocity: bool) -> slice:
  joint_id = _joint_id(model, name)
  start = int(model.jnt_dofadr[joint_id] if velocity else model.jnt_qposadr[joint_id])
  return slice(start, start + _joint_width(model, joint_id, velocity))


def _get_joint_qpos(model, data, name):
  return data.qpos[_joint_slice(model, name, False)].copy()


def _get_joint_qvel(model, data, name):
  return data.qvel[_joint_slice(model, name, True)].copy()


def _set_joint_qpos(model, data, name, value):
  data.qpos[_joint_slice(model, name, False)] = np.asarray(value)


def _set_joint_qvel(model, data, name, value):
  data.qvel[_joint_slice(model, name, True)] = np.asarray(value)


def patch_gymnasium_robotics() -> None:
  """Fixes gymnasium-robotics' joint helpers for mujoco >= 3.12 (idempotent).

    They compare ``model.jnt_type[i]`` (np.int32) with the ``mjtJoint`` enum, which no
    longer compares equal, and fail with a bare AssertionError; these versions compare
    ``int(joint_type)``.
    """
  global _patched
  if _patched:
    return
  from gymnasium_robotics.utils import mujoco_utils

  mujoco_utils.get_joint_qpos = _get_joint_qpos
  mujoco_utils.get_joint_qvel = _get_joint_qvel
  mujoco_utils.set_joint_qpos = _set_joint_qpos
  mujoco_utils.set_joint_qvel = _set_joint_qvel
  _patched = True


def _import_kitchen_env():
  try:
    patch_gymnasium_robotics()
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import KitchenEnv
  except ImportError as e:
    raise ImportError(INSTALL_HINT) from e
  return KitchenEnv


try:  # apply the mujoco >= 3.12 fix as soon as this module is imported
  patch_gymnasium_robotics()
except ImportError:  # reported with the install hint when a kitchen task is made
  pass


class KitchenPixelEnv(Env):
  """One Franka kitchen element as a pixel task with GenRL's time-step dict."""

  def __init__(self,
               task: str,
               seed: int = 0,
               *,
               fast_render: bool = False,
               action_repeat: int = 2,
               size: int = 64,
               eval_mode: bool = False):
    if task not in KITCHEN_TASKS:
      raise ValueError(f"unknown kitchen task {task!r}; known: {sorted(KITCHEN_TASKS)}")
    kitchen_env_cls = _import_kitchen_env()
    from dm_control import mujoco as dm_mujoco
    from dm_control.mujoco import wrapper

    element, indices, goal, threshold = KITCHEN_TASKS[task]
    self._gym = kitchen_env_cls(tasks_to_complete=[element], robot_noise_ratio=ROBOT_NOISE_RATIO)
    super().__init__(f"kitchen_{task}", self._gym.action_space.shape[0], size, action_repeat)
    self.element = element
    self.eval_mode = bool(eval_mode)
    self._indices = np.asarray(indices)
    self._goal = np.asarray(goal, np.float64)
    self._threshold = float(threshold)
    self._seed = int(seed)
    self._seeded = False
    self._env_steps = 0
    self._completed = False
    self.fast_render = bool(fast_render)

    model = self._gym.robot_env.model
    if fast_render:
      from genrl_jax.envs.rendering import apply_fast_render

      apply_fast_render(model, self.size)
    else:
      model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.size)
      model.vis.global_.offheight = max(model.vis.global_.offheight, self.size)
    # Render through dm_control (as the reference's MovableCamera) on the scene's own
    # MjData: one rendering stack for all environments. (Mixing mujoco.Renderer
    # with dm_control's renderer in one process corrupts frames: dm_control keeps
    # its own record of the current GL context.)
    self._physics = dm_mujoco.Physics(wrapper.MjData(self._gym.robot_env.data))
    self._camera = dm_mujoco.MovableCamera(self._physics, self.size, self.size)
    self._camera.set_pose(np.asarray(CAMERA["lookat"]), CAMERA["distance"], CAMERA["azimuth"],
                          CAMERA["elevation"])

  @property
  def model(self):
    return self._gym.robot_env.model

  @property
  def data(self):
    return self._gym.robot_env.data

  def distance(self) -> float:
    """Distance of the task's element to its goal configuration."""
    return float(np.linalg.norm(self.data.qpos[self._indices] - self._goal))

  def render(self) -> np.ndarray:
    return np.ascontiguousarray(self._camera.render(), dtype=np.uint8)

  def reset(self) -> dict:
    if not self._seeded:
      self._gym.reset(seed=self._seed)
      self._seeded = True
    else:
      self._gym.reset()
    self._env_steps = 0
    self._completed = False
    self._needs_reset = False
    return make_time_step(self.observe(), is_first=True, action=self._zero_action())

  def _env_step(self, action) -> tuple[float, bool]:
    """One gym step; returns (reward, element completed at this step)."""
    self._gym.robot_env.step(action)
    self._env_steps += 1
    if self._completed:
      return 0.0, False
    dist = self.distance()
    if dist < self._threshold:
      self._completed = True
      return (1.0 if self.eval_mode else 0.0), True
    return (0.0 if self.eval_mode else -dist), False

  def step(self, action) -> dict:
    action = check_action(action, self.action_dim)
    self._check_stepable()
    reward, last = 0.0, False
    for _ in range(self.action_repeat):
      r, done = self._env_step(action.astype(np.float64))
      reward += r
      if self.eval_mode and done:
        last = True
      if self._env_steps >= EPISODE_ENV_STEPS:
        last = True
      if last:
        break
    if self.eval_mode:
      reward = min(reward, 1.0)
    self._needs_reset = last
    return make_time_step(self.observe(), reward=reward, discount=1.0, is_last=last, action=action)

  def close(self) -> None:
    self._camera = None
    physics, self._physics = getattr(self, "_physics", None), None
    if physics is not None:
      physics.free()
    gym_env = getattr(self, "_gym", None)
    if gym_env is not None:
      gym_env.close()


def make_kitchen(task: str,
                 seed: int = 0,
                 *,
                 fast_render: bool = False,
                 action_repeat: int = 2,
                 size: int = 64,
                 eval_mode: bool = False):
  return KitchenPixelEnv(task,
                         seed,
                         fast_render=fast_render,
                         action_repeat=action_repeat,
                         size=size,
                         eval_mode=eval_mode)
