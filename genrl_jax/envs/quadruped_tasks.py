"""GenRL's quadruped tasks: dm_control's quadruped model with a 1000 m floor and
dm_control's initialisation (random orientation, dropped to the first
non-contacting height); ``walk`` overrides dm_control's (same reward, larger
floor). ``run`` is dm_control's own and is not here.
"""

from __future__ import annotations

import numpy as np
from dm_control.suite import common, quadruped
from dm_control.utils import containers

from genrl_jax.envs import suite_tasks
from genrl_jax.envs.poses import INF, tol

TIME_LIMIT = 20.0
CONTROL_TIMESTEP = 0.02
FLOOR_SIZE = 1000
WALK_SPEED = 0.5
TOES = ("toe_front_left", "toe_back_left", "toe_back_right", "toe_front_right")

SUITE = containers.TaggedTasks()


def upright(p) -> float:
  # tol(zz, [1, inf), linear, margin 2, value 0 at margin) == (1 + zz) / 2
  return tol(p.torso_upright(), (1.0, INF), margin=2.0, sigmoid="linear", value_at_margin=0)


def walk(p) -> float:
  return upright(p) * tol(p.torso_velocity()[0], (WALK_SPEED, INF),
                          margin=WALK_SPEED,
                          sigmoid="linear",
                          value_at_margin=0.5)


def stand(p) -> float:
  return upright(p)


def jump(p) -> float:
  com_z = float(p.named.data.subtree_com["torso", "z"])  # centre of mass of the body
  return upright(p) * tol(com_z, (1.0, INF), margin=1.0, sigmoid="linear", value_at_margin=0.5)


def lie_down(p) -> float:
  return tol(float(p.named.data.xpos["torso", "z"]), (-INF, 0.2), margin=0.3)


def two_legs(p) -> float:
  toes = np.sort(p.named.data.xpos[list(TOES), "z"])
  # Reference quirk kept: margin 0.8 // 2 == 0, a hard 0/1 factor.
  high = tol(float(toes[2:].mean()), (0.8, INF), margin=0.8 // 2)
  low = tol(float(toes[:2].mean()), (-INF, 0.2), margin=0.3)
  return high * low


REWARDS = {
    "walk": walk,
    "stand": stand,
    "jump": jump,
    "lie_down": lie_down,
    "two_legs": two_legs,
}


class CustomQuadruped(quadruped.Move):

  def __init__(self, reward_fn, random=None):
    super().__init__(desired_speed=WALK_SPEED, random=random)
    self._reward_fn = reward_fn

  def get_reward(self, physics):
    return self._reward_fn(physics)


suite_tasks.add_reward_tasks(SUITE,
                             REWARDS,
                             lambda: quadruped.Physics.from_xml_string(
                                 quadruped.make_model(floor_size=FLOOR_SIZE), common.ASSETS),
                             CustomQuadruped,
                             TIME_LIMIT,
                             control_timestep=CONTROL_TIMESTEP,
                             domain="quadruped")
