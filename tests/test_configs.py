"""Experiment configs and the command line of experiments/main.py."""

import json
import os
import subprocess
import sys

import pytest

from genrl_jax import experiment_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ("walker", "cheetah", "quadruped", "stickman", "kitchen")


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("variant", ["", ":paper", ":small", ":tiny", ":cpu"])
def test_every_domain_config_loads_in_every_variant(domain, variant):
  config = experiment_config.load_config(f"configs/{domain}.py{variant}")
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
  tiny = experiment_config.load_config("configs/walker.py:tiny")
  cpu = experiment_config.load_config("configs/walker.py:cpu")
  assert tiny.tasks == ("walker_stand", "walker_lying_down")
  assert cpu.tasks == cpu.data.collect_tasks == ("walker_lying_down", "walker_sit_knees")
  # A domain without its own `cpu` tasks keeps the `tiny` ones.
  stickman = experiment_config.load_config("configs/stickman.py:cpu")
  assert stickman.tasks == experiment_config.load_config("configs/stickman.py:tiny").tasks


def test_config_docstrings_state_the_command():
  for domain in DOMAINS:
    path = os.path.join(REPO, "experiments", "configs", f"{domain}.py")
    with open(path) as f:
      text = f.read()
    assert f"python experiments/main.py --config=configs/{domain}.py" in text
    assert "`:tiny`" in text and "docs/results.md" in text  # the variants, where figures are


def test_unknown_variant_and_unknown_file_are_refused():
  with pytest.raises(ValueError, match="unknown config variant 'huge'; expected one of "
                     "paper, small, tiny, cpu"):
    experiment_config.load_config("configs/walker.py:huge")
  for combination in ("small,tiny", "tiny,cpu", "paper,paper"):
    with pytest.raises(ValueError, match=f"config variants '{combination}': give one of "
                       "paper, small, tiny, cpu; .* do not combine"):
      experiment_config.load_config(f"configs/walker.py:{combination}")
  with pytest.raises(FileNotFoundError, match="configs/walker.py"):
    experiment_config.load_config("configs/nowhere.py")
  config = experiment_config.load_config("configs/walker.py:tiny")
  with pytest.raises(AttributeError):
    config.not_a_key = 1  # configs are locked


