"""Stickman: GenRL's planar humanoid as a dm_control suite domain.

The model (``assets/stickman.xml``) is the planar walker's legs plus a neck, a
head and two arms; 13 DoF, 10 motors. This module follows the layout of a
dm_control suite domain (``SUITE`` of task constructors), so it can be added to
``dm_control.suite`` (:func:`register_with_suite`) and loaded with
``suite.load('stickman', 'walk')``.
"""

from __future__ import annotations

import functools
import os

from dm_control import mujoco
from dm_control.suite import base, common
from dm_control.suite.utils import randomizers
from dm_control.utils import containers

from genrl_jax.envs import poses, suite_tasks

TIME_LIMIT = 25.0
CONTROL_TIMESTEP = 0.025  # 10 physics steps of 0.0025 s: 1000 control steps per episode.

ASSET_DIR = os.path.join(os.path.dirname(__file__), "assets")
MODEL_PATH = os.path.join(ASSET_DIR, "stickman.xml")

SUITE = containers.TaggedTasks()


def get_model_and_assets():
  """Returns the MJCF string and the dm_control common assets it includes."""
  with open(MODEL_PATH, "r", encoding="utf-8") as f:
    return f.read(), common.ASSETS


class Physics(poses.PlanarBodyMixin, mujoco.Physics):
  """Stickman physics with the read-outs used by the rewards (torso_upright,
    torso_height, horizontal_velocity, angular_momentum, body_z, ...)."""


class Stickman(base.Task):
  """A stickman task: random joint initialisation and a reward function."""

  def __init__(self, reward_fn, random=None):
    self._reward_fn = reward_fn
    super().__init__(random=random)

  def initialize_episode(self, physics):
    # Limited joints uniform in their range, the unlimited root hinge in [-pi, pi].
    randomizers.randomize_limited_and_rotational_joints(physics, self.random)
    super().initialize_episode(physics)

  def get_observation(self, physics):
    return {
        "orientations": physics.orientations(),
        "height": physics.torso_height(),
        "velocity": physics.velocity(),
    }

  def get_reward(self, physics):
    return self._reward_fn(physics)


# Reward function of every task (all take the physics).
REWARDS = {
    "walk": functools.partial(poses.move, speed=poses.WALK_SPEED),
    "run": functools.partial(poses.move, speed=poses.RUN_SPEED),
    # Reference quirk kept: speed 0 gives a 0/1 "not moving backwards" factor.
    "stand": functools.partial(poses.move, speed=0.0),
    "hands_up": poses.hands_up,
    "boxing": poses.boxing,
    **poses.pose_rewards(poses.STAND_HEIGHT),
}

suite_tasks.add_reward_tasks(SUITE,
                             REWARDS,
                             lambda: Physics.from_xml_string(*get_model_and_assets()),
                             Stickman,
                             TIME_LIMIT,
                             control_timestep=CONTROL_TIMESTEP,
                             domain="stickman")


def register_with_suite() -> None:
  """Adds the stickman domain to ``dm_control.suite`` (idempotent)."""
  import sys

  from dm_control import suite

  module = sys.modules[__name__]
  if suite._DOMAINS.get("stickman") is module:  # pylint: disable=protected-access
    return
  suite._DOMAINS["stickman"] = module  # pylint: disable=protected-access
  new = tuple(("stickman", name) for name in SUITE.keys())
  suite.ALL_TASKS = tuple(t for t in suite.ALL_TASKS if t[0] != "stickman") + new
  suite.EXTRA = tuple(sorted(set(suite.EXTRA) | set(new)))
  suite.TASKS_BY_DOMAIN = dict(suite.TASKS_BY_DOMAIN, stickman=tuple(SUITE.keys()))


register_with_suite()
