"""Reward terms of GenRL's planar-body tasks (stickman and custom walker tasks).

Every function takes a physics object providing the helpers of
:class:`PlanarBodyMixin` and returns a float in [0, 1]. Formulas and constants
follow the reference specification (section 9.2); ``tol`` is dm_control's
``rewards.tolerance`` (gaussian sigmoid, value 0.1 at the margin, unless said).
"""

from __future__ import annotations

import functools

import mujoco
import numpy as np
from dm_control.utils import rewards

INF = float("inf")

# Shared constants (stickman values; walker uses its own stand height 1.2 where noted).
STAND_HEIGHT = 1.15
WALK_SPEED = 1.0
RUN_SPEED = 8.0
YOGA_HANDS_UP_HEIGHT = 1.75
YOGA_STAND_HEIGHT = 1.0
YOGA_LIE_DOWN_HEIGHT = 0.1
YOGA_LEGS_UP_HEIGHT = 1.1
YOGA_FEET_UP_HEIGHT = 0.5
YOGA_FEET_UP_LIE_DOWN_HEIGHT = 0.35
YOGA_KNEE_HEIGHT = 0.25
YOGA_KNEESTANDING_HEIGHT = 0.75
YOGA_SITTING_HEIGHT = 0.55
YOGA_SITTING_LEGS_HEIGHT = 0.15
SPIN_SPEED = 5.0
PUNCH_SPEED = 5.0
FLIP_SPEED = 16.0


def tol(x, bounds, margin=0.0, sigmoid="gaussian", value_at_margin=0.1) -> float:
  return float(
      rewards.tolerance(x,
                        bounds=bounds,
                        margin=margin,
                        sigmoid=sigmoid,
                        value_at_margin=value_at_margin))


class PlanarBodyMixin:
  """Read-outs of a planar body whose root body is ``torso`` (needs the
    ``torso_subtreelinvel`` sensor)."""

  def torso_upright(self) -> float:
    return float(self.named.data.xmat["torso", "zz"])

  def torso_height(self) -> float:
    return float(self.named.data.xpos["torso", "z"])

  def horizontal_velocity(self) -> float:
    return float(self.named.data.sensordata["torso_subtreelinvel"][0])

  def _subtree_velocities(self):
    # Filled by mj_subtreeVel (run by the subtree sensor); recompute to be safe.
    mujoco.mj_subtreeVel(self.model.ptr, self.data.ptr)

  def angular_momentum(self) -> float:
    """y component of the torso subtree's angular momentum about its COM."""
    self._subtree_velocities()
    return float(self.named.data.subtree_angmom["torso"][1])

  def body_linear_velocity_x(self, name: str) -> float:
    self._subtree_velocities()
    return float(self.named.data.subtree_linvel[name][0])

  def orientations(self) -> np.ndarray:
    return self.named.data.xmat[1:, ["xx", "xz"]].ravel()

  def body_z(self, name: str) -> float:
    return float(self.named.data.xpos[name, "z"])

  def body_x(self, name: str) -> float:
    return float(self.named.data.xpos[name, "x"])

  def body_zz(self, name: str) -> float:
    return float(self.named.data.xmat[name, "zz"])


def _feet_z(p):
  return p.body_z("left_foot"), p.body_z("right_foot")


# ---------------------------------------------------------------------------------------
# Standing and moving.


def standing(p, stand_height: float = STAND_HEIGHT) -> float:
  height = tol(p.torso_height(), (stand_height, INF), margin=stand_height / 2)
  upright = (1 + p.torso_upright()) / 2
  return (3 * height + upright) / 4


def move(p, speed: float, stand_height: float = STAND_HEIGHT) -> float:
  """stand * (5 * move + 1) / 6. With speed 0 the margin is 0, so ``move`` is the
    hard indicator v_x >= 0 (the reference's stand quirk)."""
  stand = standing(p, stand_height)
  moving = tol(p.horizontal_velocity(), (speed, INF),
               margin=speed / 2,
               sigmoid="linear",
               value_at_margin=0.5)
  return stand * (5 * moving + 1) / 6


def move_backwards(p, speed: float, stand_height: float = YOGA_STAND_HEIGHT) -> float:
  stand = standing(p, stand_height)
  moving = tol(p.horizontal_velocity(), (-INF, -speed),
               margin=speed / 2,
               sigmoid="linear",
               value_at_margin=0.5)
  return stand * (5 * moving + 1) / 6


