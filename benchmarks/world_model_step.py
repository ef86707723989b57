r"""World-model and MFWM update throughput, compile time and peak memory on the present devices.

  python benchmarks/world_model_step.py                 # small and paper, WM and MFWM
  python benchmarks/world_model_step.py --sizes=small --models=mfwm --iters=5
  python benchmarks/world_model_step.py --sizes=small --models=mfwm \
      --original_dir=REF --original_python=TV/bin/python   # + the original, same run

Sizes are the config variants of `configs/walker.py` (`small`: batch 16x32, deter/hidden
512, CNN multiplier 32, MLP 4x512; `paper`: batch 48x48, deter/hidden 1024, CNN multiplier
48, MLP 4x1024; `tiny` for smoke runs). The batch is random uint8 frames `(B, T, 64, 64, 3)`
and random unit embeddings `(B, T, E)` (the step's cost does not depend on the values).
`wm` times the world-model update alone, `mfwm` the world model + connector + aligner
update, both through the jitted train step that training calls.

Prints, per (size, model): updates/s and s/update (median of `--iters` calls after the
first and `--warmup` untimed ones), the compile time (tracing + lowering + XLA compile of
the first call), the recompilations of the later calls (0: the step's shapes are
stable), the peak memory (device memory on GPU/TPU; the process's peak RSS on CPU,
cumulative over the lines printed before), the device kind, compute dtype, conv
implementation chosen and host allocator. With `--original_dir`
(`benchmarks/original_reference.py`) the original PyTorch code is timed right after each
size, in the same run, and both figures and their ratio are printed; without it no ratio
is printed. Measured figures: `docs/benchmarks.md`.

The process restarts itself under tcmalloc when it is installed
(`genrl_jax/host_allocator.py`); `GENRL_JAX_MALLOC=system` measures with glibc's malloc.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from genrl_jax import host_allocator  # pylint: disable=g-import-not-at-top
  host_allocator.reexec_with_tcmalloc()  # before JAX starts (see the module)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import bench_lib  # pylint: disable=wrong-import-position
from benchmarks import original_reference  # pylint: disable=wrong-import-position
from genrl_jax import convs  # pylint: disable=wrong-import-position
from genrl_jax import experiment_config  # pylint: disable=wrong-import-position
from genrl_jax import mfwm as mfwm_lib  # pylint: disable=wrong-import-position
from genrl_jax import world_model as wm_lib  # pylint: disable=wrong-import-position
from genrl_jax.train import mesh as mesh_lib  # pylint: disable=wrong-import-position
from genrl_jax.train.state import step_rng  # pylint: disable=wrong-import-position

ACTION_DIM = 6  # walker's, and the original benchmark's presets'


def make_batch(batch_size: int, length: int, embed_dim: int | None = None, seed: int = 0
               ) -> dict[str, np.ndarray]:
  """A random MFWM batch: `observation (B, T, 64, 64, 3)` uint8, `action (B, T, 6)`,
  `reward (B, T)`, `is_first (B, T)` (true at t = 0) and, with `embed_dim`, unit
  `vlm_embedding (B, T, E)`."""
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


def bench(size: str, model: str = "mfwm", iters: int = 5, dtype: str = "auto",
          conv_impl: str = "auto", config_file: str = "configs/walker.py", warmup: int = 1
          ) -> dict[str, Any]:
  """Builds, compiles and times one (size, model) update on the present devices.

  Args:
    size: a config variant (`tiny`, `small`, `paper`).
    model: `wm` (world model alone) or `mfwm` (+ connector and aligner).
    iters: timed updates, after the first (compiling) one and `warmup` untimed ones.
    dtype: `config.compute_dtype` (`auto`, `float32`, `bfloat16`).
    conv_impl: `config.world_model.conv_impl` (`auto` resolves per backend).
    config_file: the config whose variant `size` is.
    warmup: untimed updates after the first (on CPU the second update still pays for
      memory the first one did not touch).

  Returns:
    A JSON-able dict: sizes, device, resolved dtype and conv implementation, `s_per_update`
    (median), `updates_per_s`, `times_s`, `compile_s`, `first_call_s`, `compiles_first`,
    `recompiles` (after the first call), `jit_cache_entries`, `memory`
    (`bench_lib.peak_memory`), `metrics_finite`.
  """
  if model not in ("wm", "mfwm"):
    raise ValueError(f"model={model!r}: expected wm or mfwm")
  config = experiment_config.load_config(f"{config_file}:{size}")
  with config.unlocked():
    config.compute_dtype = dtype
    config.world_model.conv_impl = conv_impl
  mesh = mesh_lib.make_mesh()
  with_connector = model == "mfwm"
  _, state, step_fn = mfwm_lib.build(config, ACTION_DIM, mesh, with_connector)
  embed_dim = config.connector.embed_dim if with_connector else None
  batch = mesh_lib.shard_batch(make_batch(config.batch_size, config.batch_length, embed_dim),
                               mesh)
  keys = [step_rng(0, i) for i in range(1 + warmup + iters)]  # outside the timed calls
  metrics = {}

  def call(state, i):
    state, m = step_fn(state, batch, keys[i])
    metrics["last"] = m
    return state

  _, timing = bench_lib.time_jitted_calls(step_fn, call, state, iters, warmup)
  finite = all(bool(np.all(np.isfinite(np.asarray(v)))) for v in metrics["last"].values())
  return {
      "size": size, "model": model, "batch": [config.batch_size, config.batch_length],
      **bench_lib.device_info(),
      "dtype": jnp.dtype(wm_lib.compute_dtype(config.compute_dtype)).name,
      "conv_impl": convs.resolve_impl(conv_impl), "conv_impl_requested": conv_impl,
      "allocator": bench_lib.allocator(),
      "s_per_update": timing.median_s, "updates_per_s": 1 / timing.median_s,
      "times_s": timing.times_s, "compile_s": timing.compile_s,
      "first_call_s": timing.first_call_s, "compiles_first": timing.compiles_first,
      "recompiles": timing.recompiles, "jit_cache_entries": timing.jit_cache_entries,
      "memory": bench_lib.peak_memory(), "metrics_finite": finite,
  }


def result_text(r: dict[str, Any]) -> str:
  """One line of `bench`'s figures."""
  return (f"{r['size']:5s} {r['model']:4s} batch {r['batch'][0]}x{r['batch'][1]} "
          f"{r['device_count']}x{r['device_kind']} {r['dtype']} conv_impl={r['conv_impl']}, "
          f"{r['allocator']}: {r['updates_per_s']:.3f} updates/s ({r['s_per_update']:.3f} "
          f"s/update, median of {len(r['times_s'])}: {bench_lib.fmt_seconds(r['times_s'])}), "
          f"compile {r['compile_s']:.1f} s, recompiles after the first call "
          f"{r['recompiles']}, {bench_lib.memory_text(r['memory'])}, metrics "
          f"{'finite' if r['metrics_finite'] else 'NON-FINITE'}")