def _main(*args, cwd=REPO):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "main.py"), *args],
                        cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_main_refuses_unknown_config_keys_and_modes(tmp_path):
  result = _main("--config=configs/walker.py:tiny", "--config.world_model.nonsense=3",
                 f"--workdir={tmp_path}")
  assert result.returncode != 0 and "nonsense" in result.stderr
  result = _main("--config=configs/walker.py:tiny", "--mode=dance", f"--workdir={tmp_path}")
  assert result.returncode != 0 and "dance" in result.stderr
  result = _main("--config=configs/nowhere.py", f"--workdir={tmp_path}")
  assert result.returncode != 0 and "available" in result.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_main_refuses_unknown_tasks_before_writing_anything(tmp_path):
  result = _main("--config=configs/walker.py:tiny", "--config.tasks=('walker_stnd',)",
                 f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0
  assert "config.tasks[0]" in result.stderr and "walker_stand" in result.stderr  # close match
  result = _main("--config=configs/walker.py:tiny", "--config.data.collector=human",
                 f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0 and "config.data.collector='human'" in result.stderr
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_main_refuses_updates_per_call_that_cannot_be_used_before_writing_anything(tmp_path):
  result = _main("--config=configs/walker.py:tiny", "--config.behavior.updates_per_call=7",
                 "--config.behavior.start=data_free", f"--workdir={tmp_path / 'w'}")
  assert result.returncode != 0
  assert "config.behavior.updates_per_call=7: expected a divisor of" in result.stderr
  result = _main("--config=configs/walker.py:tiny", "--config.behavior.updates_per_call=10",
                 f"--workdir={tmp_path / 'w'}")  # tiny learns from offline starts
  assert result.returncode != 0 and "needs behavior.start='data_free'" in result.stderr
  assert not os.path.exists(tmp_path / "w")


GOLDEN = os.path.join(REPO, "tests", "fixtures", "resolved_configs.json")


def test_every_documented_command_resolves_to_its_recorded_config():
  """The resolved config of `--config=configs/<domain>.py[:variant]`, every domain and
  variant, as recorded in `tests/fixtures/resolved_configs.json` (written before the
  variants became tables of overrides, when `agent.batch_size/batch_length` 0 and
  `behavior.seed` -1 meant "the same as `batch_size`, `batch_length`, `seed`"). A deliberate change of a config rewrites that file:
  `python -c "import json; from genrl_jax import experiment_config as e; json.dump({c + v:
  e.config_to_dict(e.load_config(c + v)) for c in e.available_configs() for v in ('',
  ':paper', ':small', ':tiny', ':cpu')}, open('tests/fixtures/resolved_configs.json', 'w'),
  sort_keys=True, indent=1)"`."""
  with open(GOLDEN) as f:
    golden = json.load(f)
  golden = {spec: experiment_config.upgrade_saved_config(recorded)  # keys that moved since
            for spec, recorded in golden.items()}
  for recorded in golden.values():  # Sentinels then, references now: the same meaning.
    for key in ("batch_size", "batch_length"):
      if recorded["agent"][key] == 0:
        recorded["agent"][key] = recorded[key]
    if recorded["behavior"]["seed"] == -1:
      recorded["behavior"]["seed"] = recorded["seed"]
  specs = {c + v for c in experiment_config.available_configs()
           for v in ("", ":paper", ":small", ":tiny", ":cpu")}
  assert specs == set(golden)
  for spec in sorted(specs):
    got = experiment_config.config_to_dict(experiment_config.load_config(spec))
    diff = sorted(k for k in set(got) | set(golden[spec]) if got.get(k) != golden[spec].get(k))
    assert not diff, f"{spec}: {diff}"


def test_variant_tables_name_only_existing_keys():
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  from configs import base  # pylint: disable=g-import-not-at-top
  config = base.base_config()
  for name, table in base.VARIANTS.items():
    base.apply_overrides(config, table)  # raises on a key the config lacks
  with pytest.raises(KeyError, match="'world_model.nope'"):
    base.apply_overrides(config, {"world_model.nope": 1})


def test_same_as_fields_follow_until_set_themselves():
  config = experiment_config.load_config("configs/walker.py:tiny")
  assert (config.agent.batch_size, config.agent.batch_length, config.behavior.seed) == (
      config.batch_size, config.batch_length, config.seed)
  config.batch_size, config.seed = 4, 3  # as --config.batch_size=4 --config.seed=3
  assert (config.agent.batch_size, config.behavior.seed) == (4, 3)
  config.agent.batch_size, config.behavior.seed = 6, 9  # set alone, nothing else moves
  assert (config.batch_size, config.agent.batch_size, config.seed, config.behavior.seed) == (
      4, 6, 3, 9)
  # The earlier spellings keep their meaning: 0 and -1 mean "the same".
  config.behavior.seed = -1
  assert experiment_config.behavior_seed(config) == 3


def test_renamed_keys_keep_old_command_lines_working(capsys):
  argv = ["main.py", "--config=configs/walker.py", "--config.vlm.tokenizer=/v",
          "--config.vlm.dtype", "bfloat16", "--config.vlm.size_overrides=a=1",
          "--config.vlm.model=/m.pt", "--config.vlm.sizes=2"]
  assert experiment_config.rename_flags(argv) == [
      "main.py", "--config=configs/walker.py", "--config.vlm.internvideo2.tokenizer=/v",
      "--config.vlm.internvideo2.dtype", "bfloat16",
      "--config.vlm.internvideo2.size_overrides=a=1", "--config.vlm.model=/m.pt",
      "--config.vlm.sizes=2"]
  err = capsys.readouterr().err
  assert "--config.vlm.tokenizer is now --config.vlm.internvideo2.tokenizer" in err
  assert "vlm.model" not in err


def test_a_workdir_saved_before_keys_moved_is_the_same_config(tmp_path):
  from genrl_jax.stages import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = experiment_config.load_config("configs/walker.py:tiny")
  saved = experiment_config.config_to_dict(config)
  saved["vlm"].update(saved["vlm"].pop("internvideo2"))  # the layout before the move
  assert "tokenizer" in saved["vlm"] and "internvideo2" not in saved["vlm"]
  assert experiment_config.upgrade_saved_config(saved) == (
      experiment_config.config_to_dict(config))
  with open(tmp_path / "config.json", "w") as f:
    json.dump(saved, f)
  workdir_lib.prepare_workdir(config, str(tmp_path))  # not refused
  saved["vlm"]["dtype"] = "bfloat16"  # ... but a different value still is
  with open(tmp_path / "config.json", "w") as f:
    json.dump(saved, f)
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="vlm.internvideo2.dtype"):
    workdir_lib.prepare_workdir(config, str(tmp_path))


def test_unknown_override_keys_are_refused_in_one_line():
  ec = experiment_config
  spec = ec.resolve_config_path("configs/walker.py:tiny")
  ec.check_override_keys([f"--config={spec}", "--config.world_model.deter=64",
                          "--config.behavior.prompt.text=x"])  # known keys pass
  with pytest.raises(ValueError, match=r"^--config\.world_model\.dter: the config walker\.py:"
                     r"tiny has no key 'world_model\.dter'; world_model has .*deter"):
    ec.check_override_keys([f"--config={spec}", "--config.world_model.dter=64"])
  with pytest.raises(ValueError, match=r"no key 'seed\.x' \(seed is not a group\)"):
    ec.check_override_keys([f"--config={spec}", "--config.seed.x=1"])


def test_main_refuses_an_unknown_key_before_writing(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, os.path.join(root, "experiments", "main.py"),
       "--config=configs/walker.py:tiny", "--config.data.colect_episodes=3",
       f"--workdir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
      check=False, env=dict(os.environ, GENRL_JAX_MALLOC="system"))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: --config.data.colect_episodes: the config walker.py:tiny has no key")
  assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
