"""The task catalogue: each task's prompts, episode length and score bounds.

    from genrl_jax.envs.tasks import task_info, normalized_score
    task_info("stickman_walk").prompt          # 'robot walk fast clean'
    normalized_score("stickman_walk", 497.5)   # (497.5 - 35) / (960 - 35) = 0.5

The catalogue holds every registered task (:func:`~genrl_jax.envs.list_tasks`) and
every task of the reference's prompt and score tables (method.md §9.4). The reference's jaco
tasks are in those tables but have no environment here (``registered`` is False).
On the command line: ``genrl_jax list-tasks [--domain stickman]``.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from genrl_jax.prompts.task_prompts import TASK_PROMPTS, TASK_VIDEO_PROMPTS
from genrl_jax.envs.registry import list_tasks, split_task, unknown_task_error

# Episode returns of a random and an expert policy, used to normalise scores
# (the reference's tools/task_scores.py: MIN, MAX). Its keys are the paper's task set.
SCORE_BOUNDS: dict[str, tuple[float, float]] = {
    "walker_run": (30, 770),
    "walker_walk": (45, 960),
    "walker_stand": (150, 970),
    "walker_one_foot": (20, 955),
    "walker_high_kick": (25, 960),
    "walker_lying_down": (170, 975),
    "walker_sit_knees": (100, 945),
    "walker_lunge_pose": (150, 945),
    "walker_flipping": (20, 720),
    "walker_urlb_flip": (20, 720),
    "quadruped_run": (10, 930),
    "quadruped_walk": (10, 960),
    "quadruped_stand": (15, 990),
    "quadruped_jump": (15, 875),
    "quadruped_two_legs": (14, 875),
    "quadruped_lie_down": (750, 965),
    "kitchen_microwave": (0, 1),
    "kitchen_light": (0, 1),
    "kitchen_burner": (0, 1),
    "kitchen_slide": (0, 1),
    "stickman_run": (25, 830),
    "stickman_walk": (35, 960),
    "stickman_stand": (70, 970),
    "stickman_flipping": (45, 790),
    "stickman_one_foot": (20, 865),
    "stickman_high_kick": (55, 920),
    "stickman_lying_down": (380, 965),
    "stickman_legs_up": (115, 935),
    "stickman_sit_knees": (40, 966),
    "stickman_lunge_pose": (100, 950),
    "stickman_headstand": (180, 955),
    "stickman_boxing": (80, 920),
    "stickman_hands_up": (5, 830),
    "cheetah_run": (9, 890),
    "cheetah_standing": (5, 930),
    "cheetah_lying_down": (430, 920),
    "jaco_reach_bottom_left": (0, 230),
    "jaco_reach_bottom_right": (0, 230),
    "jaco_reach_top_left": (0, 230),
    "jaco_reach_top_right": (0, 230),
}

# An evaluation episode of any kitchen task returns 0 or 1 (it ends on the first
# completion, method.md §9.3), so kitchen tasks outside the paper's set get these bounds too.
KITCHEN_EVAL_BOUNDS = (0.0, 1.0)

# Environment steps per episode (before the action repeat, 2 in the reference, which
# halves the agent's steps): time limit / control timestep, method.md §9.1 and 9.3.
EPISODE_ENV_STEPS: dict[str, int] = {
    "walker": 1000,  # 25 s / 0.025 s
    "stickman": 1000,  # 25 s / 0.025 s
    "cheetah": 1000,  # 10 s / 0.01 s
    "quadruped": 1000,  # 20 s / 0.02 s
    "kitchen": 280,
    "jaco": 250,  # 10 s / 0.04 s
}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What is known about one task.

  Attributes:
    name: 'domain_task'.
    domain: the part of `name` before the first underscore.
    prompt: the reference's language prompt, None where the reference has none.
    video_prompt: file name of the reference's video prompt (its
      `assets/video_samples`), None where it has none. The videos are not shipped with
      genrl_jax: the user copies them into a directory, and
      :func:`video_prompt_path` finds them there.
    score_min: episode return of a random policy, for :func:`normalized_score`; None
      where there are no bounds.
    score_max: episode return of an expert policy; None where there are no bounds.
    paper: in the paper's task set (the reference's score table).
    episode_env_steps: environment steps per episode, before the action repeat.
    registered: :func:`~genrl_jax.envs.make_env` builds it (False for the jaco tasks).
  """
  name: str
  domain: str
  prompt: str | None
  video_prompt: str | None
  score_min: float | None
  score_max: float | None
  paper: bool
  episode_env_steps: int | None
  registered: bool

  @property
  def has_bounds(self) -> bool:
    return self.score_min is not None and self.score_max is not None


