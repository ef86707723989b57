r"""Input pipeline throughput: sequences/s read from a dataset, per host, against step time.

  python benchmarks/input_pipeline.py                       # a 40 x 501-step dataset in /tmp
  python benchmarks/input_pipeline.py --dataset=DIR --batches=30 --threads=1,4,8,16
  python benchmarks/input_pipeline.py --step_seconds=0.25   # compare with a measured step

Writes a dataset of smooth synthetic 64x64 frames (unless `--dataset` names one), then
times `SequenceSampler.batches` at batch `--batch_size` x `--length` (default 48 x 48, the
paper's world-model batch) for each number of reader threads (and `--workers` processes),
after a warm-up batch, and the process's peak RSS (it stays far below the dataset's size:
nothing loads the dataset). A batch every `1 / batches_per_s` seconds keeps a train step of that
duration fed; the world-model step time of the present devices comes from
`benchmarks/world_model_step.py` (or `--step_seconds`). Prints one line per setting.
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

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


def write_dataset(root: str, episodes: int, length: int) -> float:
  rng = np.random.default_rng(0)
  start = time.perf_counter()
  with dataset_writer.EpisodeWriter(root, dataset_lib.DatasetSpec("walker", 6), 16,
                                    vlm="benchmark") as writer:
    for _ in range(episodes):
      writer.add(smooth_episode(rng, length))
  return time.perf_counter() - start


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", default="", help="an existing dataset (default: write one)")
  parser.add_argument("--episodes", type=int, default=40)
  parser.add_argument("--episode_length", type=int, default=501)
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
    seconds = write_dataset(root, args.episodes, args.episode_length)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    print(f"wrote {args.episodes} x {args.episode_length} steps in {seconds:.1f} s "
          f"({args.episodes * args.episode_length / seconds:.0f} steps/s), "
          f"{size / 2**20:.0f} MiB on disk", flush=True)
  try:
    dataset = dataset_reader.open_dataset(root, embedding=next(iter(
        dataset_reader.open_dataset(root).embedding_sets), None))
    print(f"dataset: {dataset.num_episodes} episodes, {dataset.num_steps} steps; batch "
          f"{args.batch_size}x{args.length}; {os.cpu_count()} CPUs", flush=True)
    for workers in [int(w) for w in args.workers.split(",")]:
      for threads in [int(t) for t in args.threads.split(",")]:
        sampler = input_pipeline.SequenceSampler(dataset, args.batch_size, args.length,
                                                 seed=0, process_index=0, process_count=1)
        it = sampler.batches(0, args.batches + 1, num_threads=threads, num_workers=workers)
        next(it)  # warm-up: opens shards, starts workers
        start = time.perf_counter()
        count = sum(1 for _ in it)
        seconds = time.perf_counter() - start
        rate = count / seconds
        line = (f"threads {threads:2d} workers {workers}: {rate * args.batch_size:7.1f} "
                f"sequences/s = {rate:5.2f} batches/s ({1000 / rate:6.1f} ms/batch)")
        if args.step_seconds:
          verdict = "keeps up" if 1 / rate <= args.step_seconds else "IS THE BOTTLENECK"
          line += f"; step {args.step_seconds * 1000:.0f} ms -> pipeline {verdict}"
        print(line + f"; peak RSS {_peak_rss_mib():.0f} MiB", flush=True)
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
