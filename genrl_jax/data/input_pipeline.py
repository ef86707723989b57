"""Per-host input pipeline: uniform sequence sampling from a dataset, read in the background.

Each process reads only its share of the episodes (`EpisodeDataset.process_share`) and
builds its `batch_size // process_count` rows of every global batch; `train.mesh.
shard_batch` assembles the rows of all processes into one globally sharded array.

Sampling follows the reference (method.md §6.2): the episode is uniform over the process's
episodes (not weighted by length), the start uniform in `[0, len - L]`, and a window never
crosses episodes. Row `r` of batch `n` on process `p` is drawn from
`np.random.default_rng([seed, p, n, r])`: a run resumed at step `n` sees the batches of an
uninterrupted one, and the batches do not depend on the number of reader threads.
Windows are read by grain in background threads (or worker processes), several batches
ahead, so that the accelerator does not wait on the host.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import jax
import numpy as np

from genrl_jax.data.dataset_reader import EpisodeDataset
from genrl_jax.data.episodes import DatasetError, Episode


class SequenceSampler:
  """Windows `(L, ...)` of one process's episodes, batched to `(B, L, ...)`."""

  def __init__(self, dataset: EpisodeDataset, batch_size: int, length: int, seed: int,
               process_index: int | None = None, process_count: int | None = None,
               keys: Sequence[str] | None = None, episodes: Sequence[int] | None = None):
    """`batch_size` is this process's share of the global batch. `episodes`: the episode
    positions to sample from (e.g. `heldout_split`'s training part); None: all."""
    if batch_size < 1 or length < 1:
      raise ValueError(f"batch_size={batch_size} and length={length} must be positive")
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.dataset = dataset
    self.share = dataset.process_share(self.process_index, self.process_count)
    if episodes is not None:
      self.share = self.share[np.isin(self.share, np.asarray(episodes, np.int64))]
      if not len(self.share):
        raise DatasetError(f"{dataset.root}: none of the {len(episodes)} chosen episodes is in "
                           f"process {self.process_index}'s share of {dataset.num_episodes}")
    short = self.share[dataset.lengths[self.share] < length]
    if len(short):
      names = sorted({dataset.shards[dataset._where[i][0]].path for i in short[:20]})  # pylint: disable=protected-access
      raise DatasetError(
          f"{len(short)} episodes (ids {dataset.episode_ids[short[:5]].tolist()}...) in "
          f"{names[:3]} are shorter than the sequence length {length} (steps: "
          f"{dataset.lengths[short[:5]].tolist()}...); use a shorter batch_length or a "
          "dataset without them")
    self.batch_size, self.length, self.seed = batch_size, length, seed
    self.keys = tuple(keys) if keys is not None else None

  def locate(self, step: int, row: int) -> tuple[int, int]:
    """Episode position and start step of row `row` of batch `step`."""
    rng = np.random.default_rng([self.seed, self.process_index, step, row])
    episode = int(self.share[rng.integers(0, len(self.share))])
    start = int(rng.integers(0, self.dataset.lengths[episode] - self.length + 1))
    return episode, start

  def read(self, index: int) -> Episode:
    """Window number `index` = `step * batch_size + row`."""
    episode, start = self.locate(*divmod(index, self.batch_size))
    window = self.dataset.read_window(episode, start, self.length)
    return window if self.keys is None else {k: window[k] for k in self.keys}

  def sample(self, step: int) -> dict[str, np.ndarray]:
    """Batch `step`, read in this thread (tests, small runs)."""
    return _stack([self.read(step * self.batch_size + r) for r in range(self.batch_size)])

  def batches(self, start: int, stop: int, num_threads: int = 8, prefetch: int = 4,
              num_workers: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Batches `start .. stop - 1`, each read by one of `num_threads` threads (in each of
    `num_workers` processes when > 0), keeping up to `prefetch` batches ready."""
    import grain  # pylint: disable=g-import-not-at-top
    # One element per batch, so that worker processes (which each take a slice of the
    # elements) return whole batches in order.
    ds = grain.MapDataset.range(start, stop).map(self.sample)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, num_threads),
                                              prefetch_buffer_size=max(1, prefetch, num_threads)))
    if num_workers > 0:
      from absl import flags  # pylint: disable=g-import-not-at-top
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults suffice)
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it)


def heldout_split(dataset: EpisodeDataset, num_heldout: int) -> tuple[np.ndarray, np.ndarray]:
  """Episode positions `(train, heldout)`: the `num_heldout` episodes with the largest ids
  are held out (a collection's last round, one per task when the tasks interleave;
  collecting more later moves the held-out set to the new last round); 0 holds out
  nothing (`heldout` is then empty)."""
  if num_heldout < 0 or num_heldout >= dataset.num_episodes:
    raise DatasetError(f"{dataset.root}: cannot hold out {num_heldout} of its "
                       f"{dataset.num_episodes} episodes (config.mfwm.heldout_episodes must "
                       "be in [0, episodes - 1])")
  order = np.argsort(dataset.episode_ids, kind="stable")
  heldout = np.sort(order[len(order) - num_heldout:]) if num_heldout else order[:0]
  train = np.setdiff1d(np.arange(dataset.num_episodes), heldout)
  return train, heldout


def _stack(rows: Sequence[Episode]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
