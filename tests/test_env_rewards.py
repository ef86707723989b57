"""Rewards of the custom walker, cheetah, quadruped and stickman tasks on hand-set states.

Expected values are worked out from the formulas of method.md §9.2 and the models' geometry,
not read back from the implementation. dm_control's tolerance, in the two forms used:
1 inside its bounds; outside, at d margins from them, the gaussian one is 0.1 ** (d ** 2)
(0.1 at the margin) and the linear one max(0, 1 - (1 - v) * d) (v at the margin).
"""

import math

import numpy as np
import pytest

import genrl_jax.envs  # noqa: F401  (selects MUJOCO_GL before mujoco is imported)
from genrl_jax.envs.dmc import load_dm_env

TOL = 1e-9


def above(x, low, margin):
  """Gaussian tol(x, [low, inf), margin)."""
  return 1.0 if x >= low else 0.1**(((low - x) / margin)**2)


def below(x, high, margin):
  """Gaussian tol(x, (-inf, high], margin)."""
  return 1.0 if x <= high else 0.1**(((x - high) / margin)**2)


def linear(distance, margin, value_at_margin):
  """Linear tolerance at `distance` outside the bounds."""
  return max(0.0, 1 - (1 - value_at_margin) * distance / margin)


def move(v, speed):
  """A standing body's move reward: (5 * tol(v, [speed, inf), speed / 2, linear, 0.5)
    + 1) / 6."""
  return (5 * (1.0 if v >= speed else linear(speed - v, speed / 2, 0.5)) + 1) / 6


def set_state(physics, qpos, qvel=None):
  with physics.reset_context():
    physics.data.qpos[:] = qpos
    physics.data.qvel[:] = 0 if qvel is None else qvel


def z(physics, body):
  return float(physics.named.data.xpos[body, "z"])


class Rewards:
  """The reward functions of one domain's tasks, all evaluated on the physics of the
    first task (a custom task: its physics has the read-outs of every task)."""

  def __init__(self, domain, tasks):
    self.envs = {t: load_dm_env(domain, t) for t in tasks}
    self.physics = self.envs[tasks[0]].physics

  def __call__(self, task):
    return float(self.envs[task].task.get_reward(self.physics))


# ---------------------------------------------------------------------------------------
# Walker. dm_control's planar walker at qpos 0: torso at z 1.3, hips 0.3 below it; thigh
# 0.45 (hip to knee), shin 0.5 (knee to ankle); the 'leg' body sits mid-shin and the
# 'foot' body 0.06 ahead of the ankle (so feet at z 0.05). qpos: rootz, rootx, rooty,
# right hip/knee/ankle, left hip/knee/ankle. A positive hip angle swings the leg forward.

RIGHT_HIP, RIGHT_KNEE, LEFT_HIP, LEFT_KNEE = 3, 4, 6, 7
WALKER_TASKS = ("lying_down", "stand", "legs_up", "one_foot", "high_kick", "arabesque", "sit_knees",
                "lunge_pose", "headstand", "flip", "backflip", "flipping", "urlb_flip",
                "walk_backwards", "run_backwards")


@pytest.fixture(scope="module")
def walker():
  return Rewards("walker", WALKER_TASKS)


def walker_qpos(torso_z=1.3, rooty=0.0, **joints):
  qpos = np.zeros(9)
  qpos[0], qpos[2] = torso_z - 1.3, rooty
  index = {
      "right_hip": RIGHT_HIP,
      "right_knee": RIGHT_KNEE,
      "left_hip": LEFT_HIP,
      "left_knee": LEFT_KNEE
  }
  for name, degrees in joints.items():
    qpos[index[name]] = math.radians(degrees)
  return qpos


def test_walker_geometry(walker):
  p = walker.physics
  set_state(p, walker_qpos())
  for body, height in (("torso", 1.3), ("left_thigh", 1.0), ("left_leg", 0.3), ("left_foot", 0.05)):
    assert z(p, body) == pytest.approx(height), body
  set_state(p, walker_qpos(left_hip=90))
  np.testing.assert_allclose(p.named.data.xpos["left_foot", ["x", "z"]], [0.95, 1.06], atol=TOL)


