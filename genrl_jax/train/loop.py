"""A generic training loop: sharded batches, per-step RNG, logging, NaN stop, checkpoints."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

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


def nonfinite_terms(metrics: Any) -> list[str]:
  """`'name=value'` of each metric (scalar or array leaf of the tree) that holds a NaN or
  an infinity: the loss terms and gradient norms that went non-finite."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(metrics))[0]:
    value = np.asarray(leaf)
    if value.dtype.kind in "fc" and not np.isfinite(value).all():
      name = jax.tree_util.keystr(path).strip("[]'\"")
      out.append(f"{name}={value.item() if value.size == 1 else 'non-finite'}")
  return out


def check_finite(state: TrainState, stage: str,
                 recent: Sequence[tuple[int, int, Any]] = (),
                 checkpointer: Checkpointer | None = None) -> None:
  """Raises `NonFiniteError` if an update of `state` had a non-finite loss or gradient.

  `recent`: `(first step, stop step, metrics)` of the calls since the last check; the
  message names the terms that were non-finite in the call holding the first bad update
  (a chunk's metrics are its means). `checkpointer`: where the rerun resumes from.
  """
  bad = int(state.nonfinite_step)
  if bad < 0:
    return
  last_checkpoint = max(checkpointer.all_steps(), default=None) if checkpointer else None
  terms = None
  for first, stop, metrics in recent:
    if first <= bad < stop:
      terms = nonfinite_terms(metrics)
      if stop - first > 1:
        terms = [f"{t} (mean of updates {first}..{stop - 1})" for t in terms]
  named = (f"non-finite: {', '.join(terms)}" if terms else
           "its metrics were not kept" if terms is None else
           "its metrics were all finite: its gradients were not")
  kept = ("no checkpoint was written yet" if last_checkpoint is None else
          f"the last checkpoint, step {last_checkpoint}, is kept and no later one was written")
  raise NonFiniteError(
      f"[{stage}] the loss or gradients became non-finite at step {bad} (0-based update "
      f"index; {named}); training stopped, {kept}. Lower the learning rate (optimizer "
      "settings may change on resume), check the data for NaNs, or use float32 compute, "
      "then run again: it resumes from the last checkpoint.")


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
  # The metrics of the calls since the last finiteness check, to name the terms of a
  # non-finite update (at most SYNC_EVERY of them).
  recent: list[tuple[int, int, Any]] = []
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
      recent.append((step, done, metrics))  # device values: nothing waits here
      if logging_now or saving_now or done % SYNC_EVERY < done - step:
        check_finite(state, stage, recent, checkpointer)
        recent = []
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
