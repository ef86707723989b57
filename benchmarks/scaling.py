r"""Weak scaling of the MFWM update over devices: updates/s on 1, 2, 4, 8 devices.

  python benchmarks/scaling.py --size=paper --devices=1,2,4,8          # accelerators
  python benchmarks/scaling.py --size=tiny --cpu_devices=8 --iters=3   # simulated CPUs
  python launch/local.py --num_processes=2 --devices_per_process=2 \
      --script=benchmarks/scaling.py -- --size=tiny --iters=3          # 2 processes

Weak scaling: every device gets `--per_device_batch` sequences of the config's length
(default: the config's batch over 8 devices, so that 8 devices train on the config's
batch), so the global batch grows with the devices and ideal scaling keeps updates/s
constant (`efficiency` = updates/s on n devices / on the fewest). Each device count gets
its own mesh over the first n devices and its own compiled step; the batch is random
frames and unit embeddings (the cost does not depend on the values). `--model=wm` times
the world model alone, `mfwm` (default) with the connector and aligner. In a
multi-process job (the flags of `launch/local.py`) the mesh spans all devices of all
processes and only process 0 prints. Simulated CPU devices share the machine's cores, so
on CPU the figures show the cost of splitting a batch, not a speed-up.
"""

import argparse
import os
import statistics
import sys
import time


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", default="small", choices=("tiny", "small", "paper"))
  p.add_argument("--model", default="mfwm", choices=("wm", "mfwm"))
  p.add_argument("--devices", default="1,2,4,8", help="device counts (those available)")
  p.add_argument("--per_device_batch", type=int, default=0,
                 help="sequences per device (0: the config's batch / 8, at least 1)")
  p.add_argument("--iters", type=int, default=5, help="timed updates per device count")
  p.add_argument("--dtype", default="auto", help="compute dtype: auto|float32|bfloat16")
  p.add_argument("--cpu_devices", type=int, default=0,
                 help="simulate this many CPU devices (sets XLA_FLAGS before JAX starts)")
  p.add_argument("--coordinator_address")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  return p.parse_args()


def main():
  args = _parse()
  if args.cpu_devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={args.cpu_devices}").strip()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from genrl_jax.train import distributed  # pylint: disable=g-import-not-at-top
  job = distributed.resolve_job("auto", args.coordinator_address, args.num_processes,
                                args.process_id)
  if job is not None:
    distributed.initialize(job)
  distributed.run_or_exit(lambda: _bench(args))


def _bench(args):
  import jax  # pylint: disable=g-import-not-at-top
  import world_model_step  # pylint: disable=g-import-not-at-top (benchmarks/ is on sys.path)
  from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top
  from genrl_jax import mfwm as mfwm_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.train.state import step_rng  # pylint: disable=g-import-not-at-top

  show = jax.process_index() == 0
  config = experiment_config.load_config(f"configs/walker.py:{args.size}")
  with config.unlocked():
    config.compute_dtype = args.dtype
  per_device = args.per_device_batch or max(1, config.batch_size // 8)
  counts = [int(n) for n in args.devices.split(",")]
  if jax.process_count() > 1:
    counts = [jax.device_count()]  # a mesh must span every process
  counts = [n for n in counts if n <= jax.device_count()]
  if show:
    print(f"jax {jax.__version__}, {jax.process_count()} process(es), {jax.device_count()} x "
          f"{jax.devices()[0].device_kind} ({jax.default_backend()}); walker:{args.size} "
          f"{args.model}, {per_device} x {config.batch_length} sequences per device, "
          f"{config.compute_dtype}", flush=True)
    print("| devices | global batch | compile s | s/update | updates/s | samples/s | "
          "efficiency |\n|---|---|---|---|---|---|---|", flush=True)
  first = None
  for n in counts:
    mesh = mesh_lib.make_mesh(jax.devices()[:n])
    with_connector = args.model == "mfwm"
    _, state, step_fn = mfwm_lib.build(config, world_model_step.ACTION_DIM, mesh,
                                            with_connector)
    global_batch = per_device * n
    local = world_model_step.make_batch(global_batch // jax.process_count(),
                                        config.batch_length,
                                        config.connector.embed_dim if with_connector else None,
                                        seed=jax.process_index())
    batch = mesh_lib.shard_batch(local, mesh)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch, step_rng(0, 0)).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(args.iters + 1):  # the first also transfers and warms caches
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch, step_rng(0, i))
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t0)
    seconds = statistics.median(times[1:])
    first = first or 1 / seconds
    samples = global_batch * config.batch_length / seconds
    if show:
      print(f"| {n} | {global_batch} x {config.batch_length} | {compile_s:.1f} | "
            f"{seconds:.3f} | {1 / seconds:.3f} | {samples:.0f} | {(1 / seconds) / first:.2f} |",
            flush=True)


if __name__ == "__main__":
  main()