def test_walker_standing_vs_lying_flat(walker):
  p = walker.physics
  set_state(p, walker_qpos())  # standing upright, feet at 0.05, shins at 0.3, hips at 1.0
  assert walker("stand") == pytest.approx(1.0, abs=TOL)  # dm_control's stand reward
  down = lambda height: below(height, 0.1, 0.15)
  # torso, horizontal (1 - |upright|), thighs, feet, shins
  lying = (3 * down(1.3) + 0 + down(1.0) + down(0.05) + down(0.3)) / 7
  assert lying == pytest.approx(0.1452, abs=1e-4)
  assert walker("lying_down") == pytest.approx(lying, abs=TOL)

  set_state(p, walker_qpos(torso_z=0.06, rooty=math.pi / 2))  # lying flat, legs along -x
  assert p.torso_upright() == pytest.approx(0.0, abs=TOL)
  assert max(z(p, b) for b in ("left_thigh", "left_leg", "left_foot", "right_foot")) < 0.1
  assert walker("lying_down") == pytest.approx(1.0, abs=TOL)
  stand = (3 * above(0.06, 1.2, 0.6) + 0.5) / 4  # height 1.2, margin 0.6; upright (1+0)/2
  assert walker("stand") == pytest.approx(stand, abs=TOL)
  # legs_up: lying down, but the feet (at z ~0) are far below 0.35 (margin 0.175).
  assert walker("legs_up") == pytest.approx(above(0.0, 0.35, 0.175), abs=1e-6)


def test_walker_legs_up(walker):
  # Lying the other way (legs along +x), hips at 90 deg: legs straight up.
  set_state(walker.physics, walker_qpos(torso_z=0.06, rooty=-math.pi / 2, left_hip=90,
                                        right_hip=90))
  assert z(walker.physics, "left_foot") == pytest.approx(0.06 + 0.95, abs=TOL)
  assert walker("legs_up") == pytest.approx(1.0, abs=TOL)
  # torso and thighs down, horizontal; mid-shins (0.06 + 0.45 + 0.25) and feet up
  lying = (3 + 1 + 1 + below(0.76, 0.1, 0.15) + below(1.01, 0.1, 0.15)) / 7
  assert walker("lying_down") == pytest.approx(lying, abs=TOL)


def test_walker_one_foot_high_kick_arabesque(walker):
  p = walker.physics
  set_state(p, walker_qpos())  # both feet at 0.05
  assert walker("one_foot") == pytest.approx(above(0.05, 0.5, 0.25), abs=TOL)
  kick = above(0.05, 1.2, 0.6)  # the walker's kick height is its stand height 1.2
  assert walker("high_kick") == pytest.approx((3 * kick + 1) / 4, abs=TOL)

  # Left leg swung forward to 100 deg: foot at 1 - 0.95 cos(100) + 0.06 sin(100) = 1.224.
  set_state(p, walker_qpos(left_hip=100))
  foot = 1 - 0.95 * math.cos(math.radians(100)) + 0.06 * math.sin(math.radians(100))
  assert z(p, "left_foot") == pytest.approx(foot, abs=TOL) and foot > 1.2
  assert walker("one_foot") == pytest.approx(1.0, abs=TOL)
  assert walker("high_kick") == pytest.approx(1.0, abs=TOL)
  assert walker("arabesque") == pytest.approx(0.1, abs=TOL)  # raised foot in front: x 0.1

  # Swung back to -100 deg (beyond the joint range; rewards read positions only).
  set_state(p, walker_qpos(left_hip=-100))
  foot = 1 - 0.95 * math.cos(math.radians(-100)) + 0.06 * math.sin(math.radians(-100))
  assert z(p, "left_foot") == pytest.approx(foot, abs=TOL) and 1.0 < foot < 1.2
  assert walker("arabesque") == pytest.approx(1.0, abs=TOL)
  assert walker("high_kick") == pytest.approx((3 * above(foot, 1.2, 0.6) + 1) / 4, abs=TOL)


