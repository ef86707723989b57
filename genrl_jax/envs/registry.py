"""Task registry: ``make_env('domain_task')`` and ``list_tasks()``."""

from __future__ import annotations

import difflib

# Kitchen task names (the element table lives in kitchen.py; kept here so that
# listing tasks does not import gymnasium-robotics).
KITCHEN_TASKS = ("microwave", "kettle", "burner", "light", "slide", "hinge", "top_burner")


def split_task(name: str) -> tuple[str, str]:
  """'walker_walk' -> ('walker', 'walk'); split at the first underscore."""
  domain, sep, task = name.partition("_")
  if not sep or not domain or not task:
    raise ValueError(f"task names look like 'domain_task' (e.g. 'walker_walk'), got {name!r}")
  return domain, task


def list_tasks() -> list[str]:
  """All task names accepted by :func:`make_env`, sorted."""
  from genrl_jax.envs.dmc import dmc_task_names

  return sorted(dmc_task_names() + [f"kitchen_{t}" for t in KITCHEN_TASKS])


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