def hands_up(p, stand_height: float = STAND_HEIGHT) -> float:
  hands = (p.body_z("left_hand") + p.body_z("right_hand")) / 2
  return standing(p, stand_height) * tol(hands, (YOGA_HANDS_UP_HEIGHT, INF),
                                         margin=YOGA_HANDS_UP_HEIGHT / 2)


def boxing(p, stand_height: float = STAND_HEIGHT) -> float:
  punch = max(abs(p.body_linear_velocity_x("left_hand")),
              abs(p.body_linear_velocity_x("right_hand")))
  return standing(p, stand_height) * tol(
      punch, (PUNCH_SPEED, INF), margin=PUNCH_SPEED / 2, sigmoid="linear", value_at_margin=0.5)


# ---------------------------------------------------------------------------------------
# Yoga poses.


def _lie_down_terms(p):
  torso_down = tol(p.torso_height(), (-INF, YOGA_LIE_DOWN_HEIGHT),
                   margin=YOGA_LIE_DOWN_HEIGHT * 1.5)
  horizontal = 1 - abs(p.torso_upright())
  return torso_down, horizontal


def _down(z):
  return tol(z, (-INF, YOGA_LIE_DOWN_HEIGHT), margin=YOGA_LIE_DOWN_HEIGHT * 1.5)


def lying_down(p) -> float:
  torso_down, horizontal = _lie_down_terms(p)
  thighs = _down((p.body_z("left_thigh") + p.body_z("right_thigh")) / 2)
  feet = _down(sum(_feet_z(p)) / 2)
  legs = _down((p.body_z("left_leg") + p.body_z("right_leg")) / 2)
  return (3 * torso_down + horizontal + thighs + feet + legs) / 7


def legs_up(p) -> float:
  torso_down, horizontal = _lie_down_terms(p)
  feet_up = tol(sum(_feet_z(p)) / 2, (YOGA_FEET_UP_LIE_DOWN_HEIGHT, INF),
                margin=YOGA_FEET_UP_LIE_DOWN_HEIGHT / 2)
  return (3 * torso_down + horizontal) / 4 * feet_up


def arabesque(p) -> float:
  left, right = _feet_z(p)
  if left >= right:
    high, low = "left_foot", "right_foot"
  else:
    high, low = "right_foot", "left_foot"
  torso = tol(p.torso_height(), (YOGA_STAND_HEIGHT, INF), margin=YOGA_STAND_HEIGHT / 2)
  low_down = tol(p.body_z(low), (-INF, YOGA_LIE_DOWN_HEIGHT), margin=YOGA_LIE_DOWN_HEIGHT * 1.5)
  high_up = tol(p.body_z(high), (YOGA_STAND_HEIGHT, INF), margin=YOGA_STAND_HEIGHT / 2)
  behind = 0.1 if p.body_x(high) > p.body_x(low) else 1.0
  return torso * (low_down + 2 * high_up) / 3 * behind


def high_kick(p, kick_height: float = STAND_HEIGHT) -> float:
  feet = _feet_z(p)
  torso = tol(p.torso_height(), (YOGA_STAND_HEIGHT, INF), margin=YOGA_STAND_HEIGHT / 2)
  kick = tol(max(feet), (kick_height, INF), margin=kick_height / 2)
  planted = tol(min(feet), (-INF, YOGA_LIE_DOWN_HEIGHT), margin=YOGA_LIE_DOWN_HEIGHT * 1.5)
  return torso * (3 * kick + planted) / 4


def one_foot(p) -> float:
  feet = _feet_z(p)
  torso = tol(p.torso_height(), (YOGA_STAND_HEIGHT, INF), margin=YOGA_STAND_HEIGHT / 2)
  raised = tol(max(feet), (YOGA_FEET_UP_HEIGHT, INF), margin=YOGA_FEET_UP_HEIGHT / 2)
  planted = tol(min(feet), (-INF, YOGA_LIE_DOWN_HEIGHT), margin=YOGA_LIE_DOWN_HEIGHT * 1.5)
  return torso * raised * planted


