r"""Behaviour-learner update throughput, compile time and peak memory on the present devices.

  python benchmarks/behavior_step.py                   # small and paper, offline and data-free
  python benchmarks/behavior_step.py --sizes=small --starts=offline --iters=2

One update = start states (`offline`: the posterior of a random uint8 dataset batch;
`data_free`: connector rollouts and warm-up imagination, no data) -> imagined rollout of the
actor in the frozen MFWM -> GenRL reward against the prompt's target latents -> lambda
returns -> actor and critic Adam steps (`genrl_jax/behavior/learner.py`). The sizes come
from `configs/<domain>.py:<size>` (`small`: world model deter/hidden 512, actor and critic
4x512; `paper`: deter/hidden 1024, actor and critic 4x1024); both use the default
`behavior.batch_size` x `behavior.batch_length` = 32 x 32 = 1024 starts and horizon 16. The
MFWM parameters are random (the update's cost does not depend on their values), as are the
prompt embedding and the offline batch. The action dimension is read from the task's
MuJoCo model file (the number of actuators; no environment is built), or `--action_dim`.

Prints a header (jax version, backend, device count, CPU count and 1-minute load average:
other processes on the CPUs slow the CPU figures down), then one line per (size, start
mode): updates/s and seconds/update (median of `--iters` timed updates, after `--warmup`
untimed ones), the compile time, the prompt-target computation time, the device's peak
memory where the backend exposes `memory_stats()` (GPU/TPU), and the process's max RSS so
far (host; on CPU this is the memory figure, cumulative over the lines printed before).

For comparison, the reference PyTorch code took 7.27 s per `small` behaviour update on the
2-core CPU machine (measured in the same hour as our 5.65 s of issue 16; 8.77 s in an
earlier run) and 25.5 s per `paper` one; about 4 s of the small one is the reference's
redundant projection in the reward (it recomputes the projections for every alignment
window), which this implementation computes once per time step.

The process restarts itself under tcmalloc when it is installed
(`genrl_jax/host_allocator.py`); `GENRL_JAX_MALLOC=system` measures with glibc's malloc.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genrl_jax import host_allocator  # pylint: disable=wrong-import-position

host_allocator.reexec_with_tcmalloc()  # before JAX starts (see the module)

from genrl_jax import experiment_config  # pylint: disable=wrong-import-position
from genrl_jax import mfwm as mfwm_lib  # pylint: disable=wrong-import-position
from genrl_jax import world_model as wm_lib  # pylint: disable=wrong-import-position
from genrl_jax.behavior import learner  # pylint: disable=wrong-import-position
from genrl_jax.envs import registry  # pylint: disable=wrong-import-position
from genrl_jax.train import mesh as mesh_lib  # pylint: disable=wrong-import-position
from genrl_jax.train.state import step_rng  # pylint: disable=wrong-import-position

REFERENCE_SECONDS = {"small": 7.27, "paper": 25.5}  # reference s/update, 2-core CPU
KITCHEN_ACTION_DIM = 9  # Franka kitchen: 7 arm joints + 2 gripper fingers.
ENVS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "genrl_jax", "envs")


def task_action_dim(task: str) -> int:
  """The action dimension of `task`: the actuator count of its domain's MuJoCo XML.

  Args:
    task: `domain_task`, e.g. `stickman_walk`.

  Returns:
    The number of actuators (stickman 10, walker 6, cheetah 6, quadruped 12; kitchen 9).

  Raises:
    ValueError: when the domain's model file cannot be found or has no actuators.
  """
  domain, _ = registry.split_task(task)
  if domain == "kitchen":
    return KITCHEN_ACTION_DIM
  path = os.path.join(ENVS_DIR, "assets", f"{domain}.xml")
  if not os.path.exists(path):
    from dm_control import suite  # pylint: disable=g-import-not-at-top
    path = os.path.join(os.path.dirname(suite.__file__), f"{domain}.xml")
  if not os.path.exists(path):
    raise ValueError(f"no MuJoCo model file for domain {domain!r}; pass --action_dim")
  actuator = ET.parse(path).getroot().find("actuator")
  if actuator is None or not len(actuator):
    raise ValueError(f"{path} declares no actuators; pass --action_dim")
  return len(actuator)


def make_batch(batch_size: int, length: int, action_dim: int, seed: int = 0
               ) -> dict[str, np.ndarray]:
  """A random offline batch: uint8 frames, uniform actions, `is_first` at t = 0."""
  rng = np.random.default_rng(seed)
  is_first = np.zeros((batch_size, length), bool)
  is_first[:, 0] = True
  return {
      "observation": rng.integers(0, 256, (batch_size, length, 64, 64, 3), dtype=np.uint8),
      "action": rng.uniform(-1, 1, (batch_size, length, action_dim)).astype(np.float32),
      "is_first": is_first,
  }


def memory_report() -> str:
  """Device peak bytes where exposed, and the host's max RSS (MiB)."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use")]
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
  device = f"device peak {max(peaks) / 2**20:.0f} MiB, " if peaks else ""
  return f"{device}host max RSS {rss:.0f} MiB"


