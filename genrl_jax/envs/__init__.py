"""Pixel environments of GenRL: dm_control (walker, cheetah, quadruped, stickman) and
the Franka kitchen, all returning GenRL's time-step dicts.

    from genrl_jax.envs import make_env, list_tasks, task_info
    env = make_env("stickman_walk", seed=0, fast_render=True)
    ts = env.reset(); ts = env.step(np.zeros(env.action_dim))
    task_info("stickman_walk")  # prompt, video prompt, score bounds (genrl_jax list-tasks)

Importing this package selects a headless OpenGL backend (``MUJOCO_GL``) before
MuJoCo is imported; import it before ``mujoco``/``dm_control``.
"""

from genrl_jax.envs.rendering import select_gl_backend as _select_gl_backend

_select_gl_backend()

from genrl_jax.envs.pixels import Env  # noqa: E402
from genrl_jax.envs.registry import list_tasks, make_env, split_task  # noqa: E402
from genrl_jax.envs.tasks import (  # noqa: E402
    TaskInfo, describe_tasks, normalized_score, paper_tasks, task_info)


def register_dm_control_domains() -> None:
  """Adds the stickman domain to ``dm_control.suite`` so that
    ``suite.load('stickman', 'walk')`` works (also done by importing
    ``genrl_jax.envs.stickman``, ``make_env`` or ``list_tasks``)."""
  from genrl_jax.envs.stickman import register_with_suite

  register_with_suite()


__all__ = [
    "Env", "TaskInfo", "describe_tasks", "list_tasks", "make_env", "normalized_score",
    "paper_tasks", "register_dm_control_domains", "split_task", "task_info"
]