def lunge_pose(p) -> float:
  torso = tol(p.torso_height(), (YOGA_KNEESTANDING_HEIGHT, INF),
              margin=YOGA_KNEESTANDING_HEIGHT / 2)
  upright = (1 + p.torso_upright()) / 2
  kneeling = (3 * torso + upright) / 4
  left_leg, right_leg = p.body_z("left_leg"), p.body_z("right_leg")
  if left_leg >= right_leg:
    high_side, low_side = "left", "right"
  else:
    high_side, low_side = "right", "left"
  knee_down = tol(min(left_leg, right_leg), (-INF, YOGA_LIE_DOWN_HEIGHT),
                  margin=YOGA_LIE_DOWN_HEIGHT * 1.5)
  shin_up = tol(max(left_leg, right_leg), (YOGA_KNEE_HEIGHT, INF), margin=YOGA_KNEE_HEIGHT / 2)
  front_thigh_flat = 1 - abs(p.body_zz(f"{high_side}_thigh"))
  back_shin_flat = 1 - abs(p.body_zz(f"{low_side}_leg"))
  pose = (knee_down + shin_up + front_thigh_flat + back_shin_flat) / 4
  return kneeling * pose


def sit_knees(p) -> float:
  torso = tol(p.torso_height(), (YOGA_SITTING_HEIGHT, INF), margin=YOGA_SITTING_HEIGHT / 2)
  upright = (1 + p.torso_upright()) / 2
  sitting = (3 * torso + upright) / 4
  legs = tol((p.body_z("left_leg") + p.body_z("right_leg")) / 2, (-INF, YOGA_SITTING_LEGS_HEIGHT),
             margin=YOGA_SITTING_LEGS_HEIGHT * 1.5)
  feet = tol(sum(_feet_z(p)) / 2, (-INF, YOGA_LIE_DOWN_HEIGHT), margin=YOGA_LIE_DOWN_HEIGHT * 1.5)
  knees = (3 * legs + feet) / 4

  def offset(side):
    return max(0.1, abs(p.body_x(f"{side}_foot") - p.body_x(f"{side}_thigh"))) - 0.1

  tucked = float(np.exp(-(offset("left") + offset("right")) / 2))
  return sitting * knees * tucked


# ---------------------------------------------------------------------------------------
# Flips and headstand.


def upside_down(p) -> float:
  feet = tol(sum(_feet_z(p)) / 2, (YOGA_LEGS_UP_HEIGHT, INF), margin=YOGA_LEGS_UP_HEIGHT / 2)
  thighs = tol((p.body_z("left_thigh") + p.body_z("right_thigh")) / 2, (YOGA_STAND_HEIGHT, INF),
               margin=YOGA_STAND_HEIGHT / 2)
  return (3 * feet + 2 * thighs) / 5


def flip(p, speed: float) -> float:
  """Headstand when ``speed == 0``; forward (> 0) or backward (< 0) flips otherwise."""
  pose = upside_down(p)
  if speed == 0:
    return pose
  bounds = (speed, INF) if speed > 0 else (-INF, speed)
  spin = tol(p.angular_momentum(),
             bounds,
             margin=abs(speed) / 2,
             sigmoid="linear",
             value_at_margin=0.5)
  return pose * (5 * spin + 1) / 6


def flipping(p) -> float:
  return max(flip(p, FLIP_SPEED), flip(p, -FLIP_SPEED))


def urlb_flip(p, stand_height: float = STAND_HEIGHT) -> float:
  spin = tol(p.angular_momentum(), (SPIN_SPEED, INF),
             margin=SPIN_SPEED,
             sigmoid="linear",
             value_at_margin=0.0)
  return standing(p, stand_height) * (5 * spin + 1) / 6


def pose_rewards(stand_height: float) -> dict:
  """The pose, flip and yoga rewards shared by Stickman and the walker, for a body whose
  standing torso height is `stand_height`."""
  return {
      "arabesque": arabesque,
      "lying_down": lying_down,
      "legs_up": legs_up,
      "high_kick": functools.partial(high_kick, kick_height=stand_height),
      "one_foot": one_foot,
      "lunge_pose": lunge_pose,
      "sit_knees": sit_knees,
      "headstand": functools.partial(flip, speed=0.0),
      "flip": functools.partial(flip, speed=FLIP_SPEED),
      "backflip": functools.partial(flip, speed=-FLIP_SPEED),
      "flipping": flipping,
      "urlb_flip": functools.partial(urlb_flip, stand_height=stand_height),
  }
