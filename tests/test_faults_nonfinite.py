"""Non-finite losses (docs/reliability.md): training stops naming the first bad update and
the loss terms that went NaN or infinite, keeps the last finite checkpoint, and a rerun
with a lower learning rate (an optimizer setting may change on resume) continues from it.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import synthetic
from genrl_jax.stages import mfwm as mfwm_stage
from genrl_jax.stages import workdir as workdir_lib
from genrl_jax.train import checkpoints, loop, steps
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train.state import TrainState


def _toy_step(nan_at: int | None):
  """A jitted update whose `reward_loss` is NaN at update `nan_at` (None: never), as a
  diverging model's would be; `kl_loss` stays finite."""

  @jax.jit
  def step(state, batch, rng):
    del batch, rng
    bad = (state.step == nan_at) if nan_at is not None else False
    reward_loss = jnp.where(bad, jnp.nan, 0.5)
    kl_loss = jnp.asarray(0.25)
    loss = reward_loss + kl_loss
    grads = {"w": jnp.ones(3) * loss}
    state, grad_norm = steps.apply_gradients(state, grads, optax.sgd(0.1), loss)
    return state, {"model_loss": loss, "reward_loss": reward_loss, "kl_loss": kl_loss,
                   "model_grad_norm": grad_norm}
  return step


def _train(directory: str, nan_at: int | None, num_steps: int) -> TrainState:
  state = TrainState.create({"w": jnp.zeros(3)}, optax.sgd(0.1))
  ckpt = checkpoints.Checkpointer(directory, save_every=3, keep=5, config={})
  state, _ = ckpt.restore_or_keep(state)
  try:
    return loop.train_loop(stage="toy", state=state, step_fn=_toy_step(nan_at),
                           mesh=mesh_lib.make_mesh(jax.devices()[:1]), seed=0,
                           num_steps=num_steps, log_every=100, checkpointer=ckpt,
                           writer=None, batches=lambda a, b: ({} for _ in range(a, b)),
                           progress=False)
  finally:
    ckpt.close()


def test_a_nan_stops_naming_the_step_and_terms_and_the_rerun_resumes(tmp_path):
  directory = str(tmp_path / "ckpt")
  with pytest.raises(loop.NonFiniteError) as raised:
    _train(directory, nan_at=4, num_steps=9)
  message = str(raised.value)
  assert "[toy] the loss or gradients became non-finite at step 4" in message
  assert "model_loss=nan" in message and "reward_loss=nan" in message
  assert "model_grad_norm=nan" in message and "kl_loss" not in message  # finite terms: no
  assert "the last checkpoint, step 3, is kept and no later one was written" in message
  assert checkpoints.list_steps(directory) == [3]
  # The rerun (the fix: no NaN) continues from step 3 to the end.
  state = _train(directory, nan_at=None, num_steps=9)
  assert int(state.step) == 9 and int(state.nonfinite_step) == -1
  assert checkpoints.list_steps(directory) == [3, 6, 9]


def test_a_nan_before_the_first_checkpoint_says_none_was_written(tmp_path):
  directory = str(tmp_path / "ckpt")
  with pytest.raises(loop.NonFiniteError, match="at step 1 .*reward_loss=nan.*no "
                     "checkpoint was written yet"):
    _train(directory, nan_at=1, num_steps=9)
  assert checkpoints.list_steps(directory) == []


def test_a_lower_learning_rate_is_allowed_on_resume_and_logged(tmp_path, caplog):
  config = synthetic.micro_config("")
  workdir_lib.prepare_workdir(config, str(tmp_path))
  lower = synthetic.micro_config("", **{"world_model.optimizer.lr": 1e-5,
                                        "connector.optimizer.lr": 1e-5})
  with caplog.at_level(logging.WARNING):
    workdir_lib.prepare_workdir(lower, str(tmp_path))
  logged = " ".join(r.getMessage() for r in caplog.records)
  assert "resuming with other optimizer settings" in logged
  assert "world_model.optimizer.lr: 0.001 -> 1e-05" in logged
  # Turning clipping off changes the optimizer state's structure: refused.
  unclipped = synthetic.micro_config("", **{"world_model.optimizer.clip": 0.0})
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="world_model.optimizer.clip"):
    workdir_lib.prepare_workdir(unclipped, str(tmp_path))


@pytest.mark.slow
def test_mfwm_diverging_at_a_huge_learning_rate_keeps_its_checkpoint_and_resumes(tmp_path):
  data = synthetic.write_episodes(str(tmp_path / "data"), embed_dim=16)
  workdir = str(tmp_path / "w")
  run = lambda config: (workdir_lib.prepare_workdir(config, workdir),
                        mfwm_stage.run(config, workdir, progress=False))[1]
  run(synthetic.micro_config(data, **{"mfwm.num_steps": 3}))  # the checkpoint of step 3
  huge = synthetic.micro_config(data, **{"mfwm.num_steps": 9,
                                         "world_model.optimizer.lr": 1e12})
  with pytest.raises(loop.NonFiniteError) as raised:
    run(huge)
  message = str(raised.value)
  bad = int(message.split("non-finite at step ")[1].split()[0])
  assert bad >= 3, message
  assert "_loss=" in message, message  # the loss terms that went non-finite, by name
  kept = checkpoints.list_steps(os.path.join(workdir, "mfwm"))
  assert kept[0] == 3 and all(s <= bad for s in kept), (kept, message)
  assert f"the last checkpoint, step {kept[-1]}, is kept" in message
  for step in kept:  # every checkpoint left is finite
    params = checkpoints.restore_subtree(os.path.join(workdir, "mfwm"), ("params",), step)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params)), step
  state = run(synthetic.micro_config(data, **{"mfwm.num_steps": 9,
                                              "world_model.optimizer.lr": 1e-5}))
  assert int(state.step) == 9 and int(state.nonfinite_step) == -1
  assert checkpoints.list_steps(os.path.join(workdir, "mfwm"))[-1] == 9