def bench(size: str, start: str, args: argparse.Namespace) -> None:
  """Builds, compiles and times the behaviour update of one (size, start mode)."""
  domain, _ = registry.split_task(args.task)
  config = experiment_config.load_config(f"configs/{domain}.py:{size}")
  with config.unlocked():
    config.task = args.task
    config.compute_dtype = args.dtype
    config.behavior.start = start
    config.behavior.horizon = args.horizon
    if args.batch_size:
      config.behavior.batch_size = args.batch_size
    if args.batch_length:
      config.behavior.batch_length = args.batch_length
  b = config.behavior
  args.size_name = size
  action_dim = args.action_dim or task_action_dim(args.task)
  mesh = mesh_lib.make_mesh()

  mfwm = mfwm_lib.make_mfwm(config, action_dim)
  mfwm_params = mfwm_lib.init_params(mfwm, jax.random.key(0))
  behavior = learner.make_behavior(config, action_dim)
  params = learner.init_params(behavior, learner.feature_dim(mfwm.world_model),
                               jax.random.key(1))
  optimizer = learner.make_optimizer(b)
  num = learner.num_starts(config)

  embedding = np.random.default_rng(2).normal(size=(config.connector.embed_dim,))
  embedding = (embedding / np.linalg.norm(embedding)).astype(np.float32)
  t0 = time.perf_counter()
  target = learner.prompt_target(mfwm, mfwm_params, jnp.asarray(embedding), num,
                                 b.horizon + 1, jax.random.key(3), b.reward)
  jax.block_until_ready(target)
  target_s = time.perf_counter() - t0
  state = learner.create_state(behavior, optimizer, params, target)

  step = learner.jit_behavior_step(mesh, state, mfwm=mfwm, behavior=behavior,
                                   optimizer=optimizer, config=config)
  # The step donates its state: place a copy so `state` stays valid for the layout.
  state = jax.device_put(jax.tree.map(jnp.copy, state), learner.state_shardings(state, mesh))
  mfwm_params = mesh_lib.replicate(mfwm_params, mesh)
  if start == "offline":
    batch = mesh_lib.shard_batch(make_batch(b.batch_size, b.batch_length, action_dim), mesh)
  else:
    batch = {}

  t0 = time.perf_counter()
  compiled = step.lower(state, batch, step_rng(0, 0), mfwm_params).compile()
  compile_s = time.perf_counter() - t0
  for i in range(args.warmup):
    state, metrics = compiled(state, batch, step_rng(0, i), mfwm_params)
    jax.block_until_ready(metrics)
  times = []
  for i in range(args.warmup, args.warmup + args.iters):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, step_rng(0, i), mfwm_params)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  finite = all(bool(np.all(np.isfinite(np.asarray(v)))) for v in metrics.values())
  ref = REFERENCE_SECONDS.get(size)
  ref_text = (f"; reference {ref:.2f} s/update -> speed-up x{ref / median:.2f}"
              if ref else "")
  dtype = jnp.dtype(wm_lib.compute_dtype(config.compute_dtype)).name
  print(f"{size:5s} {start:9s} starts {b.batch_size}x{b.batch_length} horizon {b.horizon} "
        f"A={action_dim} {jax.device_count()}x{jax.devices()[0].device_kind} {dtype}: "
        f"{1 / median:.3f} updates/s ({median:.3f} s/update, median of {args.iters}; all "
        f"{', '.join(f'{t:.2f}' for t in times)}), compile {compile_s:.1f} s, target "
        f"{target_s:.1f} s, {memory_report()}, metrics "
        f"{'finite' if finite else 'NON-FINITE'}{ref_text}", flush=True)
  if start == "data_free" and args.updates_per_call > 1:
    bench_many(config, mesh, state, mfwm, behavior, optimizer, mfwm_params, args)


def bench_many(config, mesh, state, mfwm, behavior, optimizer, mfwm_params, args) -> None:
  """Data-free updates, `--updates_per_call` of them per call (`jit_behavior_steps`)."""
  k = args.updates_per_call
  steps = learner.jit_behavior_steps(mesh, state, k, mfwm=mfwm, behavior=behavior,
                                     optimizer=optimizer, config=config)
  base_key = jax.random.key(0)
  t0 = time.perf_counter()
  compiled = steps.lower(state, base_key, mfwm_params).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = compiled(state, base_key, mfwm_params)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.iters):
    t0 = time.perf_counter()
    state, metrics = compiled(state, base_key, mfwm_params)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  per_update = statistics.median(times) / k
  ref = REFERENCE_SECONDS.get(args.size_name)
  ref_text = (f"; reference {ref:.2f} s/update -> speed-up x{ref / per_update:.2f}"
              if ref else "")
  print(f"{args.size_name:5s} data_free {k} updates per call: {1 / per_update:.3f} updates/s "
        f"({per_update:.3f} s/update, median of {args.iters} calls), compile {compile_s:.1f} "
        f"s, {memory_report()}{ref_text}", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("--sizes", default="small,paper", help="config variants, e.g. small,paper")
  parser.add_argument("--starts", default="offline,data_free", help="offline,data_free")
  parser.add_argument("--iters", type=int, default=3, help="timed updates")
  parser.add_argument("--warmup", type=int, default=1, help="untimed updates before timing")
  parser.add_argument("--dtype", default="auto", help="compute dtype: auto|float32|bfloat16")
  parser.add_argument("--task", default="stickman_walk", help="domain_task; picks the config")
  parser.add_argument("--action_dim", type=int, default=0,
                      help="0: the task's actuator count")
  parser.add_argument("--horizon", type=int, default=16, help="imagination horizon")
  parser.add_argument("--batch_size", type=int, default=0,
                      help="behavior.batch_size; 0: the config's (32)")
  parser.add_argument("--batch_length", type=int, default=0,
                      help="behavior.batch_length; 0: the config's (32)")
  parser.add_argument("--updates_per_call", type=int, default=10,
                      help="data-free: also time this many updates per call (1: skip)")
  args = parser.parse_args()
  if args.iters < 1 or args.warmup < 0:
    parser.error("--iters must be >= 1 and --warmup >= 0")
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} devices, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
  for size in args.sizes.split(","):
    for start in args.starts.split(","):
      bench(size.strip(), start.strip(), args)


if __name__ == "__main__":
  main()
