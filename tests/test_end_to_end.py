"""The main job end to end: `experiments/main.py --config=configs/stickman.py:tiny` on a very
small budget, through all four stages, then the artefacts a person looks at.

Scores are not asserted (a few hundred updates learn nothing reliable); what is checked is
that every stage ran and left well-formed output: checkpoints that restore, a results table
with every task, videos that decode, metrics, plots and TensorBoard logs. The VLM is the
tiny variant's own: a small CLIP with random weights built locally (no model hub), so the
prompts are clips cut from the tasks' own episodes.
"""

import csv
import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "experiments", "main.py")
sys.path.insert(0, ROOT)
from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top,wrong-import-position
import test_notebook  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.slow  # whole pipelines in subprocesses: the full tier only

TASKS = tuple(experiment_config.load_config("configs/stickman.py:tiny").tasks)
REPORT_COLUMNS = ("random_mean_return", "random_std_return", "prompt_target_mse",
                  "prompt_mean_frame_mse", "open_loop_mse", "open_loop_mean_frame_mse",
                  "latent_reward", "replayed_latent_reward", "imagined_latent_reward",
                  "dataset_latent_reward", "dataset_replayed_latent_reward")
# Tiny sizes with 4x16 batches: a few hundred updates in all take a few minutes on 2 cores.
BUDGET = ("--config.data.collect_episodes=2", "--config.batch_size=4",
          "--config.batch_length=16", "--config.behavior.batch_size=4",
          "--config.behavior.batch_length=16", "--config.mfwm.num_steps=120",
          "--config.mfwm.log_every=40", "--config.mfwm.save_every=60",
          "--config.behavior.num_steps=40", "--config.behavior.log_every=20",
          "--config.behavior.save_every=20", "--config.eval.episodes=2",
          "--config.eval.time_limit=3.0")
# Metrics the training steps write (`mfwm.train_step` with the world-model and connector
# losses and `group_grad_norms`; `behavior.learner.behavior_update`), per logged row.
MFWM_METRICS = ("model_loss", "observation_loss", "reward_loss", "kl_loss", "model_kl",
                "model_grad_norm", "connector_model_loss", "aligner_cosine_distance",
                "connector_kl", "connector_model_grad_norm")
BEHAVIOR_METRICS = ("imag_actor_loss", "imag_critic_loss", "imag_reward_mean", "imag_critic",
                    "imag_actor_grad_norm", "imag_critic_grad_norm")


