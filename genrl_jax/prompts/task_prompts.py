"""The reference's prompts of its tasks (method.md §9.4): a language prompt per task
(`TASK2PROMPT`) and, for six tasks, the file name of a video prompt (`TASK2VIDEO`)."""

from __future__ import annotations

TASK_PROMPTS: dict[str, str] = {
    "quadruped_run": "spider running fast",
    "quadruped_walk": "spider walking fast",
    "quadruped_stand": "spider standing",
    "quadruped_jump": "spider jumping",
    "quadruped_two_legs": "on two legs",
    "quadruped_lie_down": "lying down",
    "cheetah_run": "running like a quadruped",
    "cheetah_flipping": "quadruped rotating flips",
    "cheetah_standing": "standing like a human",
    "cheetah_lying_down": "lying down",
    "stickman_walk": "robot walk fast clean",
    "stickman_run": "robot run fast clean",
    "stickman_stand": "standing up",
    "stickman_urlb_flip": "doing flips",
    "stickman_flip": "doing flips",
    "stickman_flipping": "doing flips",
    "stickman_backflip": "doing backflips",
    "stickman_one_foot": "stand on one foot",
    "stickman_high_kick": "stand up and kick",
    "stickman_lying_down": "lying down horizontally",
    "stickman_legs_up": "lifting legs up while lying down",
    "stickman_sit_knees": "praying",
    "stickman_lunge_pose": "lunge_pose",
    "stickman_headstand": "headstand",
    "stickman_boxing": "punch",
    "stickman_hands_up": "standing with the hands up",
    "walker_walk": "walk fast clean",
    "walker_run": "run fast clean",
    "walker_stand": "standing up straight",
    "walker_urlb_flip": "doing backflips",
    "walker_flip": "doing flips",
    "walker_flipping": "doing backflips",
    "walker_backflip": "doing backflips",
    "walker_one_foot": "stand on one foot",
    "walker_high_kick": "stand up and kick",
    "walker_lying_down": "lying down horizontally",
    "walker_arabesque": "arabesque position",
    "walker_legs_up": "lying down with feet up",
    "walker_sit_knees": "praying",
    "walker_lunge_pose": "lunge_pose",
    "walker_headstand": "headstand",
    "kitchen_microwave": "opening the microwave fully open",
    "kitchen_light": "switch light on",
    "kitchen_burner": "switch on red burner",
    "kitchen_slide": "slide cabinet above the knobs",
    "kitchen_kettle": "pushing up the kettle",
    # The reference's jaco tasks have no environment here (genrl_jax.envs.tasks lists
    # them as unregistered); their prompts keep this table complete.
    "jaco_reach_top_left": "robot grasp the red cube",
    "jaco_reach_bottom_left": "robot grasp the red cube",
    "jaco_reach_top_right": "robot grasp the red cube",
    "jaco_reach_bottom_right": "robot grasp the red cube",
}

# File names in the reference repository's `assets/video_samples`. The videos are not
# shipped with genrl_jax: the user copies them into a directory of their choice
# (see `genrl_jax.envs.tasks.video_prompt_path`).
TASK_VIDEO_PROMPTS: dict[str, str] = {
    "cheetah_run": "dog_running_seen_from_the_side.mp4",
    "cheetah_standing": "person_standing_up_with_hands_up_seen_from_the_side.mp4",
    "stickman_high_kick": "karate_kick.mp4",
    "stickman_walk": "guy_walking.gif",
    "quadruped_walk": "spider_draw.gif",
    "kitchen_microwave": "open_microwave.gif",
}


def task_prompt(task: str) -> str:
  """The language prompt of `task`, or a KeyError listing the tasks that have one."""
  if task not in TASK_PROMPTS:
    raise KeyError(f"task {task!r} has no reference prompt; tasks with one: "
                   f"{sorted(TASK_PROMPTS)}. Give a prompt explicitly instead.")
  return TASK_PROMPTS[task]
