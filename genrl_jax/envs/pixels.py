"""Pixel environments with GenRL's time-step dictionaries.

Every environment returns, from ``reset()`` and ``step(action)``, a dict:

- ``observation``: (size, size, 3) uint8 RGB frame (HWC; episode files store CHW),
- ``reward``: float32, summed over the action repeat (0 on reset),
- ``discount``: float32 (1 in DMC), ``is_terminal`` = (discount == 0),
- ``is_first`` / ``is_last``: bool,
- ``action``: float32, the clipped [-1, 1] action that led to this frame (zeros on reset).
"""

from __future__ import annotations

import numpy as np


def check_action(action, action_dim: int) -> np.ndarray:
  """Validates an agent action and returns it clipped to [-1, 1] as float32.

    Raises ValueError for a wrong shape or non-finite values.
    """
  try:
    array = np.asarray(action, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(
        f"action must be a float array of shape ({action_dim},); got {action!r}") from e
  if array.shape != (action_dim,):
    raise ValueError(f"action must have shape ({action_dim},), got shape {array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"action of shape ({action_dim},) must be finite, got {array.tolist()}")
  return np.clip(array, -1.0, 1.0).astype(np.float32)


def make_time_step(observation,
                   *,
                   reward=0.0,
                   discount=1.0,
                   is_first=False,
                   is_last=False,
                   action) -> dict:
  discount = np.float32(discount)
  return {
      "observation": observation,
      "reward": np.float32(reward),
      "discount": discount,
      "is_first": bool(is_first),
      "is_last": bool(is_last),
      "is_terminal": bool(discount == 0),
      "action": np.asarray(action, dtype=np.float32),
  }


class Env:
  """Base class: ``task``, ``action_dim``, ``obs_shape``, ``reset()``, ``step()``."""

  task: str
  action_dim: int
  obs_shape: tuple
  action_repeat: int

  def __init__(self, task: str, action_dim: int, size: int, action_repeat: int):
    if action_repeat < 1:
      raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    self.task = task
    self.action_dim = int(action_dim)
    self.size = int(size)
    self.obs_shape = (self.size, self.size, 3)
    self.action_repeat = int(action_repeat)
    self._needs_reset = True
    # True: observations are black frames, nothing is rendered (returns only, e.g. the
    # random-policy baseline; `make_env(render=False)`).
    self.blind = False

  @property
  def obs_space(self) -> dict:
    """Shapes and dtypes of the time-step entries (method.md §9.1, HWC here)."""
    return {
        "observation": (self.obs_shape, np.uint8),
        "reward": ((), np.float32),
        "discount": ((), np.float32),
        "is_first": ((), np.bool_),
        "is_last": ((), np.bool_),
        "is_terminal": ((), np.bool_),
        "action": ((self.action_dim,), np.float32),
    }

  def _zero_action(self) -> np.ndarray:
    return np.zeros((self.action_dim,), np.float32)

  def _check_stepable(self):
    if self._needs_reset:
      raise RuntimeError(f"{self.task}: call reset() before step() (and after the last step)")

  def reset(self) -> dict:  # pragma: no cover - abstract
    raise NotImplementedError

  def step(self, action) -> dict:  # pragma: no cover - abstract
    raise NotImplementedError

  def render(self) -> np.ndarray:  # pragma: no cover - abstract
    raise NotImplementedError

  def observe(self) -> np.ndarray:
    """The frame of a time step: `render()`, or black when the env is `blind`."""
    return np.zeros(self.obs_shape, np.uint8) if self.blind else self.render()

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __repr__(self):
    return (f"{type(self).__name__}(task={self.task!r}, action_dim={self.action_dim}, "
            f"obs_shape={self.obs_shape}, action_repeat={self.action_repeat})")


class DMCPixelEnv(Env):
  """A dm_control ``control.Environment`` seen through a camera.

    Order as in the reference stack: the [-1, 1] action is clipped, rescaled to the
    action spec's bounds, repeated ``action_repeat`` times (rewards summed, stopping
    at the last step), then one frame is rendered from ``camera_id``.
    """

  def __init__(self,
               task: str,
               dm_env,
               *,
               camera_id: int = 0,
               size: int = 64,
               action_repeat: int = 2,
               fast_render: bool = False):
    spec = dm_env.action_spec()
    super().__init__(task, spec.shape[0], size, action_repeat)
    self._env = dm_env
    self.camera_id = int(camera_id)
    self._low = np.asarray(spec.minimum, np.float64) * np.ones(spec.shape)
    self._high = np.asarray(spec.maximum, np.float64) * np.ones(spec.shape)
    self._action_dtype = spec.dtype
    self.fast_render = bool(fast_render)
    if fast_render:
      from genrl_jax.envs.rendering import apply_fast_render

      apply_fast_render(self.physics.model.ptr, self.size)

  @property
  def physics(self):
    return self._env.physics

  @property
  def dm_env(self):
    return self._env

  def render(self) -> np.ndarray:
    frame = self.physics.render(height=self.size, width=self.size, camera_id=self.camera_id)
    return np.ascontiguousarray(frame, dtype=np.uint8)

  def reset(self) -> dict:
    self._env.reset()
    self._needs_reset = False
    return make_time_step(self.observe(), is_first=True, action=self._zero_action())

  def step(self, action) -> dict:
    action = check_action(action, self.action_dim)
    self._check_stepable()
    scaled = self._low + (action.astype(np.float64) + 1.0) * 0.5 * (self._high - self._low)
    scaled = scaled.astype(self._action_dtype)
    reward, discount = 0.0, 1.0
    for _ in range(self.action_repeat):
      ts = self._env.step(scaled)
      reward += (ts.reward or 0.0) * discount
      discount *= 1.0 if ts.discount is None else ts.discount
      if ts.last():
        break
    last = ts.last()
    self._needs_reset = last
    return make_time_step(self.observe(),
                          reward=reward,
                          discount=discount,
                          is_last=last,
                          action=action)

  def close(self) -> None:
    self._env.close()
