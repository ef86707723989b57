"""Reports: open-loop prediction videos and the results table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import input_pipeline
from genrl_jax.report import metrics as metrics_lib
from genrl_jax.report import open_loop
from genrl_jax.report import plots
from genrl_jax.report import results
from genrl_jax.report import tensorboard


@pytest.mark.slow
def test_open_loop_video_predictions_ignore_frames_after_the_context():
  config = synthetic.micro_config()
  model = wm_lib.make_world_model(config, 6)
  params = wm_lib.init_world_model(model, jax.random.key(0))
  ep = synthetic.random_episode(np.random.default_rng(0), 10)
  batch = {k: jnp.asarray(ep[k][None]) for k in ("observation", "action", "is_first")}
  video = np.asarray(open_loop.open_loop_video(model, params, batch, None, context=4))
  assert video.shape == (1, 10, 64, 192, 3) and video.dtype == np.uint8
  np.testing.assert_array_equal(video[..., :64, :], ep["observation"][None])
  model_panel = video[..., 64:128, :].astype(int)
  np.testing.assert_array_equal(video[..., 128:, :], np.abs(model_panel - video[..., :64, :]))
  changed = dict(batch, observation=batch["observation"].at[:, 4:].set(255 - batch[
      "observation"][:, 4:]))
  other = np.asarray(open_loop.open_loop_video(model, params, changed, None, context=4))
  np.testing.assert_array_equal(other[..., 64:128, :], video[..., 64:128, :])
  # The context frames are the reconstructions of the posterior of the whole sequence.
  apply = lambda method, *args: model.apply({"params": params}, *args, method=method)
  post, _ = rssm.observe(model.rssm_def(), params["rssm"],
                         apply(wm_lib.WorldModel.encode, batch["observation"]),
                         batch["action"], batch["is_first"])
  recon = apply(wm_lib.WorldModel.decode, rssm.flat_stoch(post))
  recon = np.clip((np.asarray(recon) + 0.5) * 255, 0, 255).round().astype(np.uint8)
  np.testing.assert_array_equal(video[:, :4, :, 64:128], recon[:, :4])
  with pytest.raises(ValueError, match="context=10 must be in \\[1, 9\\]"):
    open_loop.open_loop_video(model, params, batch, None, context=10)


def test_results_table_rows_sorted_with_every_column(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  for name, task, score in (("b", "walker_run", None), ("a", "walker_walk", 0.25)):
    (tmp_path / "behavior" / name).mkdir(parents=True)
    (tmp_path / "behavior" / name / "eval.json").write_text(json.dumps(dict(
        task=task, behavior=name, prompt_kind="text", prompt='text: "x|y"', vlm="clip:tiny",
        start="offline",
        episodes=3, mean_return=512.25, std_return=1.5, normalized_score=score,
        checkpoint_step=7)))
  rows = results.write_results(str(tmp_path))
  assert [r["task"] for r in rows] == ["walker_run", "walker_walk"]
  md = (tmp_path / "results.md").read_text()
  # The summary: 9 columns, the return as mean +- std, empty where nothing was measured.
  assert "| " + " | ".join(results.SUMMARY_HEADER) + " |" in md
  assert len(results.SUMMARY_HEADER) <= 9
  assert "| walker_walk | a | offline | 512.2 +- 1.500 |  |  | 0.250 |  |  |" in md
  # The details: every recorded column of each behaviour, escaped.
  details = md[md.index("## Details"):]
  assert "### walker_walk, behaviour a" in details
  assert "| prompt | text: \"x\\|y\" |" in details and "| checkpoint_step | 7 |" in details
  lines = (tmp_path / "results.csv").read_text().splitlines()
  assert lines[0] == ",".join(results.COLUMNS) and lines[1].startswith("walker_run,b,")
  assert lines[1].split(",")[9] == ""  # no bounds: empty score


def _random_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
  # Random frames: GIF writers merge identical consecutive frames.
  return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_tensorboard_writer_scalars_and_gif_video_read_back(tmp_path):
  frames = _random_frames(5, 12, 20)
  with tensorboard.TensorBoardWriter(str(tmp_path), "behavior/walk run") as writer:
    writer.scalars(1, {"loss": 2.5, "steps_per_second": 10.0})
    writer.scalars(3, {"loss": 1.25})
    writer.video("prompt_target", 3, frames)
  logdir = tmp_path / "tensorboard" / "behavior_walk_run"
  assert logdir.is_dir()
  events = tensorboard.read_events(str(logdir))
  assert events["scalars"] == {"loss": [(1, 2.5), (3, 1.25)], "steps_per_second": [(1, 10.0)]}
  [(step, image)] = events["images"]["prompt_target"]
  assert (step, image["height"], image["width"]) == (3, 12, 20)
  decoded = tensorboard.decode_gif(image["data"])
  assert decoded.shape[:3] == (5, 12, 20)


def test_tensorboard_writers_of_one_stage_use_separate_event_files(tmp_path):
  for step in (1, 2):
    with tensorboard.TensorBoardWriter(str(tmp_path), "mfwm") as writer:
      writer.scalars(step, {"loss": float(step)})
  logdir = tmp_path / "tensorboard" / "mfwm"
  assert len(list(logdir.glob("events.out.tfevents.*"))) == 2
  assert tensorboard.read_events(str(logdir))["scalars"]["loss"] == [(1, 1.0), (2, 2.0)]


def test_metric_writer_logs_steps_per_second_memory_and_tensorboard_scalars(tmp_path):
  with metrics_lib.MetricWriter(str(tmp_path), "mfwm") as writer:
    first = writer.write(2, {"loss": np.float32(3.0)})
    second = writer.write(4, {"loss": np.float32(1.0)})
    writer.video("open_loop", 4, _random_frames(3, 8, 8))
  memory_keys = {"device_memory_mib", "host_peak_rss_mib"}
  for scalars in (first, second):
    assert memory_keys & set(scalars)
    assert all(scalars[k] > 0 for k in memory_keys & set(scalars))
  assert "steps_per_second" not in first and second["steps_per_second"] > 0
  rows = metrics_lib.read_metrics(str(tmp_path), "mfwm")
  assert [r["step"] for r in rows] == [2, 4] and rows[1]["loss"] == 1.0
  assert rows[1]["steps_per_second"] == pytest.approx(second["steps_per_second"])
  events = tensorboard.read_events(str(tmp_path / "tensorboard" / "mfwm"))
  assert events["scalars"]["loss"] == [(2, 3.0), (4, 1.0)]
  assert [s for s, _ in events["scalars"]["steps_per_second"]] == [4]
  assert memory_keys & set(events["scalars"])
  assert [s for s, _ in events["images"]["open_loop"]] == [4]


def test_memory_metrics_name_the_memory_they_measure():
  memory = metrics_lib.memory_metrics()
  assert set(memory) in ({"host_peak_rss_mib"}, {"device_memory_mib"},
                         {"device_memory_mib", "device_peak_memory_mib"})
  assert all(v > 0 for v in memory.values())


def test_plot_learning_curves_writes_one_png_per_stage(tmp_path):
  with metrics_lib.MetricWriter(str(tmp_path), "mfwm") as mfwm:
    for step in (1, 2, 3):
      mfwm.write(step, {"loss": 1.0 / step, "kl": float(step)})
  with metrics_lib.MetricWriter(str(tmp_path), "behavior_walk") as behavior:
    behavior.write(1, {"actor_loss": 0.5})
  paths = plots.plot_learning_curves(str(tmp_path))
  assert sorted(paths) == sorted(str(tmp_path / "plots" / f"{s}.png")
                                 for s in ("mfwm", "behavior_walk"))
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  for path in paths:
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
  assert plots.plot_learning_curves(str(tmp_path), "mfwm") == [str(tmp_path / "plots" /
                                                                   "mfwm.png")]
  assert plots.plot_learning_curves(str(tmp_path), "nothing") == []
  assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["behavior_walk.png",
                                                                    "mfwm.png"]


def test_learning_curves_keep_the_last_line_of_a_step_logged_twice():
  rows = [{"step": 2, "stage": "s", "loss": 5.0}, {"step": 1, "stage": "s", "loss": 1.0},
          {"step": 2, "stage": "s", "loss": 2.0, "flag": True}]
  curves = plots._curves(rows)  # pylint: disable=protected-access
  assert list(curves) == ["loss"]
  np.testing.assert_array_equal(curves["loss"][0], [1, 2])
  np.testing.assert_array_equal(curves["loss"][1], [1.0, 2.0])


def test_open_loop_gif_stacks_the_sequences_vertically(tmp_path):
  video = np.random.default_rng(0).integers(0, 256, (3, 6, 64, 192, 3), dtype=np.uint8)
  path = str(tmp_path / "mfwm" / "open_loop.gif")
  frames, gif = open_loop.write_open_loop_gif(path, video)
  assert frames.shape == (6, 3 * 64, 192, 3)
  np.testing.assert_array_equal(frames[4, 64:128], video[1, 4])
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  decoded = iio.imread(path, index=None)
  assert decoded.shape[:3] == (6, 3 * 64, 192)
  assert open(path, "rb").read() == gif


@pytest.mark.slow
def test_mfwm_open_loop_report_writes_the_gif_and_the_tensorboard_video(tmp_path):
  episodes = synthetic.write_episodes(str(tmp_path / "eps"), num=2, length=12)
  config = synthetic.micro_config(episodes)
  with config.unlocked():
    config.batch_length = 8
  dataset = dataset_reader.open_dataset(episodes)
  model = wm_lib.make_world_model(config, dataset.spec.action_dim)
  params = wm_lib.init_world_model(model, jax.random.key(0))  # jitted itself
  path = open_loop.write_mfwm_open_loop(config, dataset, params, str(tmp_path / "w"), 7,
                                        num_sequences=2)
  assert path == str(tmp_path / "w" / "mfwm" / "open_loop.gif")
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  assert iio.imread(path, index=None).shape[:3] == (8, 2 * 64, 192)
  events = tensorboard.read_events(str(tmp_path / "w" / "tensorboard" / "mfwm"))
  [(step, image)] = events["images"]["open_loop"]
  assert (step, image["height"], image["width"]) == (7, 128, 192)


def test_open_loop_errors_by_hand():
  truth = np.zeros((1, 4, 2, 2, 3), np.uint8)
  model = np.full((1, 4, 2, 2, 3), 51, np.uint8)  # 0.2 everywhere
  model[:, 2:] = 102  # imagined frames: 0.4
  video = np.concatenate([truth, model, model], axis=3)
  mean = np.full((2, 2, 3), 0.1, np.float32)
  errors = open_loop.open_loop_errors(video, 2, mean)
  assert errors["recon_mse"] == pytest.approx(0.04)
  assert errors["open_loop_mse"] == pytest.approx(0.16)
  assert errors["mean_frame_mse"] == pytest.approx(0.01)
  assert errors["open_loop_ratio"] == pytest.approx(16.0)
  assert errors["last_frame_mse"] == 0 and errors["last_frame_ratio"] == 0  # truth stands still
  truth_moves = video.copy()
  # Truth by step: 0.4, 0 (the last filtered: the one held), then imagined 0.2 and 1.0.
  for step, value in ((0, 102), (2, 51), (3, 255)):
    truth_moves[:, step, :, :2] = value
  moved = open_loop.open_loop_errors(truth_moves, 2, mean)
  # held frame vs truth: (0.04 + 1) / 2 steps; mean frame vs truth: (0.01 + 0.81) / 2
  assert moved["last_frame_mse"] == pytest.approx(0.52)
  assert moved["last_frame_ratio"] == pytest.approx(0.52 / 0.41)
  held = open_loop.last_frame_held(truth_moves, 2)
  assert open_loop.ratio_by_step(held, mean)[2:] == pytest.approx([0.04 / 0.01, 1.0 / 0.81])
  assert open_loop.open_loop_errors(held, 2, mean)["open_loop_mse"] == pytest.approx(0.52)
  # Step by step: filtered 0.04 / 0.01, imagined 0.16 / 0.01; each step has its own
  # baseline (a step whose truth is near the mean frame's colour: a large ratio).
  assert open_loop.ratio_by_step(video, mean) == pytest.approx([4.0, 4.0, 16.0, 16.0])
  video[:, 3, :, :2] = 26  # truth of step 3: 26/255 ~ 0.102, next to the mean's 0.1
  ratios = open_loop.ratio_by_step(video, mean)
  assert ratios[:3] == pytest.approx([4.0, 4.0, 16.0]) and ratios[3] > 1e3


def test_prompt_target_errors_compare_frame_by_frame_against_the_clip_and_mean_frame():
  clip = np.zeros((2, 2, 2, 3), np.uint8)
  clip[1] = 255
  decoded = np.zeros((4, 2, 2, 3), np.uint8)  # longer than the clip: its first 2 frames
  errors = open_loop.prompt_target_errors(decoded, clip, np.full((2, 2, 3), 0.5, np.float32))
  assert errors == pytest.approx({"prompt_target_mse": 0.5, "prompt_mean_frame_mse": 0.25,
                                  "prompt_target_ratio": 2.0})
  assert open_loop.prompt_target_errors(decoded, clip, None) == {"prompt_target_mse": 0.5}
  with pytest.raises(ValueError, match="differ in size"):
    open_loop.prompt_target_errors(decoded[:, :1], clip, None)


@pytest.mark.slow
def test_mfwm_open_loop_report_scores_heldout_episodes_against_the_mean_frame(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  episodes = synthetic.write_episodes(str(tmp_path / "eps"), num=3, length=12)
  config = synthetic.micro_config(episodes)
  with config.unlocked():
    config.batch_length = 8
    config.mfwm.heldout_episodes = 1
  dataset = dataset_reader.open_dataset(episodes)
  model = wm_lib.make_world_model(config, dataset.spec.action_dim)
  params = wm_lib.init_world_model(model, jax.random.key(0))
  workdir = str(tmp_path / "w")
  open_loop.write_mfwm_open_loop(config, dataset, params, workdir, 7, num_sequences=2,
                                 num_scored=4)
  saved = open_loop.read_open_loop_errors(workdir)
  assert saved["split"] == "heldout" and saved["step"] == 7 and saved["sequences"] == 4
  for key in ("open_loop_mse", "recon_mse", "mean_frame_mse", "open_loop_ratio",
              "last_frame_mse", "last_frame_ratio"):
    assert np.isfinite(saved[key]) and saved[key] >= 0
  assert len(saved["last_frame_ratio_by_step"]) == 8 - saved["context"]
  # The mean frame is that of the two training episodes' windows, not the held-out one's.
  train, heldout = input_pipeline.heldout_split(dataset, 1)
  mean = open_loop.training_mean_frame(config, dataset)
  frames = np.concatenate([dataset.read_episode(int(i))["observation"] for i in train])
  assert np.abs(mean - frames.mean(0) / 255).max() < 0.2
  [line] = [r for r in metrics_lib.read_metrics(workdir, "mfwm")]
  assert line["step"] == 7 and line["open_loop_mse"] == pytest.approx(saved["open_loop_mse"])
  assert "open_loop_mse" in tensorboard.read_events(
      str(tmp_path / "w" / "tensorboard" / "mfwm"))["scalars"]
  assert json.loads((tmp_path / "w" / "mfwm" / "open_loop.json").read_text()) == saved
  assert len(saved["ratio_by_step"]) == config.batch_length
  assert all(np.isfinite(r) and r >= 0 for r in saved["ratio_by_step"])


def test_results_table_and_figure_carry_the_learning_report(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  report = dict(random_mean_return=100.0, random_std_return=10.0, random_source="measured (10 "
                "episodes)", prompt_target_mse=0.002, prompt_mean_frame_mse=0.01,
                open_loop_mse=0.004, open_loop_mean_frame_mse=0.012, open_loop_split="heldout")
  for name, ret, beats in (("a", 130.0, True), ("b", 110.0, False)):
    (tmp_path / "behavior" / name).mkdir(parents=True)
    (tmp_path / "behavior" / name / "eval.json").write_text(json.dumps(dict(
        report, task="walker_walk", behavior=name, mean_return=ret, std_return=5.0,
        beats_random=beats, episodes=3)))
  rows = results.write_results(str(tmp_path))
  md = (tmp_path / "results.md").read_text()
  assert "1 of 2 behaviours beat the random policy by 2 std" in md
  # Ratios to the mean frame: prompt 0.002 / 0.01, open loop 0.004 / 0.012.
  assert "| walker_walk | a | | 130.0 +- 5.000 | 100.0 +- 10.0 | yes | | 0.20 | 0.33 |" \
      in md.replace("|  |", "| |")
  assert "| walker_walk | b | | 110.0 +- 5.000 | 100.0 +- 10.0 | no | | 0.20 | 0.33 |" \
      in md.replace("|  |", "| |")
  assert "| random_source | measured (10 episodes) |" in md and "| open_loop_split | heldout |" in md
  header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
  assert {"random_mean_return", "beats_random", "open_loop_mse", "prompt_target_mse"} <= set(header)
  path = str(tmp_path / "plots" / "results.png")
  plots.plot_results(rows, path)
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  assert iio.imread(path).ndim == 3
  with pytest.raises(ValueError, match="no evaluated behaviours"):
    plots.plot_results([], path)


def test_cpu_pipeline_report_table_prints_the_learning_report_and_the_imagination_gap():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "experiments", "cpu_pipeline.py")
  spec = importlib.util.spec_from_file_location("cpu_pipeline", path)
  cpu_pipeline = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cpu_pipeline)
  full = {"task": "stickman_legs_up", "behavior": "stickman_legs_up", "start": "offline",
          "mean_return": 503.6, "std_return": 350.5, "random_mean_return": 188.7,
          "random_std_return": 48.3, "beats_random": True, "normalized_score": 0.474,
          "prompt_target_mse": 0.0094, "prompt_mean_frame_mse": 0.0111,
          "open_loop_mse": 0.0122, "open_loop_mean_frame_mse": 0.0118,
          "latent_reward": 0.189, "replayed_latent_reward": 0.478,
          "imagined_latent_reward": 0.538, "dataset_latent_reward": 0.187}
  bare = {"task": "walker_stand", "mean_return": 105.4, "std_return": 104.8}
  lines = cpu_pipeline.report_table([full, bare]).splitlines()
  assert len(lines) == 4 and "latent reward real/replay/imag/random" in lines[0]
  assert lines[2].split() == ["stickman_legs_up", "offline", "503.6", "+-350.5", "188.7",
                              "+-", "48.3", "yes", "0.474", "0.0094", "/", "0.0111", "0.0122",
                              "/", "0.0118", "0.19/0.48/0.54/0.19"]
  # What was not measured prints as "-" (the behaviour column falls back on the task).
  assert lines[3].split()[0] == "walker_stand" and lines[3].split()[-3:] == ["-", "-", "-/-/-/-"]


def test_run_summary_prints_the_table_and_the_videos_that_exist(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "w"
  (workdir / "behavior" / "walk").mkdir(parents=True)
  (workdir / "mfwm").mkdir()
  (workdir / "prompts").mkdir()
  own = dict(task="walker_walk", behavior="walk", start="data_free", mean_return=30.0,
             std_return=2.0, random_mean_return=10.0, random_std_return=1.0, beats_random=True)
  (workdir / "behavior" / "walk" / "eval.json").write_text(json.dumps(own))
  (workdir / "behavior" / "walk" / "eval_walker_run.json").write_text(
      json.dumps(dict(own, task="walker_run", beats_random=False)))
  for path in ("mfwm/open_loop.gif", "prompts/walker_walk.gif",
               "behavior/walk/prompt_target.gif", "behavior/walk/eval_episode.gif",
               "behavior/walk/eval_episode_walker_run.gif"):
    (workdir / path).write_bytes(b"GIF89a")
  text = results.run_summary(str(workdir))
  assert text.startswith(f"1 of 2 behaviours beat the random policy by 2 std ({workdir}/results.md)")
  assert "| walker_run | walk | data_free | 30.0 +- 2.000 | 10.0 +- 1.000 | no |" in text
  listed = [line.strip() for line in text.split("Videos:")[1].splitlines() if line.strip()]
  assert listed == [str(workdir / p) for p in (
      "mfwm/open_loop.gif", "behavior/walk/prompt_target.gif",
      "behavior/walk/eval_episode_walker_run.gif", "prompts/walker_walk.gif",
      "behavior/walk/eval_episode.gif")]
  assert results.run_summary(str(tmp_path / "empty")) == f"No evaluated behaviours in {tmp_path}/empty."
