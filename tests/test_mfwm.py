"""The MFWM: connector learning, the MFWM stage, prompt decoding and bad input."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import synthetic
from genrl_jax import aligner as aligner_lib
from genrl_jax import connector as connector_lib
from genrl_jax import mfwm as mfwm_lib
from genrl_jax.stages import mfwm as mfwm_stage
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.train import checkpoints
from genrl_jax.train import optimizer as optimizer_lib

CONNECTOR_CONFIG = ml_collections.ConfigDict(dict(
    lafite_noise=0.5, loss_scale=1.0,
    kl=dict(free=0.0, forward=True, balance=0.8, free_avg=False)))


def _toy_task(batch=16, length=16, positions=6, embed_dim=16, stoch=4, discrete=4, seed=0):
  """Sequences of a square moving one position per step. The embedding of a step is a fixed
  unit vector of the position 7 steps earlier (the start of its 8-frame clip), the
  "posterior" a sharp categorical of the current position: both functions of the frames."""
  rng = np.random.default_rng(seed)
  codes = rng.normal(size=(positions, embed_dim))
  codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
  classes = rng.integers(0, discrete, (positions, stoch))
  start = rng.integers(0, positions, batch)
  pos = (start[:, None] + np.arange(length)) % positions  # (B, T)
  embed = codes[(pos - 7) % positions].astype(np.float32)
  logit = 6.0 * jax.nn.one_hot(classes[pos], discrete)  # (B, T, S, K)
  post = {"logit": logit, "stoch": jax.nn.one_hot(classes[pos], discrete),
          "deter": jnp.zeros((batch, length, 8))}
  return jnp.asarray(embed), post


@pytest.mark.slow
def test_connector_kl_falls_by_half_when_embeddings_are_a_function_of_the_frames():
  embed, post = _toy_task()
  connector = connector_lib.Connector(embed_dim=16, n_frames=8, deter=32, hidden=32, stoch=4,
                                      discrete=4)
  aligner = aligner_lib.Aligner(16)
  params = {"connector": connector.init(jax.random.key(0), jnp.zeros((1, 24)))["params"],
            "aligner": aligner.init(jax.random.key(1), jnp.zeros((1, 16)))["params"]}
  opt = optimizer_lib.make_optimizer(ml_collections.ConfigDict(
      dict(lr=3e-3, eps=1e-8, clip=1000.0, wd=1e-6)))
  opt_state = opt.init(params)

  @jax.jit
  def update(params, opt_state, key):
    (_, metrics), grads = jax.value_and_grad(connector_lib.connector_loss, argnums=2,
                                             has_aux=True)(
        connector, aligner, params, embed, post, key, CONNECTOR_CONFIG)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  kls, distances = [], []
  for step in range(300):
    params, opt_state, metrics = update(params, opt_state, jax.random.key(step))
    kls.append(float(metrics["connector_kl"]))
    distances.append(float(metrics["aligner_cosine_distance"]))
  start, end = np.mean(kls[:5]), np.mean(kls[-5:])
  assert end < 0.5 * start, (start, end)
  assert np.mean(distances[-5:]) < np.mean(distances[:5])


@pytest.mark.slow
def test_mfwm_stage_trains_connector_and_aligner_on_embedded_episodes(tmp_path):
  episodes = synthetic.write_episodes(str(tmp_path / "eps"), embed_dim=16)
  state = mfwm_stage.run(synthetic.micro_config(episodes), str(tmp_path / "w"),
                            progress=False)
  assert set(state.params) == {"world_model", "connector", "aligner"}
  rows = [json.loads(l) for l in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  # Training lines, then the open-loop report of the last step.
  *rows, report = rows
  assert report["step"] == rows[-1]["step"] and np.isfinite(report["open_loop_mse"])
  for key in ("connector_kl", "aligner_cosine_distance", "connector_model_grad_norm",
              "model_grad_norm", "observation_loss"):
    assert all(np.isfinite(r[key]) for r in rows), key
  saved = checkpoints.restore_subtree(str(tmp_path / "w" / "mfwm"), ("params", "connector"))
  jax.tree.map(np.testing.assert_array_equal, saved,
               jax.device_get(state.params["connector"]))


@pytest.mark.slow
def test_world_model_only_checkpoint_initialises_the_mfwm(tmp_path):
  plain = synthetic.write_episodes(str(tmp_path / "plain"))
  wm_state = mfwm_stage.run(synthetic.micro_config(plain), str(tmp_path / "wm"),
                               progress=False)
  assert set(wm_state.params) == {"world_model"}
  embedded = synthetic.write_episodes(str(tmp_path / "emb"), embed_dim=16)
  config = synthetic.micro_config(embedded, **{
      "mfwm.num_steps": 0, "mfwm.init_world_model_from": str(tmp_path / "wm" / "mfwm")})
  state = mfwm_stage.run(config, str(tmp_path / "mfwm"), progress=False)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params["world_model"]),
               jax.device_get(wm_state.params["world_model"]))
  bigger = synthetic.micro_config(embedded, **{
      "world_model.deter": 48, "mfwm.init_world_model_from": str(tmp_path / "wm" / "mfwm")})
  with pytest.raises(checkpoints.CheckpointError, match="does not match the sizes"):
    mfwm_stage.run(bigger, str(tmp_path / "other"), progress=False)


@pytest.mark.slow
def test_decode_prompt_video_returns_uint8_frames():
  config = synthetic.micro_config()
  mfwm = mfwm_lib.make_mfwm(config, 6)
  params = mfwm_lib.init_params(mfwm, jax.random.key(0))
  video = mfwm_lib.decode_prompt_video(mfwm, params, jnp.ones((2, 16)) / 4.0,
                                       jax.random.key(1), num_frames=8)
  assert video.shape == (2, 8, 64, 64, 3) and video.dtype == jnp.uint8
  with pytest.raises(ValueError, match="expected \\(N, 16\\)"):
    mfwm_lib.decode_prompt_video(mfwm, params, jnp.ones((32,)), jax.random.key(1))


def test_imagine_shapes_sampling_and_chunk_resets():
  connector = connector_lib.Connector(embed_dim=16, n_frames=4, deter=8, hidden=8, stoch=2,
                                      discrete=3)
  params = {"connector": connector.init(jax.random.key(0), jnp.zeros((1, 20)))["params"]}
  embed = aligner_lib.normalize(jax.random.normal(jax.random.key(1), (3, 8, 16)))
  mode = connector_lib.imagine(connector, params, embed, jax.random.key(2), sample=False)
  again = connector_lib.imagine(connector, params, embed, jax.random.key(2), sample=False)
  assert mode["stoch"].shape == (3, 8, 2, 3) and mode["deter"].shape == (3, 8, 8)
  np.testing.assert_array_equal(mode["deter"], again["deter"])
  reset = connector_lib.imagine(connector, params, embed, jax.random.key(2), sample=False,
                                reset_every_n_frames=True)
  np.testing.assert_allclose(reset["deter"][:, :4], mode["deter"][:, :4], atol=1e-6)
  assert not np.allclose(reset["deter"][:, 4:], mode["deter"][:, 4:])
  with pytest.raises(ValueError, match="needs the aligner"):
    connector_lib.imagine(connector, params, embed, None, denoise=True)


def test_chunk_embeddings_use_the_last_frame_of_each_chunk():
  embed = jnp.arange(16, dtype=jnp.float32).reshape(1, 16, 1)
  out = connector_lib.chunk_embeddings(embed, 8)
  np.testing.assert_array_equal(out[0, :, 0], [7] * 8 + [15] * 8)


def test_bad_embeddings_give_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="'vlm_embedding'.*expected \\(B, T, 16\\)"):
    connector_lib.check_embeddings(jnp.zeros((2, 16, 8)), 16, 8)
  with pytest.raises(ValueError, match="12 steps; expected .*multiple of n_frames=8"):
    connector_lib.check_embeddings(jnp.zeros((2, 12, 16)), 16, 8)
  episodes = synthetic.write_episodes(str(tmp_path / "eps"), embed_dim=16)
  wrong_dim = synthetic.micro_config(episodes, **{"connector.embed_dim": 32})
  with pytest.raises(dataset_lib.DatasetError, match="dimension 16; config.connector.embed_dim is 32"):
    mfwm_stage.run(wrong_dim, str(tmp_path / "a"), progress=False)
  odd_length = synthetic.micro_config(episodes, **{"batch_length": 12})
  with pytest.raises(ValueError, match="batch_length=12 is not a multiple"):
    mfwm_stage.run(odd_length, str(tmp_path / "b"), progress=False)
  bad = dataset_reader.open_dataset(episodes, synthetic.SYNTHETIC_VLM).read_episode(0)
  bad["vlm_embedding"][10:] = np.nan
  nan_dir = str(tmp_path / "nan")
  with dataset_writer.EpisodeWriter(nan_dir, dataset_lib.DatasetSpec("walker", 6),
                                    vlm=synthetic.SYNTHETIC_VLM) as writer:
    for _ in range(3):
      writer.add(bad)
  with pytest.raises(dataset_lib.DatasetError, match="NaN or infinite"):
    mfwm_stage.run(synthetic.micro_config(nan_dir), str(tmp_path / "c"), progress=False)
