"""A generic training loop: sharded batches, per-step RNG, logging, NaN stop, checkpoints."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np
import tqdm
from absl import logging
from jax.sharding import Mesh

from genrl_jax.data.prefetch import prefetch
from genrl_jax.report.metrics import MetricWriter
from genrl_jax.train import distributed
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train.checkpoints import Checkpointer
from genrl_jax.train.state import TrainState, step_rng

# Wait for the device at least this often: many undrained steps with cross-device
# collectives on simulated CPU devices can abort XLA's rendezvous (platform notes).
SYNC_EVERY = 8


class NonFiniteError(FloatingPointError):
  """The loss or the gradients became NaN or infinite."""


def check_finite(state: TrainState, stage: str) -> None:
  bad = int(state.nonfinite_step)
  if bad >= 0:
    raise NonFiniteError(
        f"[{stage}] the loss or gradients became non-finite at step {bad} (0-based update "
        "index); training stopped and no checkpoint of a later step was written. Lower the "
        "learning rate, check the data for NaNs, or use float32 compute.")


def train_loop(*, stage: str, state: TrainState, step_fn: Callable[..., Any],
               mesh: Mesh, seed: int, num_steps: int, log_every: int,
               checkpointer: Checkpointer | None, writer: MetricWriter | None,
               make_batch: Callable[[int], dict[str, np.ndarray]] | None = None,
               batches: Callable[[int, int], Iterator[dict[str, np.ndarray]]] | None = None,
               progress: bool = True, chunk_fn: Callable[..., Any] | None = None,
               updates_per_call: int = 1,
               on_exit: Callable[[], None] | None = None) -> TrainState:
  """Runs `step_fn` from `state.step` to `num_steps`.

  The batch of update `n` is `make_batch(n)` (computed ahead in a thread), or the `n`-th
  batch of the iterator `batches(start, num_steps)` (an input pipeline that prefetches on
  its own); its key is `step_rng(seed, n)`, so a run that resumes from a checkpoint at step
  `n` continues exactly as an uninterrupted one. Saves through `checkpointer` at its
  interval and at the end. At the end, also after an error, closes `writer` (its
  TensorBoard file) and calls `on_exit()` (the stages plot their learning curves there,
  so that a stop on a NaN shows how it came about). In a
  multi-process job every process runs the loop on its own part of each batch, and at the
  end the processes check that they hold the same parameters.

  `chunk_fn(state, jax.random.key(seed)) -> (state, metrics)`, for steps that read no host
  batch (their batches are `{}`), runs `updates_per_call` updates in one call (keys folded
  on the device from `state.step`, the same as one call per update); it is used for every
  whole chunk, `step_fn` for the rest. Logged metrics are then the chunk's means.
  `updates_per_call` must divide `log_every` and the checkpoint interval.
  """
  if (make_batch is None) == (batches is None):
    raise ValueError("give exactly one of make_batch and batches")
  chunk = updates_per_call if chunk_fn is not None else 1
  if chunk < 1 or log_every % chunk or (checkpointer is not None and
                                        checkpointer.save_every % chunk):
    interval = checkpointer.save_every if checkpointer is not None else None
    raise ValueError(f"updates_per_call={updates_per_call} must be >= 1 and divide the "
                     f"log interval ({log_every}) and the checkpoint interval ({interval})")
  if batches is None:
    # The host prepares batches while the device trains.
    batches = lambda a, b: prefetch(make_batch, a, b)
  start = int(state.step)
  show = progress and jax.process_index() == 0
  bar = tqdm.tqdm(total=num_steps, initial=start, desc=stage, disable=not show,
                  dynamic_ncols=True)
  host_batches = batches(start, num_steps)
  try:
    step = start
    while step < num_steps:
      if chunk > 1 and step % chunk == 0 and step + chunk <= num_steps:
        state, metrics = chunk_fn(state, jax.random.key(seed))
        done = step + chunk
      else:
        host_batch = next(host_batches)
        state, metrics = step_fn(state, mesh_lib.shard_batch(host_batch, mesh),
                                 step_rng(seed, step))
        done = step + 1
      logging_now = done % log_every == 0 or done == num_steps
      saving_now = checkpointer is not None and (
          done == num_steps or checkpointer.should_save(done))
      if logging_now or saving_now or done % SYNC_EVERY < done - step:
        check_finite(state, stage)
      if logging_now and writer is not None:
        scalars = writer.write(done, metrics)
        bar.set_postfix({k: f"{scalars[k]:.4g}" for k in list(scalars)[:3]})
      if saving_now:
        checkpointer.save(done, state, force=done == num_steps)
      bar.update(done - step)
      step = done
  finally:
    bar.close()
    if writer is not None:
      writer.close()
    if on_exit is not None:
      on_exit()
  if jax.process_count() > 1:
    digest = distributed.check_replicas_agree(state.params, f"[{stage}] the parameters")
    logging.info("[%s] parameters identical on all %d processes at step %d (sha256 %s)",
                 stage, jax.process_count(), int(state.step), digest[:16])
  return state
