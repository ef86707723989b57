"""Experiment configs and the command line of experiments/main.py."""

import os
import subprocess
import sys

import pytest

from genrl_jax import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ("walker", "cheetah", "quadruped", "stickman", "kitchen")


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("variant", ["", ":paper", ":small", ":tiny", ":cpu"])
def test_every_domain_config_loads_in_every_variant(domain, variant):
  config = configs.load_config(f"configs/{domain}.py{variant}")
  assert config.task.startswith(domain + "_")
  wm = config.world_model
  if variant in ("", ":paper"):
    assert (wm.deter, wm.hidden, wm.stoch, wm.discrete, wm.cnn_depth) == (1024, 1024, 32, 32, 48)
    assert (wm.mlp_units, wm.mlp_layers, config.batch_size, config.batch_length) == (
        1024, 4, 48, 48)
  if variant == ":small":
    assert (wm.deter, wm.cnn_depth, wm.mlp_units, config.batch_size, config.batch_length) == (
        512, 32, 512, 16, 32)
  if variant in (":tiny", ":cpu"):
    # CPU budgets: minutes (tiny), about half an hour per domain (cpu).
    steps, episodes = (2000, 10) if variant == ":tiny" else (5000, 25)
    assert config.mfwm.num_steps <= steps and config.data.collect_episodes <= episodes
    # The learning report's held-out episodes: the last collection round, one per task.
    assert config.mfwm.heldout_episodes == len(config.tasks)
    assert not config.behavior.prompt.denoise_video  # random-CLIP video prompts
    assert (wm.deter, wm.cnn_depth) == (128, 8)
    # Two tasks, each collected from, each prompted with a clip of its own episodes by the
    # locally built random-weight CLIP.
    assert len(config.tasks) == 2 and config.data.collect_tasks == config.tasks
    assert (config.vlm.name, config.vlm.model) == ("clip", "")
  else:
    from genrl_jax.envs import tasks  # pylint: disable=g-import-not-at-top
    assert list(config.tasks) == tasks.paper_tasks(domain, registered_only=True)
    assert config.task in config.tasks and not config.data.collect_tasks


def test_cpu_variant_keeps_its_own_tasks_where_a_domain_names_them():
  # walker's `cpu` budget learns lying_down and sit_knees (walker_stand did not beat the
  # random policy at that budget); `tiny` keeps stand and lying_down.
  tiny = configs.load_config("configs/walker.py:tiny")
  cpu = configs.load_config("configs/walker.py:cpu")
  assert tiny.tasks == ("walker_stand", "walker_lying_down")
  assert cpu.tasks == cpu.data.collect_tasks == ("walker_lying_down", "walker_sit_knees")
  # A domain without its own `cpu` tasks keeps the `tiny` ones.
  stickman = configs.load_config("configs/stickman.py:cpu")
  assert stickman.tasks == configs.load_config("configs/stickman.py:tiny").tasks


def test_config_docstrings_state_the_command():
  for domain in DOMAINS:
    path = os.path.join(REPO, "experiments", "configs", f"{domain}.py")
    with open(path) as f:
      text = f.read()
    assert f"python experiments/main.py --config=configs/{domain}.py" in text
    assert "Produces:" in text


def test_unknown_variant_and_unknown_file_are_refused():
  with pytest.raises(ValueError, match="unknown config variant 'huge'"):
    configs.load_config("configs/walker.py:huge")
  with pytest.raises(FileNotFoundError, match="configs/walker.py"):
    configs.load_config("configs/nowhere.py")
  config = configs.load_config("configs/walker.py:tiny")
  with pytest.raises(AttributeError):
    config.not_a_key = 1  # configs are locked


def _main(*args, cwd=REPO):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "main.py"), *args],
                        cwd=cwd, capture_output=True, text=True, timeout=120)


def test_main_refuses_unknown_config_keys_and_modes(tmp_path):
  result = _main("--config=configs/walker.py:tiny", "--config.world_model.nonsense=3",
                 f"--workdir={tmp_path}")
  assert result.returncode != 0 and "nonsense" in result.stderr
  result = _main("--config=configs/walker.py:tiny", "--mode=dance", f"--workdir={tmp_path}")
  assert result.returncode != 0 and "dance" in result.stderr
  result = _main("--config=configs/nowhere.py", f"--workdir={tmp_path}")
  assert result.returncode != 0 and "available" in result.stderr
  assert not os.listdir(tmp_path)


def test_main_reports_a_missing_dataset_path(tmp_path):
  result = _main("--config=configs/walker.py:tiny", "--config.data.path=/no/such/dir",
                 f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "error: config.data.path='/no/such/dir' is not a directory" in result.stderr
  assert not os.path.exists(tmp_path / "w")  # refused before anything is written
  not_a_dataset = tmp_path / "not_a_dataset"
  not_a_dataset.mkdir()
  result = _main("--config=configs/walker.py:tiny", f"--config.data.path={not_a_dataset}",
                 f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert f"error: {not_a_dataset}" in result.stderr
  assert not os.path.exists(tmp_path / "w") and not os.listdir(not_a_dataset)


def test_main_refuses_batch_sizes_the_devices_cannot_share_before_writing_anything(tmp_path):
  # The test session simulates 8 CPU devices (conftest.py); the subprocess inherits them.
  for key in ("batch_size", "behavior.batch_size"):
    result = _main("--config=configs/walker.py:tiny", f"--config.{key}=12",
                   f"--workdir={tmp_path / 'w'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"error: config.{key}=12: expected a positive multiple of the 8" in result.stderr
  assert not os.path.exists(tmp_path / "w")


def test_a_custom_prompt_in_a_multi_task_config_names_the_syntax_to_pick_one_task(tmp_path):
  result = _main("--config=configs/stickman.py:tiny", "--config.behavior.prompt.text=flip",
                 f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "--config.tasks=\"('stickman_legs_up',)\"" in result.stderr
  assert not os.path.exists(tmp_path / "w")


def test_main_refuses_unknown_tasks_before_writing_anything(tmp_path):
  result = _main("--config=configs/walker.py:tiny", "--config.tasks=('walker_stnd',)",
                 f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0
  assert "config.tasks[0]" in result.stderr and "walker_stand" in result.stderr  # close match
  result = _main("--config=configs/walker.py:tiny", "--config.data.collector=human",
                 f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0 and "config.data.collector='human'" in result.stderr
  assert not os.path.exists(tmp_path / "w")


def test_main_refuses_updates_per_call_that_cannot_be_used_before_writing_anything(tmp_path):
  result = _main("--config=configs/walker.py:tiny", "--config.behavior.updates_per_call=7",
                 "--config.behavior.start=data_free", f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0
  assert "config.behavior.updates_per_call=7: expected a divisor of" in result.stderr
  result = _main("--config=configs/walker.py:tiny", "--config.behavior.updates_per_call=10",
                 f"--workdir={tmp_path / 'w'}")  # tiny learns from offline starts
  assert result.returncode != 0 and "needs behavior.start='data_free'" in result.stderr
  assert not os.path.exists(tmp_path / "w")
