"""The behaviour stage: from a trained MFWM checkpoint and a prompt to a behaviour
checkpoint; resume, and refusal of another MFWM or another prompt."""

from __future__ import annotations

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

import synthetic
from genrl_jax.stages import mfwm as mfwm_stage
from genrl_jax.stages import behavior as behavior_stage
from genrl_jax.stages import evaluation as eval_stage
from genrl_jax.prompts import behavior_prompt
from genrl_jax import experiment_config
from genrl_jax import files
from genrl_jax import mfwm as mfwm_lib
from genrl_jax.behavior import learner
from genrl_jax.envs import evaluate as evaluate_lib
from genrl_jax.envs import vector as vector_lib
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior import policy as policy_lib
from genrl_jax.data import dataset_reader
from genrl_jax.report.metrics import read_metrics
from genrl_jax.train import checkpoints

EMBED = 16


def _config(episodes: str, **overrides):
  c = synthetic.micro_config(episodes, **overrides)
  with c.unlocked():
    c.vlm.name = "random_projection"
    b = c.behavior
    b.actor.units = b.critic.units = 32
    b.actor.layers = b.critic.layers = 1
    b.batch_size, b.batch_length = 8, 8
    b.num_steps, b.log_every, b.save_every = 3, 1, 2
    for key, value in overrides.items():
      if key.startswith("behavior."):
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
          node = node[p]
        node[leaf] = value
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir with an MFWM (with connector) trained for a few steps."""
  episodes = synthetic.write_episodes(str(tmp_path_factory.mktemp("episodes")),
                                      embed_dim=EMBED)
  workdir = str(tmp_path_factory.mktemp("work"))
  mfwm_stage.run(_config(episodes), workdir, progress=False)
  return episodes, workdir


@pytest.fixture(scope="module")
def first_run(trained):
  """The default behaviour (walker_walk's text prompt), 3 updates."""
  episodes, workdir = trained
  return behavior_stage.run_task(_config(episodes), workdir, progress=False)


@pytest.mark.slow
def test_behavior_stage_trains_checkpoints_and_writes_the_prompt_video(trained, first_run):
  _, workdir = trained
  run = first_run
  assert int(run.state.step) == 3 and run.directory.endswith("behavior/walker_walk")
  assert checkpoints.Checkpointer(run.directory, save_every=2, keep=2, config={}).all_steps() \
      == [2, 3]
  assert os.path.getsize(os.path.join(run.directory, "prompt_target.gif")) > 0
  rows = [r for r in read_metrics(workdir) if r["stage"] == "behavior_walker_walk"]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r["imag_actor_loss"]) for r in rows)
  assert run.prompt == 'text: "walk fast clean"'  # the reference's walker_walk prompt


@pytest.mark.slow
def test_behavior_stage_resumes_bit_identically(trained, first_run):
  episodes, workdir = trained
  behavior_stage.run_task(_config(episodes, **{"behavior.name": "split",
                                             "behavior.num_steps": 2}), workdir,
                        progress=False)
  resumed = behavior_stage.run_task(_config(episodes, **{"behavior.name": "split"}), workdir,
                                  progress=False)
  equal = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                       first_run.state.params, resumed.state.params)
  assert all(jax.tree.leaves(equal))


@pytest.mark.slow
def test_behavior_stage_data_free_runs_without_episodes(trained):
  episodes, workdir = trained
  run = behavior_stage.run_task(_config(episodes, **{"behavior.name": "free",
                                                   "behavior.start": "data_free",
                                                   "behavior.num_steps": 1}),
                              workdir, progress=False)
  assert int(run.state.step) == 1


