"""Registering dm_control tasks that differ only by their reward function."""

from __future__ import annotations

from typing import Callable, Mapping

from dm_control.rl import control
from dm_control.utils import containers


def add_reward_tasks(suite: containers.TaggedTasks,
                     rewards: Mapping[str, Callable],
                     make_physics: Callable[[], object],
                     task_class: type,
                     time_limit: float,
                     control_timestep: float | None = None,
                     domain: str = "") -> None:
  """Adds one suite constructor per entry of `rewards` (tag "custom").

  Each constructor builds `task_class(reward_fn, random=...)` on a fresh physics, with the
  domain's time limit and control timestep, like dm_control's own task constructors.
  """
  for name, reward_fn in rewards.items():

    def constructor(time_limit=time_limit,
                    random=None,
                    environment_kwargs=None,
                    reward_fn=reward_fn):
      kwargs = dict(environment_kwargs or {})
      if control_timestep is not None:
        kwargs.setdefault("control_timestep", control_timestep)
      return control.Environment(make_physics(),
                                 task_class(reward_fn, random=random),
                                 time_limit=time_limit,
                                 **kwargs)

    constructor.__name__ = name
    constructor.__doc__ = f"Returns the {domain} {name!r} task.".replace("  ", " ")
    suite.add("custom")(constructor)
