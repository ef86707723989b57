"""Checkpoints: cadence, keep-last-K, bit-identical resume, partial restore, bad input."""

import json
import os

import jax
import numpy as np
import pytest

import synthetic
from genrl_jax.stages import mfwm as mfwm_stage
from genrl_jax.stages import workdir as workdir_lib
from genrl_jax.train import checkpoints
from genrl_jax.train import host_info


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
  return synthetic.write_episodes(str(tmp_path_factory.mktemp("episodes")))


def _params(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(episodes, tmp_path):
  straight = mfwm_stage.run(synthetic.micro_config(episodes), str(tmp_path / "a"),
                               progress=False)
  # Interrupted: 3 steps (the checkpoint at 3), then a new process-like run continues to 6.
  first = synthetic.micro_config(episodes, **{"mfwm.num_steps": 3})
  mfwm_stage.run(first, str(tmp_path / "b"), progress=False)
  resumed = mfwm_stage.run(synthetic.micro_config(episodes), str(tmp_path / "b"),
                              progress=False)
  assert int(resumed.step) == int(straight.step) == 6
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(straight.opt_state), jax.device_get(resumed.opt_state))


@pytest.mark.slow
def test_checkpoints_every_n_steps_keep_last_k_and_hold_the_config(episodes, tmp_path):
  config = synthetic.micro_config(episodes, **{"mfwm.num_steps": 7, "mfwm.save_every": 2,
                                               "mfwm.keep": 2})
  mfwm_stage.run(config, str(tmp_path), progress=False)
  ckpt_dir = tmp_path / "mfwm"
  assert sorted(int(p) for p in os.listdir(ckpt_dir) if p.isdigit()) == [6, 7]
  saved = checkpoints.read_checkpoint_config(str(ckpt_dir))
  assert saved["world_model"]["deter"] == 32 and saved["mfwm"]["num_steps"] == 7
  # ... and the machine that computed it (train/host_info.py).
  assert saved["host"] == json.loads(json.dumps(host_info.describe_host()))


@pytest.mark.slow
def test_partial_restore_loads_only_the_world_model(episodes, tmp_path):
  state = mfwm_stage.run(synthetic.micro_config(episodes), str(tmp_path), progress=False)
  wm = checkpoints.restore_subtree(str(tmp_path / "mfwm"), ("params", "world_model"))
  assert set(wm) == {"encoder", "rssm", "decoder", "reward_head"}
  jax.tree.map(np.testing.assert_array_equal, wm, _params(state)["world_model"])
  with pytest.raises(checkpoints.CheckpointError, match="no entry params/connector"):
    checkpoints.restore_subtree(str(tmp_path / "mfwm"), ("params", "connector"))


@pytest.mark.slow
def test_checkpoint_of_other_sizes_is_refused_without_touching_it(episodes, tmp_path):
  mfwm_stage.run(synthetic.micro_config(episodes), str(tmp_path), progress=False)
  ckpt_dir = tmp_path / "mfwm"
  before = sorted(os.listdir(ckpt_dir))
  bigger = synthetic.micro_config(episodes, **{"world_model.deter": 48})
  with pytest.raises(checkpoints.CheckpointError, match="cannot be restored"):
    mfwm_stage.run(bigger, str(tmp_path), progress=False)
  assert sorted(os.listdir(ckpt_dir)) == before


# Orbax leaves its failed read coroutines unawaited; they are reported at collection time.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_checkpoint_gives_a_clear_error(episodes, tmp_path):
  mfwm_stage.run(synthetic.micro_config(episodes), str(tmp_path), progress=False)
  # Every step damaged (one damaged step alone is skipped: tests/test_faults_checkpoints.py).
  for step in ("3", "6"):
    for root, _, files in os.walk(tmp_path / "mfwm" / step / "state"):
      for name in files:
        if name != "_METADATA":
          with open(os.path.join(root, name), "wb") as f:
            f.write(b"garbage")
  with pytest.raises(checkpoints.CheckpointError, match="no intact checkpoint.*step 6: .*"
                     "step 3: "):
    mfwm_stage.run(synthetic.micro_config(episodes, **{"mfwm.num_steps": 9}), str(tmp_path),
                      progress=False)


def test_workdir_of_a_different_config_is_refused_and_left_as_is(episodes, tmp_path):
  config = synthetic.micro_config(episodes)
  workdir_lib.prepare_workdir(config, str(tmp_path))
  saved = (tmp_path / "config.json").read_text()
  other = synthetic.micro_config(episodes, **{"world_model.cnn_depth": 16})
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="world_model.cnn_depth: 8 -> 16"):
    workdir_lib.prepare_workdir(other, str(tmp_path))
  assert (tmp_path / "config.json").read_text() == saved
  longer = synthetic.micro_config(episodes, **{"mfwm.num_steps": 60})
  workdir_lib.prepare_workdir(longer, str(tmp_path))  # run length may change on resume
  assert json.loads((tmp_path / "config.json").read_text())["mfwm"]["num_steps"] == 60


def test_step_listing_reads_finished_steps_of_a_checkpoint_folder(tmp_path):
  directory = str(tmp_path / "ckpt")
  assert checkpoints.list_steps(directory) == [] and checkpoints.latest_step(directory) is None
  ckpt = checkpoints.Checkpointer(directory, save_every=1, keep=5, config={})
  for step in (2, 10, 3):
    ckpt.save(step, {"w": np.zeros(2)})
  ckpt.close()
  # Not steps: an unfinished Orbax save and other files.
  os.makedirs(os.path.join(directory, "11.orbax-checkpoint-tmp-1"))
  open(os.path.join(directory, "eval.json"), "w").close()
  assert checkpoints.list_steps(directory) == [2, 3, 10] == sorted(ckpt.all_steps())
  assert checkpoints.latest_step(directory) == 10
