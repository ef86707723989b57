"""The world-model train step: data parallelism, learning, NaN stop and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import world_model as wm_lib
from genrl_jax.train import loop
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train.state import step_rng


def _batch(config, seed=0, embed=False):
  rng = np.random.default_rng(seed)
  dim = config.connector.embed_dim if embed else None
  eps = [synthetic.random_episode(rng, config.batch_length, embed_dim=dim)
         for _ in range(config.batch_size)]
  return {k: np.stack([e[k] for e in eps]) for k in eps[0]}


def _run(config, devices, num_steps, with_connector):
  mesh = mesh_lib.make_mesh(devices)
  _, state, step_fn = mfwm_lib.build(config, 6, mesh, with_connector)
  history = []
  for step in range(num_steps):
    batch = _batch(config, step, embed=with_connector)
    state, metrics = step_fn(state, mesh_lib.shard_batch(batch, mesh), step_rng(config.seed, step))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


@pytest.mark.slow
@pytest.mark.parametrize("with_connector", [False, True], ids=["world_model", "mfwm"])
def test_train_step_on_1_device_equals_8_devices(with_connector):
  assert jax.device_count() == 8, "conftest.py should simulate 8 CPU devices"
  config = synthetic.micro_config()
  one, hist_one = _run(config, jax.devices()[:1], 3, with_connector)
  eight, hist_eight = _run(config, jax.devices(), 3, with_connector)
  # Same global batch and keys: only the order of the cross-device reductions differs.
  for a, b in zip(hist_one, hist_eight):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-5, err_msg=k)
  # Adam divides by sqrt(v): for entries whose gradient is near zero, reduction-order noise
  # is amplified up to the step size lr = 1e-4, so parameters are compared to 0.2 lr.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
               one.params, eight.params)
  assert int(eight.step) == 3


@pytest.mark.slow
def test_world_model_step_output_is_replicated_and_state_donated():
  config = synthetic.micro_config()
  mesh = mesh_lib.make_mesh()
  _, state, step_fn = mfwm_lib.build(config, 6, mesh, with_connector=False)
  old_leaf = jax.tree.leaves(state.params)[0]
  state, _ = step_fn(state, mesh_lib.shard_batch(_batch(config), mesh), step_rng(0, 0))
  leaf = jax.tree.leaves(state.params)[0]
  assert leaf.sharding.is_fully_replicated
  assert len(leaf.sharding.device_set) == 8
  assert old_leaf.is_deleted()  # donated to the step


@pytest.mark.slow
def test_world_model_loss_goes_down_on_a_fixed_batch():
  config = synthetic.micro_config(**{"world_model.optimizer.lr": 1e-3})
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  _, state, step_fn = mfwm_lib.build(config, 6, mesh, with_connector=False)
  batch = mesh_lib.shard_batch(_batch(config), mesh)
  losses = []
  for step in range(30):
    state, metrics = step_fn(state, batch, step_rng(0, step))
    losses.append(float(metrics["observation_loss"]))
  assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_non_finite_loss_stops_training_with_the_step_named():
  config = synthetic.micro_config()
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  _, state, step_fn = mfwm_lib.build(config, 6, mesh, with_connector=False)

  def make_batch(step):
    batch = _batch(config, step)
    if step == 2:
      batch["reward"][0, 0] = np.nan
    return batch

  with pytest.raises(loop.NonFiniteError, match="at step 2"):
    loop.train_loop(stage="mfwm", state=state, step_fn=step_fn, make_batch=make_batch,
                    mesh=mesh, seed=0, num_steps=5, log_every=100, checkpointer=None,
                    writer=None, progress=False)


@pytest.mark.parametrize("change, message", [
    (lambda b: b.pop("reward"), "missing keys \\['reward'\\]"),
    (lambda b: b.update(observation=b["observation"][:, :, :32]), "observation.*shape"),
    (lambda b: b.update(observation=b["observation"].astype(np.float32)), "dtype float32"),
    (lambda b: b.update(action=b["action"][..., :2]), "action.*expected \\(8, 8, 6\\)"),
])
def test_bad_batch_raises_a_clear_error(change, message):
  batch = _batch(synthetic.micro_config())
  change(batch)
  with pytest.raises(ValueError, match=message):
    wm_lib.check_batch(batch, action_dim=6)


def test_batch_size_not_divisible_by_device_count_is_refused():
  mesh = mesh_lib.make_mesh()
  with pytest.raises(ValueError, match="config.batch_size=6 is not divisible by the 8 devices"):
    mesh_lib.shard_batch({"x": np.zeros((6, 3))}, mesh)


@pytest.mark.slow
def test_compute_dtype_bfloat16_keeps_float32_params_and_distributions():
  config = synthetic.micro_config(compute_dtype="bfloat16")
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  mfwm, state, step_fn = mfwm_lib.build(config, 6, mesh)
  assert mfwm.world_model.dtype == jnp.bfloat16 and mfwm.connector.dtype == jnp.bfloat16
  batch = mesh_lib.shard_batch(_batch(config, embed=True), mesh)
  state, metrics = step_fn(state, batch, step_rng(0, 0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  with pytest.raises(ValueError, match="compute_dtype='float16'"):
    wm_lib.compute_dtype("float16")