def test_walker_sit_knees(walker):
  p = walker.physics
  set_state(p, walker_qpos())
  # Standing: sitting term 1, shins at 0.3 (<= 0.15, margin 0.225), feet down, feet
  # 0.06 ahead of the hips (within 0.1: no penalty).
  expected = (3 * below(0.3, 0.15, 0.225) + 1) / 4
  assert walker("sit_knees") == pytest.approx(expected, abs=TOL)

  # Kneeling on the shins: thighs 60 deg forward, knees -150 deg (shins flat, pointing
  # back), knees on the floor: hips at 0.45 cos 60 = 0.225, torso at 0.525.
  torso = 0.3 + 0.45 * math.cos(math.radians(60))
  set_state(p, walker_qpos(torso_z=torso,
                           left_hip=60,
                           right_hip=60,
                           left_knee=-150,
                           right_knee=-150))
  assert z(p, "left_leg") == pytest.approx(0.0, abs=TOL)
  sitting = (3 * above(torso, 0.55, 0.275) + 1) / 4
  offset = abs(0.45 * math.sin(math.radians(60)) - 0.5)  # |foot x - thigh x| = 0.110
  expected = sitting * 1.0 * math.exp(-(2 * (offset - 0.1)) / 2)
  assert expected == pytest.approx(0.9758, abs=1e-4)
  assert walker("sit_knees") == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("front", ["left", "right"])
def test_walker_lunge_pose(walker, front):
  p = walker.physics
  set_state(p, walker_qpos())
  # Standing: kneeling term 1; shins at 0.3: low shin not down, high shin up, thigh and
  # shin vertical (1 - |zz| = 0).
  expected = (below(0.3, 0.1, 0.15) + 1 + 0 + 0) / 4
  assert walker("lunge_pose") == pytest.approx(expected, abs=TOL)

  # Hips at 0.5 (torso 0.8): the front thigh horizontal with its shin vertical (mid-shin
  # at 0.25), the back thigh vertical with its shin flat (mid-shin at 0.05).
  back = "right" if front == "left" else "left"
  joints = {f"{front}_hip": 90, f"{front}_knee": -90, f"{back}_knee": -90}
  set_state(p, walker_qpos(torso_z=0.8, **joints))
  assert z(p, f"{front}_leg") == pytest.approx(0.25, abs=TOL)
  assert z(p, f"{back}_leg") == pytest.approx(0.05, abs=TOL)
  assert walker("lunge_pose") == pytest.approx(1.0, abs=TOL)


def test_walker_headstand_and_flips(walker):
  p = walker.physics
  set_state(p, walker_qpos())  # standing: thighs at 1.0 (in bounds), feet at 0.05
  upside_down = (3 * above(0.05, 1.1, 0.55) + 2 * 1.0) / 5
  assert walker("headstand") == pytest.approx(upside_down, abs=1e-6)
  assert walker("urlb_flip") == pytest.approx(1 / 6, abs=TOL)  # standing, no spin

  upside = walker_qpos(torso_z=0.8, rooty=math.pi)  # thighs at 1.1, feet at 2.05
  set_state(p, upside)
  assert z(p, "left_foot") == pytest.approx(2.05, abs=TOL)
  assert walker("headstand") == pytest.approx(1.0, abs=TOL)
  for task in ("flip", "backflip", "flipping"):  # no spin: (5 * 0 + 1) / 6
    assert walker(task) == pytest.approx(1 / 6, abs=TOL), task

  for omega in (5.0, -5.0):
    qvel = np.zeros(9)
    qvel[2] = omega
    set_state(p, upside, qvel)
    assert abs(p.angular_momentum()) > 16  # beyond the flip speed
    forward, backward = (1.0, 1 / 6) if p.angular_momentum() > 0 else (1 / 6, 1.0)
    assert walker("flip") == pytest.approx(forward, abs=TOL)
    assert walker("backflip") == pytest.approx(backward, abs=TOL)
    assert walker("flipping") == pytest.approx(1.0, abs=TOL)  # both directions count


