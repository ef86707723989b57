r"""World-model and MFWM update throughput, compile time and peak memory on the present devices.

  python benchmarks/world_model_step.py                 # small and paper, WM and MFWM
  python benchmarks/world_model_step.py --sizes=small --models=mfwm --iters=5

Sizes (issue 2): `small` = batch 16x32, deter/hidden 512, CNN multiplier 32, MLP 4x512;
`paper` = batch 48x48, deter/hidden 1024, CNN multiplier 48, MLP 4x1024. The batch is
random uint8 frames and random unit embeddings (the step's cost does not depend on the
values). `wm` times the world-model update alone, `mfwm` the world model + connector +
aligner update. Prints one line per (size, model) with the reference's time and the
ratio. The reference PyTorch code, float32 on this 2-core CPU machine, took 1.83 s per
`small` MFWM update (measured in the same hour as our 4.40 s of issue 16) and 17.6 s per
`paper` one; its connector + aligner part is 0.23 s (small) and 1.6 s (paper), so its world
model alone takes the difference.

The process restarts itself under tcmalloc when it is installed
(`genrl_jax/host_allocator.py`); `GENRL_JAX_MALLOC=system` measures with glibc's malloc.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genrl_jax import host_allocator  # pylint: disable=wrong-import-position

host_allocator.reexec_with_tcmalloc()  # before JAX starts (see the module)

from genrl_jax import experiment_config  # pylint: disable=wrong-import-position
from genrl_jax import mfwm as mfwm_lib  # pylint: disable=wrong-import-position
from genrl_jax.train import mesh as mesh_lib  # pylint: disable=wrong-import-position
from genrl_jax.train.state import step_rng  # pylint: disable=wrong-import-position

REFERENCE_SECONDS = {"small": (1.83, 0.23), "paper": (17.6, 1.6)}  # (MFWM, connector+aligner)
ACTION_DIM = 6


def make_batch(batch_size, length, embed_dim=None, seed=0):
  rng = np.random.default_rng(seed)
  is_first = np.zeros((batch_size, length), bool)
  is_first[:, 0] = True
  batch = {
      "observation": rng.integers(0, 256, (batch_size, length, 64, 64, 3), dtype=np.uint8),
      "action": rng.uniform(-1, 1, (batch_size, length, ACTION_DIM)).astype(np.float32),
      "reward": rng.normal(size=(batch_size, length)).astype(np.float32),
      "is_first": is_first,
  }
  if embed_dim:
    embed = rng.normal(size=(batch_size, length, embed_dim))
    batch["vlm_embedding"] = (embed / np.linalg.norm(embed, axis=-1, keepdims=True)).astype(
        np.float32)
  return batch


def peak_memory_mb():
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use")]
  if peaks:
    return f"device peak {max(peaks) / 2**20:.0f} MiB"
  return f"host peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def allocator():
  return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "system malloc"


def bench(size, model, iters, dtype, conv_impl):
  config = experiment_config.load_config(f"configs/walker.py:{size}")
  with config.unlocked():
    config.compute_dtype = dtype
    config.world_model.conv_impl = conv_impl
  mesh = mesh_lib.make_mesh()
  with_connector = model == "mfwm"
  _, state, step_fn = mfwm_lib.build(config, ACTION_DIM, mesh, with_connector)
  embed_dim = config.connector.embed_dim if with_connector else None
  batch = mesh_lib.shard_batch(make_batch(config.batch_size, config.batch_length, embed_dim),
                               mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch, step_rng(0, 0)).compile()
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(iters + 1):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, step_rng(0, i))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  median = statistics.median(times[1:])  # the first call also transfers and warms caches
  ref_text = ""
  if size in REFERENCE_SECONDS:
    ref_total, ref_connector = REFERENCE_SECONDS[size]
    ref = ref_total if with_connector else ref_total - ref_connector
    ref_text = f"; reference {ref:.2f} s/update -> speed-up x{ref / median:.2f}"
  print(f"{size:5s} {model:4s} batch {config.batch_size}x{config.batch_length} "
        f"{jax.device_count()}x{jax.devices()[0].device_kind} {config.compute_dtype} "
        f"conv_impl={conv_impl}, {allocator()}: "
        f"{1 / median:.3f} updates/s ({median:.3f} s/update, median of {iters}), "
        f"compile {compile_s:.1f} s, {peak_memory_mb()}{ref_text}", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="small,paper")
  parser.add_argument("--models", default="wm,mfwm", help="wm: world model; mfwm: + connector")
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--dtype", default="auto", help="compute dtype: auto|float32|bfloat16")
  parser.add_argument("--conv_impl", default="auto", help="auto|native|im2col|taps|stride1")
  args = parser.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} devices")
  for size in args.sizes.split(","):
    for model in args.models.split(","):
      bench(size, model, args.iters, args.dtype, args.conv_impl)


if __name__ == "__main__":
  main()