@pytest.mark.slow
def test_behavior_stage_data_free_with_several_updates_per_call(trained):
  # 5 updates, 2 per call: chunks at 0 and 2, then update 4 alone; logged every 2 updates
  # (chunk means) and at the end; checkpoints at 2, 4 and 5.
  episodes, workdir = trained
  overrides = {"behavior.start": "data_free", "behavior.num_steps": 5,
               "behavior.log_every": 2, "behavior.save_every": 2}
  chunked = behavior_stage.run_task(_config(episodes, **{
      "behavior.name": "free_chunks", "behavior.updates_per_call": 2, **overrides}),
                                  workdir, progress=False)
  single = behavior_stage.run_task(_config(episodes, **{"behavior.name": "free_single",
                                                      **overrides}), workdir, progress=False)
  assert int(chunked.state.step) == 5
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               chunked.state.params, single.state.params)
  rows = [r for r in read_metrics(workdir) if r["stage"] == "behavior_free_chunks"]
  assert [r["step"] for r in rows] == [2, 4, 5]
  assert checkpoints.Checkpointer(chunked.directory, save_every=2, keep=2, config={}
                                  ).all_steps() == [4, 5]


@pytest.mark.slow
def test_behavior_checkpoint_of_another_prompt_is_refused(trained, first_run):
  episodes, workdir = trained
  other = _config(episodes, **{"behavior.prompt.text": "lying down"})
  with pytest.raises(checkpoints.CheckpointError, match="another prompt"):
    behavior_stage.run_task(other, workdir, progress=False)


@pytest.mark.slow
def test_behavior_checkpoint_of_another_mfwm_is_refused(trained, first_run, tmp_path):
  """A copy of the behaviour whose recorded MFWM fingerprint differs (as after retraining
  the MFWM): resuming it is refused, and the checkpoint is left as it was."""
  episodes, workdir = trained
  copy = tmp_path / "work"
  shutil.copytree(os.path.join(workdir, "mfwm"), copy / "mfwm")
  shutil.copytree(first_run.directory, copy / "behavior" / "walker_walk")
  for meta in glob.glob(str(copy / "behavior" / "walker_walk" / "*" / "config" / "metadata")):
    with open(meta) as f:
      saved = json.load(f)
    saved["behavior_run"]["mfwm_fingerprint"] = "0" * 64
    with open(meta, "w") as f:
      json.dump(saved, f)
    # Recorded as saved (else the step reads as damaged, tests/test_faults_checkpoints.py).
    files.write_checksums(os.path.dirname(os.path.dirname(meta)))
  before = sorted(os.listdir(copy / "behavior" / "walker_walk"))
  with pytest.raises(checkpoints.CheckpointError, match="different MFWM"):
    behavior_stage.run_task(_config(episodes), str(copy), progress=False)
  assert sorted(os.listdir(copy / "behavior" / "walker_walk")) == before


def test_behavior_stage_refuses_an_mfwm_without_connector(tmp_path):
  config = _config("")
  model = wm_lib.make_world_model(config, 6)
  params = {"world_model": wm_lib.init_world_model(model, jax.random.key(0))}
  ckpt = checkpoints.Checkpointer(str(tmp_path / "w" / "mfwm"), save_every=1, keep=1,
                                  config={})
  ckpt.save(1, {"params": params})
  ckpt.close()
  with pytest.raises(checkpoints.CheckpointError, match="no connector"):
    behavior_stage.train_behavior(config, str(tmp_path / "w"), None, None, progress=False)


@pytest.mark.slow
def test_behavior_stage_text_prompt_without_embedder_is_refused(trained):
  episodes, workdir = trained
  config = _config(episodes, **{"behavior.name": "none"})
  with pytest.raises(ValueError, match="needs a VLM embedder"):
    behavior_stage.train_behavior(config, workdir, None, dataset_reader.open_dataset(episodes),
                                  progress=False)


@pytest.mark.slow
def test_behavior_stage_two_prompts_given_is_refused(trained):
  episodes, workdir = trained
  config = _config(episodes, **{"behavior.prompt.text": "walk",
                                "behavior.prompt.video": "x.gif"})
  with pytest.raises(ValueError, match="give one of"):
    behavior_prompt.config_prompt(config)