def _bounds(name: str, domain: str) -> tuple[float, float] | tuple[None, None]:
  if name in SCORE_BOUNDS:
    low, high = SCORE_BOUNDS[name]
    return float(low), float(high)
  if domain == "kitchen":
    return KITCHEN_EVAL_BOUNDS
  return None, None


@functools.cache
def _catalogue() -> dict[str, TaskInfo]:
  registered = set(list_tasks())
  names = registered | set(TASK_PROMPTS) | set(TASK_VIDEO_PROMPTS) | set(SCORE_BOUNDS)
  infos = {}
  for name in sorted(names):
    domain, _ = split_task(name)
    low, high = _bounds(name, domain)
    infos[name] = TaskInfo(name=name,
                           domain=domain,
                           prompt=TASK_PROMPTS.get(name),
                           video_prompt=TASK_VIDEO_PROMPTS.get(name),
                           score_min=low,
                           score_max=high,
                           paper=name in SCORE_BOUNDS,
                           episode_env_steps=EPISODE_ENV_STEPS.get(domain),
                           registered=name in registered)
  return infos


def all_tasks() -> list[str]:
  """Every catalogued task, sorted: the registered ones and the reference's others."""
  return list(_catalogue())


def task_info(name: str) -> TaskInfo:
  """The :class:`TaskInfo` of `name`; a ValueError naming close matches if unknown."""
  infos = _catalogue()
  if name not in infos:
    raise unknown_task_error(str(name), list(infos), listing="`genrl_jax list-tasks`")
  return infos[name]


def normalized_score(task: str, score: float) -> float:
  """(score - random) / (expert - random): 0 for a random policy, 1 for an expert."""
  info = task_info(task)
  if not info.has_bounds:
    with_bounds = [n for n, i in _catalogue().items() if i.has_bounds and i.domain == info.domain]
    raise ValueError(f"task {task!r} has no score bounds (the reference's "
                     f"tools/task_scores.py has none); {info.domain} tasks with bounds: "
                     f"{', '.join(with_bounds) or 'none'}")
  return (float(score) - info.score_min) / (info.score_max - info.score_min)


def _check_domain(domain: str | None) -> None:
  domains = sorted({i.domain for i in _catalogue().values()})
  if domain is not None and domain not in domains:
    raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(domains)}")


def paper_tasks(domain: str | None = None, *, registered_only: bool = False) -> list[str]:
  """The paper's tasks (those of the reference's score table), sorted, optionally of one
    domain only. They include the jaco tasks, which `make_env` cannot build, unless
    `registered_only`."""
  _check_domain(domain)
  return [
      n for n, i in _catalogue().items() if i.paper and (domain is None or i.domain == domain) and
      (i.registered or not registered_only)
  ]


def video_prompt_path(task: str, directory: str) -> str:
  """Path of `task`'s reference video prompt in `directory`, where the user has copied
    the reference's `assets/video_samples` files (they are not shipped with genrl_jax).

    Raises:
      ValueError: the task has no reference video prompt.
      FileNotFoundError: the file is not in `directory`.
    """
  info = task_info(task)
  if info.video_prompt is None:
    raise ValueError(f"task {task!r} has no reference video prompt; tasks with one: "
                     f"{', '.join(sorted(TASK_VIDEO_PROMPTS))}")
  path = os.path.join(directory, info.video_prompt)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no video prompt {path}: copy {info.video_prompt} from the "
                            f"reference repository's assets/video_samples into {directory}")
  return path


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:g}"
  return str(value)


def describe_tasks(domain: str | None = None) -> str:
  """A text table of the catalogue (task, prompt, video prompt, min, max, in the paper's
    set), optionally of one domain only. Tasks without an environment here are marked
    with '*'."""
  _check_domain(domain)
  infos = [i for i in _catalogue().values() if domain is None or i.domain == domain]
  rows = [("task", "prompt", "video prompt", "min", "max", "paper")]
  rows += [(i.name + ("" if i.registered else " *"), _cell(i.prompt), _cell(i.video_prompt),
            _cell(i.score_min), _cell(i.score_max), "yes" if i.paper else "") for i in infos]
  widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  if any(not i.registered for i in infos):
    lines.append("* the reference's task; no environment here (make_env cannot build it)")
  lines.append("min/max: episode returns of a random and an expert policy (normalisation). "
               "Video prompt files are not shipped: copy them from the reference's "
               "assets/video_samples.")
  return "\n".join(lines)
