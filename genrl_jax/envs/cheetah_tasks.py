"""GenRL's extra cheetah tasks on dm_control's cheetah (model and initialisation:
random limited joints, then 200 settling physics steps).

The reference's cheetah model has a longer, narrower floor; its exact size is not
in the specification, so dm_control's standard cheetah model is used here.
"""

from __future__ import annotations

import functools

import mujoco
from dm_control.suite import cheetah
from dm_control.utils import containers

from genrl_jax.envs import suite_tasks
from genrl_jax.envs.poses import INF, tol

TIME_LIMIT = 10.0  # physics dt 0.01, no explicit control dt: 1000 control steps
RUN_SPEED = 10.0
SPIN_SPEED = 5.0

SUITE = containers.TaggedTasks()


class Physics(cheetah.Physics):

  def angular_momentum(self) -> float:
    mujoco.mj_subtreeVel(self.model.ptr, self.data.ptr)
    return float(self.named.data.subtree_angmom["torso"][1])

  def body_z(self, name: str) -> float:
    return float(self.named.data.xpos[name, "z"])


def run_backward(p) -> float:
  return tol(-p.speed(), (RUN_SPEED, INF), margin=RUN_SPEED, sigmoid="linear", value_at_margin=0)


def flip(p, forward=True) -> float:
  # ``forward`` multiplies the momentum as a number, as in the reference (True=1,
  # False=0 there). -1 is used for the flip_backward task.
  sign = float(forward)
  return tol(sign * p.angular_momentum(), (SPIN_SPEED, INF),
             margin=SPIN_SPEED,
             sigmoid="linear",
             value_at_margin=0)


def flipping(p) -> float:
  # Reference quirk kept: the backward term uses forward=False, i.e. momentum * 0,
  # so it is always 0 and only forward flips are rewarded.
  return max(flip(p, True), flip(p, False))


def standing(p) -> float:
  feet = sorted((p.body_z("bfoot"), p.body_z("ffoot")))
  low = tol(feet[0], (-INF, 0.15), margin=0.15 * 1.5)
  high = tol(feet[1], (1.0, INF), margin=0.5)
  return low * high


def lying_down(p) -> float:
  torso = tol(p.body_z("torso"), (-INF, 0.15), margin=0.15 * 1.5)
  feet = tol(p.body_z("bfoot") + p.body_z("ffoot"), (0.45, INF), margin=0.15 * 1.5)
  return (torso + feet) / 2


REWARDS = {
    "run_backward": run_backward,
    "flip": functools.partial(flip, forward=True),
    "flip_backward": functools.partial(flip, forward=-1),
    "flipping": flipping,
    "standing": standing,
    "lying_down": lying_down,
}


class CustomCheetah(cheetah.Cheetah):

  def __init__(self, reward_fn, random=None):
    super().__init__(random=random)
    self._reward_fn = reward_fn

  def get_reward(self, physics):
    return self._reward_fn(physics)


suite_tasks.add_reward_tasks(SUITE,
                             REWARDS,
                             lambda: Physics.from_xml_string(*cheetah.get_model_and_assets()),
                             CustomCheetah,
                             TIME_LIMIT,
                             domain="cheetah")
