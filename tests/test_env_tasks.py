"""The task catalogue (genrl_jax.envs.tasks) and the `genrl_jax` command line."""

import os
import subprocess
import sys

import numpy as np
import pytest

from genrl_jax import cli
from genrl_jax.envs import list_tasks, tasks
from genrl_jax.prompts.task_prompts import TASK_PROMPTS, TASK_VIDEO_PROMPTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JACO = {f"jaco_reach_{v}_{h}" for v in ("top", "bottom") for h in ("left", "right")}


def test_task_info_matches_the_spec_tables():
  info = tasks.task_info("stickman_walk")
  assert info == tasks.TaskInfo(name="stickman_walk",
                                domain="stickman",
                                prompt="robot walk fast clean",
                                video_prompt="guy_walking.gif",
                                score_min=35.0,
                                score_max=960.0,
                                paper=True,
                                episode_env_steps=1000,
                                registered=True)
  expected = {  # task: (prompt, video prompt, min, max)
      "walker_walk": ("walk fast clean", None, 45, 960),
      "walker_sit_knees": ("praying", None, 100, 945),
      "stickman_lunge_pose": ("lunge_pose", None, 100, 950),
      "stickman_high_kick": ("stand up and kick", "karate_kick.mp4", 55, 920),
      "stickman_sit_knees": ("praying", None, 40, 966),
      "cheetah_run": ("running like a quadruped", "dog_running_seen_from_the_side.mp4", 9, 890),
      "cheetah_standing": ("standing like a human",
                           "person_standing_up_with_hands_up_seen_from_the_side.mp4", 5, 930),
      "quadruped_walk": ("spider walking fast", "spider_draw.gif", 10, 960),
      "quadruped_lie_down": ("lying down", None, 750, 965),
      "kitchen_microwave": ("opening the microwave fully open", "open_microwave.gif", 0, 1),
      "jaco_reach_top_left": ("robot grasp the red cube", None, 0, 230),
  }
  for name, (prompt, video, low, high) in expected.items():
    info = tasks.task_info(name)
    assert (info.prompt, info.video_prompt, info.score_min, info.score_max) == (prompt, video, low,
                                                                                high), name
    assert info.paper and info.domain == name.split("_")[0]


def test_tasks_without_reference_data_have_none():
  flip = tasks.task_info("walker_flip")  # a prompt but no score bounds
  assert flip.prompt == "doing flips" and flip.score_min is None and flip.score_max is None
  assert not flip.paper and not flip.has_bounds
  arabesque = tasks.task_info("stickman_arabesque")  # no prompt in the reference
  assert arabesque.prompt is None and arabesque.video_prompt is None and arabesque.registered
  backwards = tasks.task_info("walker_walk_backwards")
  assert (backwards.prompt, backwards.score_min, backwards.paper) == (None, None, False)
  # Kitchen evaluation returns are 0 or 1, so every kitchen task has bounds 0 / 1,
  # but only four are in the paper's set.
  hinge = tasks.task_info("kitchen_hinge")
  assert (hinge.score_min, hinge.score_max, hinge.paper) == (0.0, 1.0, False)
  assert tasks.task_info("kitchen_kettle").prompt == "pushing up the kettle"


def test_episode_lengths():
  assert tasks.task_info("quadruped_run").episode_env_steps == 1000
  assert tasks.task_info("kitchen_light").episode_env_steps == 280
  assert tasks.task_info("jaco_reach_top_right").episode_env_steps == 250
  from genrl_jax.envs import kitchen
  from genrl_jax.envs.dmc import load_dm_env

  assert tasks.EPISODE_ENV_STEPS["kitchen"] == kitchen.EPISODE_ENV_STEPS
  for task in ("walker_walk", "walker_one_foot", "stickman_walk", "cheetah_standing",
               "quadruped_run", "quadruped_walk"):
    domain, name = task.split("_", 1)
    env = load_dm_env(domain, name)
    ts, steps = env.reset(), 0
    while not ts.last():
      ts = env.step(np.zeros(env.action_spec().shape))
      steps += 1
    assert tasks.task_info(task).episode_env_steps == steps, task


def test_every_reference_task_is_registered_except_jaco():
  registered = set(list_tasks())
  spec_tasks = set(TASK_PROMPTS) | set(TASK_VIDEO_PROMPTS) | set(tasks.SCORE_BOUNDS)
  assert spec_tasks - registered == JACO  # the reference's composer tasks: no env here
  assert len(tasks.SCORE_BOUNDS) == 40 and len(TASK_PROMPTS) == 50
  assert set(tasks.all_tasks()) == registered | JACO
  for name in tasks.all_tasks():
    assert tasks.task_info(name).registered == (name in registered), name


def test_paper_tasks():
  assert tasks.paper_tasks("kitchen") == [
      "kitchen_burner", "kitchen_light", "kitchen_microwave", "kitchen_slide"
  ]
  assert tasks.paper_tasks("cheetah") == ["cheetah_lying_down", "cheetah_run", "cheetah_standing"]
  assert len(tasks.paper_tasks("stickman")) == 13 and len(tasks.paper_tasks("walker")) == 10
  everything = tasks.paper_tasks()
  assert everything == sorted(tasks.SCORE_BOUNDS) and JACO <= set(everything)
  assert set(tasks.paper_tasks(registered_only=True)) == set(everything) - JACO
  with pytest.raises(ValueError, match="unknown domain 'stikman'.*stickman"):
    tasks.paper_tasks("stikman")