def _main(workdir, *args, cache):
  env = dict(os.environ, GENRL_JAX_CACHE=str(cache), HF_HUB_OFFLINE="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run(
      [sys.executable, MAIN, "--config=configs/stickman.py:tiny", f"--workdir={workdir}",
       *BUDGET, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A finished tiny run: (workdir, cache dir, completed process)."""
  workdir = tmp_path_factory.mktemp("e2e") / "run"
  cache = tmp_path_factory.mktemp("cache")
  result = _main(workdir, cache=cache)
  assert result.returncode == 0, result.stderr[-6000:]
  return str(workdir), cache, result


def _frames(path):
  frames = np.asarray(iio.imread(path, index=None))
  assert frames.ndim == 4 and frames.shape[-1] in (3, 4) and frames.shape[0] >= 1, path
  return frames


def test_end_to_end_tiny_pipeline_results_table_has_every_task(run):
  workdir, _, result = run
  with open(os.path.join(workdir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["task"] for r in rows) == sorted(TASKS)
  for row in rows:
    assert row["prompt_kind"] == "video (dataset clip)"
    assert row["vlm"].startswith("clip:random-weights")
    assert row["episodes"] == "2" and row["behavior"] == row["task"]
    assert np.isfinite(float(row["mean_return"]))
    assert np.isfinite(float(row["normalized_score"]))
    # The learning report: present and finite (its values are not asserted).
    for column in REPORT_COLUMNS:
      assert np.isfinite(float(row[column])), column
    assert row["beats_random"] in ("True", "False")
    assert row["random_source"] == "measured (10 episodes)" and row["open_loop_split"] == "heldout"
  md = open(os.path.join(workdir, "results.md")).read()
  assert all(f"| {t} |" in md for t in TASKS)
  assert "behaviours beat the random policy by 2 std" in md
  assert "RANDOM weights" in result.stderr  # the stand-in VLM says so plainly


def test_end_to_end_tiny_pipeline_checkpoints_restore(run):
  from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top
  from genrl_jax import mfwm as mfwm_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax import world_model as wm_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  workdir, _, _ = run
  config = experiment_config.load_config("configs/stickman.py:tiny")
  params = mfwm_lib.load(os.path.join(workdir, "mfwm"))
  assert set(params) == {"world_model", "connector", "aligner"}
  assert wm_lib.action_dim_of(params["world_model"], config) == 10
  leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(params)]
  assert leaves and all(np.isfinite(x).all() for x in leaves)
  for task in TASKS:
    directory = os.path.join(workdir, "behavior", task)
    actor = checkpoints.restore_subtree(directory, ("params", "actor"))
    assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(actor))
    saved = checkpoints.read_checkpoint_config(directory)
    meta = saved["behavior_run"]
    assert meta["prompt_kind"] == "video (dataset clip)"
    assert meta["prompt"] == f"video: {task}.gif"
    # The report names the MFWM: the one the open-loop report scored, bit for bit.
    assert meta["mfwm_fingerprint"] == checkpoints.params_fingerprint(params)
    with open(os.path.join(directory, "eval.json")) as f:
      assert json.load(f)["mfwm_fingerprint"] == meta["mfwm_fingerprint"][:12]
    assert saved["host"]["numerics"] and saved["host"]["backend"] == "cpu"
  with open(os.path.join(workdir, "mfwm", "open_loop.json")) as f:
    assert json.load(f)["mfwm_fingerprint"] == checkpoints.params_fingerprint(params)


def test_end_to_end_tiny_pipeline_videos_decode(run):
  workdir, _, _ = run
  for task in TASKS:
    clip = _frames(os.path.join(workdir, "prompts", f"{task}.gif"))
    assert clip.shape[:3] == (8, 64, 64)
    with open(os.path.join(workdir, "prompts", f"{task}.json")) as f:
      meta = json.load(f)
    assert meta["task"] == task and meta["n_frames"] == 8
    target = _frames(os.path.join(workdir, "behavior", task, "prompt_target.gif"))
    assert target.shape[1:3] == (64, 64)
    episode = _frames(os.path.join(workdir, "behavior", task, "eval_episode.gif"))
    assert episode.shape[1:3] == (64, 64) and episode.shape[0] > 1
  open_loop = _frames(os.path.join(workdir, "mfwm", "open_loop.gif"))
  # batch_length frames; truth | model | error side by side
  assert open_loop.shape[0] == 16 and open_loop.shape[2] == 3 * 64


def _assert_training_rows(rows: list[dict], names: tuple[str, ...],
                          changes: tuple[str, ...]) -> None:
  """Every row holds every metric in `names`, finite; the `changes` ones differ between the
  first and the last row (training moved them; their direction is not asserted)."""
  for row in rows:
    missing = [k for k in names if k not in row]
    assert not missing, f"step {row['step']}: no {missing} in {sorted(row)}"
    assert all(np.isfinite(row[k]) for k in names), row
  for k in changes:
    assert rows[0][k] != rows[-1][k], (k, rows[0][k], rows[-1][k])


def test_end_to_end_tiny_pipeline_metrics_plots_and_tensorboard(run):
  from genrl_jax.report import metrics  # pylint: disable=g-import-not-at-top
  workdir, _, _ = run
  mfwm = metrics.read_metrics(workdir, "mfwm")
  assert [r["step"] for r in mfwm] == [40, 80, 120, 120]  # training, then the open-loop report
  _assert_training_rows(mfwm[:-1], MFWM_METRICS, changes=("observation_loss", "model_loss"))
  assert all(np.isfinite(mfwm[-1][k]) for k in ("open_loop_mse", "mean_frame_mse",
                                                "last_frame_mse", "last_frame_ratio"))
  for task in TASKS:
    rows = metrics.read_metrics(workdir, f"behavior_{task}")
    # The prompt target's errors, training, then the evaluation's report.
    assert [r["step"] for r in rows] == [0, 20, 40, 40]
    _assert_training_rows(rows[1:-1], BEHAVIOR_METRICS,
                          changes=("imag_critic_loss", "imag_actor_loss"))
    assert all(np.isfinite(rows[0][k]) for k in ("prompt_target_mse", "prompt_mean_frame_mse"))
    assert all(np.isfinite(rows[-1][k]) for k in (
        "eval_mean_return", "eval_random_mean_return", "eval_beats_random",
        "eval_latent_reward", "eval_replayed_latent_reward", "eval_imagined_latent_reward",
        "eval_dataset_latent_reward", "eval_dataset_replayed_latent_reward"))
  plots = os.listdir(os.path.join(workdir, "plots"))
  assert "mfwm.png" in plots and all(f"behavior_{t}.png" in plots for t in TASKS)
  assert "results.png" in plots
  image = iio.imread(os.path.join(workdir, "plots", "mfwm.png"))
  assert image.ndim == 3 and min(image.shape[:2]) > 100
  events = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(workdir, "tensorboard"))
            for f in files if "tfevents" in f]
  assert events and all(os.path.getsize(e) > 0 for e in events)


def test_end_to_end_rerun_skips_finished_stages_and_refuses_other_config(run):
  workdir, cache, _ = run
  read = lambda p: open(os.path.join(workdir, p), "rb").read()
  results_csv = read("results.csv")
  before = {p: os.path.getmtime(os.path.join(workdir, p))
            for p in (f"prompts/{TASKS[0]}.gif", f"behavior/{TASKS[0]}/eval.json")}
  again = _main(workdir, "--mode=eval", cache=cache)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "already evaluated" in again.stderr
  other = _main(workdir, "--config.world_model.deter=64", cache=cache)
  assert other.returncode != 0
  assert "different config" in other.stderr and "world_model.deter" in other.stderr
  for path, mtime in before.items():
    assert os.path.getmtime(os.path.join(workdir, path)) == mtime
  assert read("results.csv") == results_csv
  assert os.path.isdir(os.path.join(workdir, "mfwm"))


@pytest.mark.slow
def test_end_to_end_notebook_runs_on_the_finished_micro_run(run):
  """experiments/notebook.ipynb executed with nbclient in a fresh kernel of this
  interpreter against this module's finished run (`GENRL_WORKDIR`); nbclient fails on the
  first cell that raises. The notebook must only read the workdir."""
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  workdir, _, _ = run
  before = test_notebook.files(workdir)
  notebook = nbformat.read(test_notebook.NOTEBOOK, as_version=4)
  for cell in test_notebook.code_cells(notebook):  # outputs of this run only
    cell["outputs"], cell["execution_count"] = [], None
  notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
  # One CPU device, as the micro run was trained with (the test session simulates 8, and
  # its batches of 4 do not split over them); matplotlib's inline backend draws the figures.
  env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
  env.update(GENRL_WORKDIR=workdir, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute(env=env)  # raises CellExecutionError at the first cell that raises
  assert not test_notebook.errors(notebook)
  assert test_notebook.image_outputs(notebook) >= test_notebook.MIN_IMAGES
  printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
  assert os.path.realpath(printed.strip()) == os.path.realpath(sys.executable)
  assert test_notebook.files(workdir) == before, "the notebook changed files of the workdir it read"
