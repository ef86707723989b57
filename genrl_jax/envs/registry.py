"""Task registry: ``make_env('domain_task')`` and ``list_tasks()``."""

from __future__ import annotations

import difflib

# Kitchen task names (the element table lives in kitchen.py; kept here so that
# listing tasks does not import gymnasium-robotics).
KITCHEN_TASKS = ("microwave", "kettle", "burner", "light", "slide", "hinge", "top_burner")

# The dm_control tasks `dmc.dmc_task_names()` builds (the suite's and our custom ones),
# named here so that listing tasks (and so loading a config) imports no simulator: the
# benchmarks run where dm_control and MuJoCo are not installed. tests/test_envs.py checks
# that the two lists agree.
DMC_TASKS = (
    "cheetah_flip", "cheetah_flip_backward", "cheetah_flipping", "cheetah_lying_down",
    "cheetah_run", "cheetah_run_backward", "cheetah_standing", "quadruped_jump",
    "quadruped_lie_down", "quadruped_run", "quadruped_stand", "quadruped_two_legs",
    "quadruped_walk", "stickman_arabesque", "stickman_backflip", "stickman_boxing",
    "stickman_flip", "stickman_flipping", "stickman_hands_up", "stickman_headstand",
    "stickman_high_kick", "stickman_legs_up", "stickman_lunge_pose", "stickman_lying_down",
    "stickman_one_foot", "stickman_run", "stickman_sit_knees", "stickman_stand",
    "stickman_urlb_flip", "stickman_walk", "walker_arabesque", "walker_backflip",
    "walker_flip", "walker_flipping", "walker_headstand", "walker_high_kick",
    "walker_legs_up", "walker_lunge_pose", "walker_lying_down", "walker_one_foot",
    "walker_run", "walker_run_backwards", "walker_sit_knees", "walker_stand",
    "walker_urlb_flip", "walker_walk", "walker_walk_backwards",
)


def split_task(name: str) -> tuple[str, str]:
  """'walker_walk' -> ('walker', 'walk'); split at the first underscore."""
  domain, sep, task = name.partition("_")
  if not sep or not domain or not task:
    raise ValueError(f"task names look like 'domain_task' (e.g. 'walker_walk'), got {name!r}")
  return domain, task


def list_tasks() -> list[str]:
  """All task names accepted by :func:`make_env`, sorted."""
  return sorted(DMC_TASKS + tuple(f"kitchen_{t}" for t in KITCHEN_TASKS))


def unknown_task_error(name: str,
                       tasks: list[str],
                       listing: str = "genrl_jax.envs.list_tasks()") -> ValueError:
  """The error for a task name not in `tasks`, naming the closest matches and where
    `listing` shows them all."""
  close = difflib.get_close_matches(name, tasks, n=5, cutoff=0.5)
  hint = f" Did you mean: {', '.join(close)}?" if close else ""
  return ValueError(f"unknown task {name!r}.{hint} See {listing} for all {len(tasks)} tasks.")


def make_env(task: str,
             seed: int = 0,
             *,
             fast_render: bool = False,
             action_repeat: int = 2,
             size: int = 64,
             render: bool = True,
             **kwargs):
  """Builds a pixel environment for ``task`` (e.g. 'walker_walk', 'stickman_walk',
    'quadruped_run', 'kitchen_microwave').

    Args:
      task: 'domain_task', split at the first underscore.
      seed: seeds the task's randomness (same seed and actions -> same episode).
      fast_render: no shadows, a size x size offscreen buffer and no multisampling
        (much cheaper; frames differ slightly from the reference look).
      action_repeat: env steps per agent step (rewards summed).
      size: frame height and width.
      render: False: observations are black frames and nothing is rendered (rewards
        only: a random-policy baseline is then several times faster).
      **kwargs: domain options (kitchen: ``eval_mode``; dm_control: ``time_limit``).
    """
  from genrl_jax.envs.rendering import require_gl_backend

  tasks = list_tasks()
  if not isinstance(task, str) or task not in tasks:
    raise unknown_task_error(str(task), tasks)
  require_gl_backend()
  domain, name = split_task(task)
  if domain == "kitchen":
    from genrl_jax.envs.kitchen import make_kitchen

    env = make_kitchen(name,
                       seed,
                       fast_render=fast_render,
                       action_repeat=action_repeat,
                       size=size,
                       **kwargs)
  else:
    from genrl_jax.envs.dmc import make_dmc

    env = make_dmc(domain,
                   name,
                   seed,
                   fast_render=fast_render,
                   action_repeat=action_repeat,
                   size=size,
                   **kwargs)
  env.blind = not render
  return env