def compare_with_original(args: argparse.Namespace, size: str,
                          ours: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Times the original's world-model phase at `size` (its update = world model +
  connector; its world model alone = that minus its connector part) and prints each of
  our `ours[model]` figures beside it."""
  result = original_reference.run(args, "wm", size)
  if "error" in result:
    print(f"original {size}: not measured: {result['error']}", flush=True)
    return result
  wm = result["wm"]
  figures = {"mfwm": wm["update_total"]["median_s"], "wm": wm["world_model_part_median_s"]}
  for model, r in ours.items():
    print(original_reference.pair_text(
        r["s_per_update"], figures[model],
        f"{size} {model} (original float32 on {result['threads']} torch threads, torch "
        f"{result['torch']})"), flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("--sizes", default="small,paper")
  parser.add_argument("--models", default="wm,mfwm", help="wm: world model; mfwm: + connector")
  parser.add_argument("--iters", type=int, default=5, help="timed updates")
  parser.add_argument("--warmup", type=int, default=1,
                      help="untimed updates after the first (compiling) one")
  parser.add_argument("--dtype", default="auto", help="compute dtype: auto|float32|bfloat16")
  parser.add_argument("--conv_impl", default="auto", help="auto|native|im2col|taps|stride1")
  parser.add_argument("--json", default="", help="also write every result to this file")
  original_reference.add_flags(parser)
  args = parser.parse_args()
  original_reference.check_flags(parser, args)
  info = bench_lib.device_info()
  print(f"jax {info['jax']}, backend {info['backend']}, {info['device_count']} devices, "
        f"{info['cpu_count']} CPUs, load average {info['load_average_1min']:.1f}", flush=True)
  results = []
  for size in args.sizes.split(","):
    ours = {}
    for model in args.models.split(","):
      r = bench(size.strip(), model.strip(), args.iters, args.dtype, args.conv_impl,
                warmup=args.warmup)
      print(result_text(r), flush=True)
      ours[r["model"]] = r
      results.append(r)
    if original_reference.enabled(args):
      original = compare_with_original(args, size.strip(), ours)
      for r in ours.values():
        r["original"] = original
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