def test_walker_moving_backwards(walker):
  p = walker.physics
  assert (move(1, 1), move(0.5, 1), move(4, 8), move(0, 1)) == (1, 3.5 / 6, 3.5 / 6, 1 / 6)
  for vx in (0.0, 0.5, -0.5, -1.0, -4.0, -6.0, -8.0, -9.0):
    qvel = np.zeros(9)
    qvel[1] = vx  # the whole body slides: centre of mass velocity vx
    set_state(p, walker_qpos(), qvel)  # standing: the stand term is 1
    assert walker("walk_backwards") == pytest.approx(move(-vx, 1), abs=TOL), vx
    assert walker("run_backwards") == pytest.approx(move(-vx, 8), abs=TOL), vx


# ---------------------------------------------------------------------------------------
# Cheetah. At qpos 0 the torso is at z 0.7, the back foot 0.62 behind and 0.39 below it,
# the front foot 0.49 ahead and 0.42 below. qpos: rootx, rootz, rooty, then the legs.

CHEETAH_TASKS = ("standing", "lying_down", "flip", "flip_backward", "flipping", "run_backward")


@pytest.fixture(scope="module")
def cheetah():
  return Rewards("cheetah", CHEETAH_TASKS)


def cheetah_qpos(torso_z=0.7, rooty=0.0):
  qpos = np.zeros(9)
  qpos[1], qpos[2] = torso_z - 0.7, rooty
  return qpos


def test_cheetah_standing_vs_lying_down(cheetah):
  p = cheetah.physics
  set_state(p, cheetah_qpos())  # on four legs: feet at 0.31 (back) and 0.28 (front)
  assert (z(p, "bfoot"), z(p, "ffoot")) == pytest.approx((0.31, 0.28), abs=TOL)
  assert cheetah("standing") == pytest.approx(below(0.28, 0.15, 0.225) * above(0.31, 1.0, 0.5),
                                              abs=TOL)
  # torso far above 0.15; feet sum 0.59 >= 0.45
  assert cheetah("lying_down") == pytest.approx((below(0.7, 0.15, 0.225) + 1) / 2, abs=TOL)

  set_state(p, cheetah_qpos(rooty=-math.pi / 2))  # upright on the back legs
  assert z(p, "bfoot") == pytest.approx(0.7 - 0.62, abs=TOL)
  assert z(p, "ffoot") == pytest.approx(0.7 + 0.49, abs=TOL)
  assert cheetah("standing") == pytest.approx(1.0, abs=TOL)
  assert cheetah("lying_down") == pytest.approx((below(0.7, 0.15, 0.225) + 1) / 2, abs=TOL)

  set_state(p, cheetah_qpos(torso_z=0.1, rooty=math.pi))  # on its back, feet up
  feet = (0.1 + 0.39, 0.1 + 0.42)
  assert (z(p, "bfoot"), z(p, "ffoot")) == pytest.approx(feet, abs=TOL)
  assert cheetah("lying_down") == pytest.approx(1.0, abs=TOL)
  assert cheetah("standing") == pytest.approx(below(feet[0], 0.15, 0.225) *
                                              above(feet[1], 1.0, 0.5),
                                              abs=TOL)


def rigid_angular_momentum_y(physics, omega):
  """y angular momentum about the centre of mass of the body turning rigidly at `omega`
    about a y axis: omega * (sum of body inertias about y + sum m (dx^2 + dz^2))."""
  mass = physics.model.body_mass[1:]
  pos = physics.data.xipos[1:]
  com = (mass[:, None] * pos).sum(0) / mass.sum()
  inertia = 0.0
  for i in range(1, physics.model.nbody):
    rot = physics.data.ximat[i].reshape(3, 3)
    inertia += (rot @ np.diag(physics.model.body_inertia[i]) @ rot.T)[1, 1]
  inertia += float((mass * ((pos[:, 0] - com[0])**2 + (pos[:, 2] - com[2])**2)).sum())
  return omega * inertia


