"""The mfwm stage (`--mode=mfwm`; the model itself is `genrl_jax/mfwm.py`): trains the
multimodal foundation world model (world model, connector,
aligner; the world model alone when the episodes have no VLM embeddings) on the run's
episodes, resuming from `<workdir>/mfwm`; then writes the open-loop report
(`report.open_loop`) on the held-out episodes, with the trained MFWM's fingerprint.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from absl import logging

from genrl_jax import experiment_config
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import world_model as wm_lib
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import input_pipeline
from genrl_jax.report import open_loop, plots
from genrl_jax.report.metrics import MetricWriter
from genrl_jax.stages import workdir as workdir_lib
from genrl_jax.train import checkpoints, loop
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train.state import TrainState


def _train_batch(batch: dict) -> dict:
  """Refuses non-finite embeddings."""
  if "vlm_embedding" in batch and not np.isfinite(batch["vlm_embedding"]).all():
    raise dataset_lib.DatasetError("batch['vlm_embedding'] (B, T, E) holds NaN or infinite "
                                    "values; recompute the dataset's embeddings")
  return batch


def run(config: ml_collections.ConfigDict, workdir: str, progress: bool = True
        ) -> TrainState:
  """Trains the MFWM on the episodes of the data stage; resumes automatically."""
  dataset = workdir_lib.open_run_dataset(config, workdir, config.mfwm.train_connector)
  action_dim = dataset.spec.action_dim
  with_connector = dataset.embedding is not None
  if config.mfwm.train_connector and not with_connector:
    logging.warning("mfwm: the dataset has no 'vlm_embedding'; training the world model "
                    "alone (the connector and aligner need embedded episodes)")
  if with_connector and config.batch_length % config.connector.n_frames:
    raise ValueError(f"config.batch_length={config.batch_length} is not a multiple of "
                     f"config.connector.n_frames={config.connector.n_frames}")
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_divisible(config.batch_size, mesh, "config.batch_size")
  keys = wm_lib.BATCH_KEYS + (("vlm_embedding",) if with_connector else ())
  train, _ = input_pipeline.heldout_split(dataset, config.mfwm.heldout_episodes)
  sampler = input_pipeline.SequenceSampler(dataset, config.batch_size // jax.process_count(),
                                           config.batch_length, seed=config.seed * 1000,
                                           keys=keys, episodes=train)
  _, state, step_fn = mfwm_lib.build(config, action_dim, mesh, with_connector)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "mfwm"),
                                  save_every=config.mfwm.save_every, keep=config.mfwm.keep,
                                  config=experiment_config.config_to_dict(config))
  state, resumed = ckpt.restore_or_keep(state)
  if resumed:
    logging.info("mfwm: resumed from step %d", int(state.step))
  workdir_lib.write_skipped_metrics(config, workdir, "mfwm", int(state.step), dataset)
  try:
    state = loop.train_loop(
        stage="mfwm", state=state, step_fn=step_fn,
        batches=workdir_lib.dataset_batches(config, sampler, _train_batch), mesh=mesh,
        seed=config.seed, num_steps=config.mfwm.num_steps, log_every=config.mfwm.log_every,
        checkpointer=ckpt, writer=MetricWriter(workdir, "mfwm"), progress=progress,
        on_exit=lambda: plots.write_learning_curves(workdir, "mfwm"))
  finally:
    ckpt.close()
  if jax.process_index() == 0:
    try:  # A report: its failure must not fail a finished training.
      # The fingerprint behaviours record of the MFWM they learn in (the last checkpoint's
      # params): report rows can tell whether their open-loop figures are of that MFWM.
      params = open_loop.host_copy(state.params)
      open_loop.write_mfwm_open_loop(config, dataset, params["world_model"], workdir,
                                     int(state.step),
                                     mfwm_fingerprint=checkpoints.params_fingerprint(params))
    except Exception:  # pylint: disable=broad-except
      logging.warning("mfwm: could not write the open-loop video", exc_info=True)
  return state