def test_normalized_score():
  assert tasks.normalized_score("stickman_walk", 35) == 0.0
  assert tasks.normalized_score("stickman_walk", 960) == 1.0
  assert tasks.normalized_score("stickman_walk", 497.5) == pytest.approx(0.5)
  assert tasks.normalized_score("walker_stand", 560) == pytest.approx(410 / 820)
  assert tasks.normalized_score("quadruped_lie_down", 700) == pytest.approx(-50 / 215)
  assert tasks.normalized_score("kitchen_microwave", 1) == 1.0
  assert tasks.normalized_score("kitchen_hinge", 0) == 0.0
  with pytest.raises(ValueError, match="'walker_flip' has no score bounds.*walker_flipping"):
    tasks.normalized_score("walker_flip", 100)
  with pytest.raises(ValueError, match="'stickman_arabesque' has no score bounds"):
    tasks.normalized_score("stickman_arabesque", 100)


def test_unknown_task_lists_close_matches():
  with pytest.raises(ValueError, match="unknown task 'stikman_walk'.*stickman_walk"):
    tasks.task_info("stikman_walk")
  with pytest.raises(ValueError, match="jaco_reach_top_left"):
    tasks.task_info("jaco_reach_top_lft")
  with pytest.raises(ValueError, match="unknown task 'nonsense'"):
    tasks.normalized_score("nonsense", 1.0)


def test_video_prompt_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="guy_walking.gif.*assets/video_samples"):
    tasks.video_prompt_path("stickman_walk", str(tmp_path))
  (tmp_path / "guy_walking.gif").write_bytes(b"GIF89a")
  assert tasks.video_prompt_path("stickman_walk",
                                 str(tmp_path)) == str(tmp_path / "guy_walking.gif")
  with pytest.raises(ValueError, match="no reference video prompt.*stickman_high_kick"):
    tasks.video_prompt_path("walker_walk", str(tmp_path))


def _table_row(table: str, task: str) -> list[str]:
  rows = [line for line in table.splitlines() if line.split(" ")[0] == task]
  assert len(rows) == 1, task
  return [cell.strip() for cell in rows[0].split("  ") if cell.strip()]


def test_describe_tasks_table():
  table = tasks.describe_tasks()
  assert table.splitlines()[0].split() == [
      "task", "prompt", "video", "prompt", "min", "max", "paper"
  ]
  assert _table_row(table, "stickman_walk") == [
      "stickman_walk", "robot walk fast clean", "guy_walking.gif", "35", "960", "yes"
  ]
  assert _table_row(table, "walker_flip") == ["walker_flip", "doing flips", "-", "-", "-"]
  assert _table_row(table, "jaco_reach_top_left") == [
      "jaco_reach_top_left *", "robot grasp the red cube", "-", "0", "230", "yes"
  ]
  for name in tasks.all_tasks():
    _table_row(table, name)

  walker = tasks.describe_tasks("walker")
  assert "walker_sit_knees" in walker and "stickman" not in walker and "jaco" not in walker
  assert "no environment here" not in walker
  with pytest.raises(ValueError, match="unknown domain"):
    tasks.describe_tasks("walkr")


def test_cli_list_tasks(capsys):
  assert cli.main(["list-tasks"]) == 0
  out = capsys.readouterr().out
  assert out.strip() == tasks.describe_tasks()
  for text in ("stickman_walk", "robot walk fast clean", "guy_walking.gif", "35", "960",
               "kitchen_microwave", "lunge_pose"):
    assert text in out

  assert cli.main(["list-tasks", "--domain", "stickman"]) == 0
  out = capsys.readouterr().out
  assert "stickman_walk" in out and "walker_walk" not in out
  # a --domain before the command is kept
  assert cli.main(["--domain", "cheetah", "list-tasks"]) == 0
  assert capsys.readouterr().out.strip() == tasks.describe_tasks("cheetah")


def test_cli_list_tasks_flag_is_a_deprecated_alias(capsys):
  assert cli.main(["--list-tasks", "--domain", "cheetah"]) == 0
  captured = capsys.readouterr()
  assert captured.out.strip() == tasks.describe_tasks("cheetah")
  assert "--list-tasks is deprecated; use `genrl_jax list-tasks`" in captured.err


def test_cli_errors(capsys):
  assert cli.main(["list-tasks", "--domain", "nope"]) == 2
  assert "unknown domain 'nope'" in capsys.readouterr().err
  assert cli.main([]) == 2  # no command: the help
  assert "list-tasks" in capsys.readouterr().out
  with pytest.raises(SystemExit) as info:
    cli.main(["--domain", "walker"])
  assert info.value.code == 2
  assert "--domain goes with the list-tasks command" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["no-such-command"])


def test_python_dash_m_lists_tasks():
  result = subprocess.run([sys.executable, "-m", "genrl_jax", "list-tasks"],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=120,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert "robot walk fast clean" in result.stdout and "stickman_walk" in result.stdout
