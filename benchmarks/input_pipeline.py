r"""Input pipeline throughput: sequences/s read from a dataset, per host, against step time.

  python benchmarks/input_pipeline.py                       # a 40 x 501-step dataset in /tmp
  python benchmarks/input_pipeline.py --dataset=DIR --batches=30 --threads=1,4,8,16
  python benchmarks/input_pipeline.py --step_seconds=0.25   # compare with a measured step
  python benchmarks/input_pipeline.py --frames=random       # incompressible frames

Writes a dataset of smooth synthetic 64x64 frames (`--frames=random`: uniform uint8 noise,
which does not compress) unless `--dataset` names one, then times `SequenceSampler.batches`
at batch `--batch_size` x `--length` (default 48 x 48, the paper's world-model batch) for
each number of reader threads (and `--workers` processes), after a warm-up batch, and the
process's peak RSS (it stays far below the dataset's size: nothing loads the dataset). A
batch every `1 / batches_per_s` seconds keeps a train step of that duration fed; the
world-model step time of the present devices comes from `benchmarks/world_model_step.py`
(or `--step_seconds`). Prints one line per setting.
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genrl_jax.data import dataset as dataset_lib  # pylint: disable=wrong-import-position
from genrl_jax.data import dataset_reader  # pylint: disable=wrong-import-position
from genrl_jax.data import dataset_writer  # pylint: disable=wrong-import-position
from genrl_jax.data import input_pipeline  # pylint: disable=wrong-import-position


def smooth_episode(rng: np.random.Generator, length: int, action_dim: int = 6) -> dict:
  """Frames of moving coloured squares over a gradient (compress like rendered frames)."""
  t = np.arange(length)
  base = np.linspace(40, 90, 64, dtype=np.float32)[None, :, None, None]
  obs = np.broadcast_to(base, (length, 64, 64, 3)).astype(np.uint8).copy()
  x = (rng.integers(0, 48) + 2 * t) % 48
  for i in range(length):
    obs[i, 20:36, x[i]:x[i] + 16] = (200, 120, 40)
  return dict(observation=obs, action=rng.uniform(-1, 1, (length, action_dim)).astype(
      np.float32), reward=rng.normal(size=length).astype(np.float32),
              discount=np.ones(length, np.float32), is_first=t == 0, is_last=t == length - 1,
              is_terminal=np.zeros(length, bool), vlm_embedding=rng.normal(
                  size=(length, 512)).astype(np.float32))


def random_episode(rng: np.random.Generator, length: int, action_dim: int = 6) -> dict:
  """`smooth_episode` with uniformly random uint8 frames: they do not compress, so reading
  them is the pipeline's worst case."""
  episode = smooth_episode(rng, length, action_dim)
  episode["observation"] = rng.integers(0, 256, episode["observation"].shape, dtype=np.uint8)
  return episode


def write_dataset(root: str, episodes: int, length: int, frames: str = "smooth") -> float:
  """Writes `episodes` episodes of `length` steps (`frames`: `smooth` or `random`) as a
  walker dataset with 512-d embeddings at `root`; returns the seconds it took."""
  if frames not in ("smooth", "random"):
    raise ValueError(f"frames={frames!r}: expected smooth or random")
  make = smooth_episode if frames == "smooth" else random_episode
  rng = np.random.default_rng(0)
  start = time.perf_counter()
  with dataset_writer.EpisodeWriter(root, dataset_lib.DatasetSpec("walker", 6), 16,
                                    vlm="benchmark") as writer:
    for _ in range(episodes):
      writer.add(make(rng, length))
  return time.perf_counter() - start


def dataset_size_mib(root: str) -> float:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root)
             for f in fs) / 2**20


def open_with_embeddings(root: str) -> dataset_reader.EpisodeDataset:
  """The dataset at `root` with its first embedding set, if any (as training reads it)."""
  return dataset_reader.open_dataset(root, embedding=next(iter(
      dataset_reader.open_dataset(root).embedding_sets), None))


def measure(dataset: dataset_reader.EpisodeDataset, batch_size: int, length: int,
            batches: int, threads: int, workers: int = 0) -> dict[str, Any]:
  """Times `SequenceSampler.batches` for `batches` batches of `(batch_size, length)`
  sequences after a warm-up batch (which opens shards and starts workers).

  Returns:
    `batches_per_s`, `sequences_per_s`, `ms_per_batch`, `threads`, `workers`, `batch`
    and the process's `peak_rss_mib` so far.
  """
  sampler = input_pipeline.SequenceSampler(dataset, batch_size, length, seed=0,
                                           process_index=0, process_count=1)
  it = sampler.batches(0, batches + 1, num_threads=threads, num_workers=workers)
  next(it)
  start = time.perf_counter()
  count = sum(1 for _ in it)
  rate = count / (time.perf_counter() - start)
  return {"batch": [batch_size, length], "threads": threads, "workers": workers,
          "batches": count, "batches_per_s": rate, "sequences_per_s": rate * batch_size,
          "ms_per_batch": 1000 / rate, "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("--dataset", default="", help="an existing dataset (default: write one)")
  parser.add_argument("--episodes", type=int, default=40)
  parser.add_argument("--episode_length", type=int, default=501)
  parser.add_argument("--frames", default="smooth",
                      help="written datasets: smooth (compress like rendered frames) or "
                      "random (uint8 noise, the worst case)")
  parser.add_argument("--batch_size", type=int, default=48)
  parser.add_argument("--length", type=int, default=48)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--threads", default="1,4,8")
  parser.add_argument("--workers", default="0", help="worker process counts, e.g. 0,2")
  parser.add_argument("--step_seconds", type=float, default=0.0,
                      help="a train step time to compare with (s/update)")
  args = parser.parse_args()

  tmp = None
  root = args.dataset
  if not root:
    tmp = tempfile.mkdtemp(prefix="genrl_pipeline_bench_")
    root = os.path.join(tmp, "dataset")
    seconds = write_dataset(root, args.episodes, args.episode_length, args.frames)
    print(f"wrote {args.episodes} x {args.episode_length} steps ({args.frames} frames) in "
          f"{seconds:.1f} s ({args.episodes * args.episode_length / seconds:.0f} steps/s), "
          f"{dataset_size_mib(root):.0f} MiB on disk", flush=True)
  try:
    dataset = open_with_embeddings(root)
    print(f"dataset: {dataset.num_episodes} episodes, {dataset.num_steps} steps; batch "
          f"{args.batch_size}x{args.length}; {os.cpu_count()} CPUs", flush=True)
    for workers in [int(w) for w in args.workers.split(",")]:
      for threads in [int(t) for t in args.threads.split(",")]:
        r = measure(dataset, args.batch_size, args.length, args.batches, threads, workers)
        line = (f"threads {threads:2d} workers {workers}: {r['sequences_per_s']:7.1f} "
                f"sequences/s = {r['batches_per_s']:5.2f} batches/s ("
                f"{r['ms_per_batch']:6.1f} ms/batch)")
        if args.step_seconds:
          verdict = ("keeps up" if r["ms_per_batch"] / 1000 <= args.step_seconds
                     else "IS THE BOTTLENECK")
          line += f"; step {args.step_seconds * 1000:.0f} ms -> pipeline {verdict}"
        print(line + f"; peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
