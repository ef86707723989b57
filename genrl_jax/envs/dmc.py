"""dm_control tasks: the standard suite plus GenRL's custom domains and tasks."""

from __future__ import annotations

from genrl_jax.envs import cheetah_tasks, quadruped_tasks, stickman, walker_tasks
from genrl_jax.envs.pixels import DMCPixelEnv

# Custom task containers, consulted before dm_control's own suite. They take
# precedence (GenRL's quadruped ``walk`` overrides dm_control's, with a larger floor).
CUSTOM_SUITES = {
    "stickman": stickman.SUITE,
    "walker": walker_tasks.SUITE,
    "cheetah": cheetah_tasks.SUITE,
    "quadruped": quadruped_tasks.SUITE,
}

# dm_control suite tasks used as they are.
STANDARD_TASKS = {
    "walker": ("walk", "run", "stand"),
    "cheetah": ("run",),
    "quadruped": ("run",),
}


def camera_for(domain: str) -> int:
  """Camera of the reference pixel stack: quadruped 2 ('y' tracking), else 0 ('side')."""
  return 2 if domain == "quadruped" else 0


def dmc_task_names() -> list[str]:
  names = set()
  for domain, tasks in STANDARD_TASKS.items():
    names.update(f"{domain}_{t}" for t in tasks)
  for domain, suite in CUSTOM_SUITES.items():
    names.update(f"{domain}_{t}" for t in suite.keys())
  return sorted(names)


def load_dm_env(domain: str, task: str, seed: int = 0, time_limit: float | None = None):
  """Returns the dm_control ``control.Environment`` for ``domain``/``task``."""
  kwargs = {"random": seed}
  if time_limit is not None:
    kwargs["time_limit"] = time_limit
  custom = CUSTOM_SUITES.get(domain)
  if custom is not None and task in custom:
    return custom[task](**kwargs)
  if task in STANDARD_TASKS.get(domain, ()):
    from dm_control import suite

    return suite.load(domain, task, task_kwargs=kwargs)
  raise ValueError(f"unknown dm_control task {domain}_{task}")


def make_dmc(domain: str,
             task: str,
             seed: int = 0,
             *,
             fast_render: bool = False,
             action_repeat: int = 2,
             size: int = 64,
             time_limit: float | None = None):
  dm_env = load_dm_env(domain, task, seed, time_limit)
  return DMCPixelEnv(f"{domain}_{task}",
                     dm_env,
                     camera_id=camera_for(domain),
                     size=size,
                     action_repeat=action_repeat,
                     fast_render=fast_render)