@pytest.mark.slow
def test_act_filters_and_returns_mean_actions_in_eval(trained, first_run):
  episodes, workdir = trained
  run = first_run
  config = _config(episodes)
  params = mfwm_lib.load(os.path.join(workdir, "mfwm"))
  mfwm = mfwm_lib.make_mfwm(config, 6)
  behavior = learner.make_behavior(config, 6)
  act = policy_lib.make_act_fn(mfwm.world_model, behavior.actor)
  both = {"world_model": params["world_model"], "actor": jax.device_get(run.state.params["actor"])}
  obs = {"observation": np.zeros((3, 64, 64, 3), np.uint8), "is_first": np.ones(3, bool)}
  carry = policy_lib.initial_carry(mfwm.world_model, 3)
  a1, c1 = act(both, obs, carry, jax.random.key(0), True)
  a2, _ = act(both, obs, carry, jax.random.key(0), True)
  np.testing.assert_array_equal(a1, a2)
  assert a1.shape == (3, 6) and np.all(np.abs(np.asarray(a1)) <= 1.0)  # eval: tanh mean
  s1, _ = act(both, obs, carry, jax.random.key(1), False)
  assert not np.allclose(s1, a1)  # training samples around the mean
  # is_first resets: a row that starts an episode ignores the carried latent.
  obs2 = dict(obs, is_first=np.array([True, False, False]))
  r_reset, _ = act(both, obs2, c1, jax.random.key(2), True)
  r_fresh, _ = act(both, obs2, carry, jax.random.key(2), True)
  np.testing.assert_allclose(r_reset[0], r_fresh[0], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_behavior_policy_evaluates_in_the_environment_deterministically(trained, first_run):
  episodes, workdir = trained
  config = _config(episodes)
  mfwm = mfwm_lib.make_mfwm(config, 6)
  actor = learner.make_behavior(config, 6).actor
  params = {"world_model": mfwm_lib.load(os.path.join(workdir, "mfwm"))["world_model"],
            "actor": jax.device_get(first_run.state.params["actor"])}
  results = []
  for _ in range(2):
    policy = policy_lib.BehaviorPolicy(mfwm.world_model, actor, params, seed=0)
    with vector_lib.SerialEnvs("walker_walk", 2, seed=0, fast_render=True,
                               env_kwargs={"time_limit": 0.5}) as envs:
      results.append(evaluate_lib.evaluate(envs, policy, 3))
  np.testing.assert_array_equal(results[0].returns, results[1].returns)
  assert results[0].returns.shape == (3,) and np.all(np.isfinite(results[0].returns))
  assert results[0].normalized_score is not None


@pytest.mark.slow
def test_eval_stage_plays_each_behaviour_and_writes_the_results_table(trained, first_run):
  episodes, workdir = trained
  config = _config(episodes, **{"eval.episodes": 2, "eval.time_limit": 0.5})
  (summary,) = eval_stage.run(config, workdir, progress=False)
  assert summary["task"] == "walker_walk" and summary["episodes"] == 2
  assert summary["lengths"] == [10, 10]  # 0.5 s of simulated time at action repeat 2
  assert summary["checkpoint_step"] == 3 and summary["prompt"] == first_run.prompt
  assert summary["vlm"] == "random-projection"
  assert np.isfinite(summary["mean_return"]) and summary["normalized_score"] is not None
  # 11-step episodes hold no window of horizon + 1 = 17 steps: no imagination gap, and
  # the synthetic dataset names no task.
  assert [summary[k] for k in eval_stage.LATENT_METRICS] == [None] * 5
  with open(os.path.join(first_run.directory, "eval.json")) as f:
    assert json.load(f)["returns"] == summary["returns"]
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  frames = iio.imread(os.path.join(first_run.directory, "eval_episode.gif"))
  assert frames.shape == (11, 64, 64, 3)  # reset frame + 10 steps
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| walker_walk | walker_walk | offline | " in table  # the summary row
  assert ("| prompt | text: \"walk fast clean\" |" in table
          and "| vlm | random-projection |" in table)  # its details
  csv_lines = open(os.path.join(workdir, "results.csv")).read().splitlines()
  assert csv_lines[0].startswith("task,behavior,prompt_kind,prompt,vlm") and len(csv_lines) == 2
  # Evaluated at the latest checkpoint already: skipped, same result.
  assert eval_stage.run(config, workdir, progress=False)[0] == summary
  with pytest.raises(checkpoints.CheckpointError, match="run the behavior stage first"):
    eval_stage.run(_config(episodes, **{"task": "walker_run"}), workdir, progress=False)
  # The same behaviour played in another task (a cross-task control): evaluated there, in
  # its own files; the own-task evaluation is kept and both are rows of the table.
  own = open(os.path.join(first_run.directory, "eval.json")).read()
  cross_config = _config(episodes, **{"task": "walker_run", "tasks": (),
                                      "behavior.name": "walker_walk", "eval.episodes": 2,
                                      "eval.time_limit": 0.5})
  (cross,) = eval_stage.run(cross_config, workdir, progress=False)
  assert cross["task"] == "walker_run" and cross["behavior"] == "walker_walk"
  assert os.path.isfile(os.path.join(first_run.directory, "eval_walker_run.json"))
  assert os.path.isfile(os.path.join(first_run.directory, "eval_episode_walker_run.gif"))
  assert open(os.path.join(first_run.directory, "eval.json")).read() == own
  csv_lines = open(os.path.join(workdir, "results.csv")).read().splitlines()
  assert len(csv_lines) == 3 and csv_lines[2].startswith("walker_walk,walker_walk")
  assert csv_lines[1].startswith("walker_run,walker_walk")


@pytest.mark.slow
def test_eval_state_mean_filters_with_the_posterior_mode(trained, first_run, monkeypatch):
  episodes, workdir = trained
  made = []
  original = policy_lib.BehaviorPolicy

  def recording(*args, **kwargs):
    made.append(kwargs.get("sample_state", True))
    return original(*args, **kwargs)

  monkeypatch.setattr(policy_lib, "BehaviorPolicy", recording)
  for mean, episodes_n in ((True, 1), (False, 3)):  # another episode count: evaluated again
    config = _config(episodes, **{"eval.episodes": episodes_n, "eval.time_limit": 0.5,
                                  "behavior.eval_state_mean": mean})
    eval_stage.run(config, workdir, progress=False)
  assert made == [False, True]  # the mode when eval_state_mean, samples otherwise


def test_task_configs_one_per_task_and_custom_prompts_need_one_task():
  config = _config("", **{"tasks": ("walker_walk", "walker_run")})
  assert [c.task for c in experiment_config.task_configs(config)] == ["walker_walk", "walker_run"]
  assert [c.task for c in experiment_config.task_configs(_config(""))] == ["walker_walk"]
  with pytest.raises(ValueError, match="applies to one task"):
    experiment_config.task_configs(_config("", **{"tasks": ("walker_walk", "walker_run"),
                                                  "behavior.prompt.text": "jump"}))


def test_eval_metrics_row_is_written_once_per_evaluation(tmp_path):
  # eval.json is written before the metrics row; a rerun after a kill between the two
  # writes the row, and a rerun after both writes nothing more.
  workdir = str(tmp_path)
  summary = {"checkpoint_step": 4, "mean_return": 12.5, "std_return": 1.25,
             "random_mean_return": 3.0, "random_std_return": 0.5, "beats_random": True}
  for _ in range(2):
    eval_stage._write_eval_metrics(workdir, "walker_walk", summary)  # pylint: disable=protected-access
  rows = read_metrics(workdir, "behavior_walker_walk")
  assert [(r["step"], r["eval_mean_return"], r["eval_beats_random"]) for r in rows] == [
      (4, 12.5, 1.0)]
  # Another evaluation at the same step (e.g. in another task) is a row of its own.
  eval_stage._write_eval_metrics(workdir, "walker_walk", dict(summary, mean_return=7.0))  # pylint: disable=protected-access
  assert [r["eval_mean_return"] for r in read_metrics(workdir, "behavior_walker_walk")] == [
      12.5, 7.0]
