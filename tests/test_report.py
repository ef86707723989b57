"""Reports: open-loop prediction videos and the results table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.report import open_loop
from genrl_jax.report import results


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
        task=task, behavior=name, prompt='text: "x|y"', vlm="clip:tiny", start="offline",
        episodes=3, mean_return=512.25, std_return=1.5, normalized_score=score,
        checkpoint_step=7)))
  rows = results.write_results(str(tmp_path))
  assert [r["task"] for r in rows] == ["walker_run", "walker_walk"]
  md = (tmp_path / "results.md").read_text()
  assert "| walker_walk | a | text: \"x\\|y\" | clip:tiny | offline | 3 | 512.2 | 1.500 | " \
         "0.250 | 7 |" in md
  lines = (tmp_path / "results.csv").read_text().splitlines()
  assert lines[0] == ",".join(results.COLUMNS) and lines[1].startswith("walker_run,b,")
  assert lines[1].split(",")[8] == ""  # no bounds: empty score