def test_cheetah_flips(cheetah):
  p = cheetah.physics
  for omega in (1.0, -1.0):
    qvel = np.zeros(9)
    qvel[2] = omega  # rooty turns about +y
    set_state(p, cheetah_qpos(), qvel)
    momentum = rigid_angular_momentum_y(p, omega)
    assert 1 < abs(momentum) < 5
    spin = lambda x: linear(5 - x, 5, 0) if x < 5 else 1.0  # tol(x, [5, inf), 5, linear, 0)
    assert cheetah("flip") == pytest.approx(spin(momentum), abs=1e-6)
    assert cheetah("flip_backward") == pytest.approx(spin(-momentum), abs=1e-6)
    # Reference quirk: the backward term of flipping is multiplied by False (0).
    assert cheetah("flipping") == pytest.approx(spin(momentum), abs=1e-6)
  assert cheetah("flipping") == 0 and cheetah("flip_backward") > 0.2


def test_cheetah_run_backward(cheetah):
  for vx, expected in ((-10.0, 1.0), (-5.0, 0.5), (-2.0, 0.2), (5.0, 0.0)):
    qvel = np.zeros(9)
    qvel[0] = vx
    set_state(cheetah.physics, cheetah_qpos(), qvel)
    assert cheetah("run_backward") == pytest.approx(expected, abs=TOL), vx


# ---------------------------------------------------------------------------------------
# Quadruped. Free root joint: qpos[:3] position, qpos[3:7] orientation quaternion
# (w, x, y, z); at qpos0 the torso is at z 0.57 and the four toes at 0.13.

QUADRUPED_TASKS = ("stand", "lie_down", "two_legs", "jump", "walk")


@pytest.fixture(scope="module")
def quadruped():
  return Rewards("quadruped", QUADRUPED_TASKS)


def quadruped_qpos(physics, torso_z=0.57, axis=(1, 0, 0), degrees=0.0):
  qpos = physics.model.qpos0.copy()
  half = math.radians(degrees) / 2
  qpos[2] = torso_z
  qpos[3:7] = [math.cos(half), *(math.sin(half) * np.asarray(axis, float))]
  return qpos


def toes(physics):
  return np.sort(
      [z(physics, f"toe_{t}") for t in ("front_left", "front_right", "back_left", "back_right")])


def test_quadruped_stand_and_lie_down(quadruped):
  p = quadruped.physics
  for degrees, upright in ((0, 1.0), (60, 0.75), (90, 0.5), (180, 0.0)):  # (1 + cos) / 2
    set_state(p, quadruped_qpos(p, degrees=degrees))
    assert quadruped("stand") == pytest.approx(upright, abs=TOL), degrees

  set_state(p, quadruped_qpos(p))
  np.testing.assert_allclose(toes(p), 0.13, atol=TOL)
  assert quadruped("lie_down") == pytest.approx(below(0.57, 0.2, 0.3), abs=TOL)
  set_state(p, quadruped_qpos(p, torso_z=0.15))
  assert quadruped("lie_down") == pytest.approx(1.0, abs=TOL)
  set_state(p, quadruped_qpos(p, torso_z=0.2 + 0.3))  # one margin above 0.2: 0.1
  assert quadruped("lie_down") == pytest.approx(0.1, abs=TOL)


def test_quadruped_two_legs(quadruped):
  p = quadruped.physics
  set_state(p, quadruped_qpos(p))
  assert quadruped("two_legs") == 0.0  # on four legs

  set_state(p, quadruped_qpos(p, torso_z=0.6, axis=(0, 1, 0), degrees=-90))  # reared up
  low, high = toes(p)[:2].mean(), toes(p)[2:].mean()
  assert high > 1.1 and low < 0.05
  assert quadruped("two_legs") == pytest.approx(1.0, abs=TOL)

  def reared(high_mean):
    set_state(p, quadruped_qpos(p, torso_z=0.6 + high_mean - high, axis=(0, 1, 0), degrees=-90))
    assert toes(p)[2:].mean() == pytest.approx(high_mean, abs=TOL)
    return quadruped("two_legs")

  # Reference quirk: margin 0.8 // 2 == 0, so the raised toes must clear 0.8 exactly.
  assert reared(0.795) == 0.0
  assert reared(0.805) == pytest.approx(1.0, abs=TOL)
  # The other two toes at 0.5, one margin (0.3) above 0.2: 0.1.
  assert reared(0.5 + high - low) == pytest.approx(0.1, abs=TOL)


