"""GenRL's extra walker tasks (poses, flips, moving backwards) on dm_control's walker.

The reference's walker model is the standard planar walker, so dm_control's model
and initialisation are reused; only the rewards differ. ``walk``/``run``/``stand``
are not here: they come from dm_control unchanged.
"""

from __future__ import annotations

import functools

from dm_control.suite import walker
from dm_control.utils import containers

from genrl_jax.envs import poses, suite_tasks

TIME_LIMIT = 25.0
CONTROL_TIMESTEP = 0.025
WALKER_STAND_HEIGHT = 1.2  # dm_control walker's stand height (high_kick, urlb_flip)

SUITE = containers.TaggedTasks()


class Physics(poses.PlanarBodyMixin, walker.Physics):
  """dm_control walker physics plus the planar read-outs used by the poses."""


class YogaPlanarWalker(walker.PlanarWalker):
  """dm_control's walker task (random joint initialisation) with another reward."""

  def __init__(self, reward_fn, random=None):
    super().__init__(move_speed=0, random=random)
    self._reward_fn = reward_fn

  def get_reward(self, physics):
    return self._reward_fn(physics)


REWARDS = {
    **poses.pose_rewards(WALKER_STAND_HEIGHT),
    "walk_backwards": functools.partial(poses.move_backwards, speed=poses.WALK_SPEED),
    "run_backwards": functools.partial(poses.move_backwards, speed=poses.RUN_SPEED),
}

suite_tasks.add_reward_tasks(SUITE,
                             REWARDS,
                             lambda: Physics.from_xml_string(*walker.get_model_and_assets()),
                             YogaPlanarWalker,
                             TIME_LIMIT,
                             control_timestep=CONTROL_TIMESTEP,
                             domain="walker")