def test_quadruped_jump_and_walk(quadruped):
  p = quadruped.physics
  set_state(p, quadruped_qpos(p))
  mass = p.model.body_mass[1:]
  com_z = float((mass * p.data.xipos[1:, 2]).sum() / mass.sum())
  assert 0.5 < com_z < 0.6
  assert quadruped("jump") == pytest.approx(linear(1 - com_z, 1, 0.5), abs=TOL)
  set_state(p, quadruped_qpos(p, torso_z=0.57 + 1 - com_z + 0.01))  # centre of mass at 1.01
  assert quadruped("jump") == pytest.approx(1.0, abs=TOL)
  set_state(p, quadruped_qpos(p, torso_z=1.6, degrees=60))
  assert quadruped("jump") == pytest.approx(0.75, abs=TOL)

  for vx, expected in ((0.5, 1.0), (0.25, 0.75), (0.0, 0.5), (-0.5, 0.0)):
    qvel = np.zeros(p.model.nv)
    qvel[0] = vx  # world-frame velocity; the torso is level, so also its local x velocity
    set_state(p, quadruped_qpos(p), qvel)
    assert quadruped("walk") == pytest.approx(expected, abs=TOL), vx


# ---------------------------------------------------------------------------------------
# Stickman tasks not covered by test_envs.py: hands up, boxing, walk and run speeds.
# qpos: rootz, rootx, rooty, legs (6), left shoulder/elbow, right shoulder/elbow. At
# qpos 0 the torso is at 1.25 and the hands hang at 0.85.

STICKMAN_TASKS = ("hands_up", "boxing", "walk", "run")


@pytest.fixture(scope="module")
def stickman():
  return Rewards("stickman", STICKMAN_TASKS)


def test_stickman_hands_up(stickman):
  p = stickman.physics
  set_state(p, np.zeros(13))
  assert z(p, "left_hand") == pytest.approx(0.85, abs=TOL)
  assert stickman("hands_up") == pytest.approx(above(0.85, 1.75, 0.875), abs=TOL)
  qpos = np.zeros(13)
  qpos[9:13] = np.radians([100, 80, 100, 80])  # shoulders 100 deg, elbows 80: hands up
  set_state(p, qpos)
  assert z(p, "left_hand") > 1.75 and z(p, "right_hand") > 1.75
  assert stickman("hands_up") == pytest.approx(1.0, abs=TOL)


def test_stickman_boxing_and_speeds(stickman):
  p = stickman.physics
  # boxing = tol(hand speed, [5, inf), 2.5, linear, 0.5): punches count either way
  for vx, boxing in ((0.0, 0.0), (0.5, 0.1), (1.0, 0.2), (2.5, 0.5), (4.0, 0.8), (-5.0, 1.0),
                     (8.0, 1.0)):
    qvel = np.zeros(13)
    qvel[1] = vx  # the whole body slides, hands included
    set_state(p, np.zeros(13), qvel)  # standing: the stand term is 1
    assert stickman("boxing") == pytest.approx(boxing, abs=TOL), vx
    assert stickman("walk") == pytest.approx(move(vx, 1), abs=TOL), vx
    assert stickman("run") == pytest.approx(move(vx, 8), abs=TOL), vx

  # One punch: only the left shoulder turns, at 5 rad/s; the hand, 0.6 below it, moves at
  # 3 m/s along x (the faster hand counts): 1 - 0.5 * (5 - 3) / 2.5.
  qvel = np.zeros(13)
  qvel[9] = 5.0
  set_state(p, np.zeros(13), qvel)
  assert abs(p.named.data.subtree_linvel["left_hand", "x"]) == pytest.approx(3.0, abs=TOL)
  assert stickman("boxing") == pytest.approx(0.6, abs=TOL)
