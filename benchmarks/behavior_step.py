r"""Behaviour-learner update throughput, compile time and peak memory on the present devices.

  python benchmarks/behavior_step.py                   # small and paper, offline and data-free
  python benchmarks/behavior_step.py --sizes=small --starts=offline --iters=2
  python benchmarks/behavior_step.py --sizes=small --starts=offline \
      --original_dir=REF --original_python=TV/bin/python --original_tools=TOOLS  # + original

One update = start states (`offline`: the posterior of a random uint8 dataset batch;
`data_free`: connector rollouts and warm-up imagination, no data) -> imagined rollout of the
actor in the frozen MFWM -> GenRL reward against the prompt's target latents -> lambda
returns -> actor and critic Adam steps (`genrl_jax/behavior/learner.py`). The sizes come
from `configs/<domain>.py:<size>` (`small`: world model deter/hidden 512, actor and critic
4x512; `paper`: deter/hidden 1024, actor and critic 4x1024; `tiny` for smoke runs); `small`
and `paper` use the default `behavior.batch_size` x `behavior.batch_length` = 32 x 32 = 1024
starts and horizon 16. The MFWM parameters are random (the update's cost does not depend
on their values), as are the prompt embedding and the offline batch. The action dimension
is read from the task's MuJoCo model file (the number of actuators; no environment is
built), or `--action_dim`; with `--original_dir` it defaults to the original benchmark's 6.

Prints a header (jax version, backend, device count, CPU count and 1-minute load average:
other processes on the CPUs slow the CPU figures down), then one line per (size, start
mode): updates/s and s/update (median of `--iters` timed updates, after `--warmup`
untimed ones), the compile time, the recompilations of the calls after the first (0: the
step's shapes are stable), the prompt-target computation time, the peak memory (device
memory on GPU/TPU; the process's peak RSS on CPU, cumulative over the lines printed
before), device kind, dtype and conv implementation. Data-free starts are also timed with
`--updates_per_call` updates per call (`behavior.updates_per_call`: one `lax.scan` on the
device). With `--original_dir` (`benchmarks/original_reference.py`) the original PyTorch
code's behaviour update (`--phase ac`, the same 32 x 32 starts and horizon) is timed right
after each size, in the same run, and printed beside our figures with the ratio; without
it no ratio is printed. The original's timing starts from posteriors it computed once
before timing; our offline update computes its posteriors in every update.

The process restarts itself under tcmalloc when it is installed
(`genrl_jax/host_allocator.py`); `GENRL_JAX_MALLOC=system` measures with glibc's malloc.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
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
from genrl_jax import experiment_config  # pylint: disable=wrong-import-position
from genrl_jax import convs  # pylint: disable=wrong-import-position
from genrl_jax import mfwm as mfwm_lib  # pylint: disable=wrong-import-position
from genrl_jax import world_model as wm_lib  # pylint: disable=wrong-import-position
from genrl_jax.behavior import learner  # pylint: disable=wrong-import-position
from genrl_jax.envs import registry  # pylint: disable=wrong-import-position
from genrl_jax.train import mesh as mesh_lib  # pylint: disable=wrong-import-position
from genrl_jax.train.state import step_rng  # pylint: disable=wrong-import-position

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
    try:
      from dm_control import suite  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(f"no MuJoCo model file for domain {domain!r} without dm_control; "
                       "pass --action_dim") from e
    path = os.path.join(os.path.dirname(suite.__file__), f"{domain}.xml")
  if not os.path.exists(path):
    raise ValueError(f"no MuJoCo model file for domain {domain!r}; pass --action_dim")
  actuator = ET.parse(path).getroot().find("actuator")
  if actuator is None or not len(actuator):
    raise ValueError(f"{path} declares no actuators; pass --action_dim")
  return len(actuator)


def make_batch(batch_size: int, length: int, action_dim: int, seed: int = 0
               ) -> dict[str, np.ndarray]:
  """A random offline batch: uint8 frames `(B, T, 64, 64, 3)`, uniform actions `(B, T, A)`,
  `is_first (B, T)` at t = 0."""
  rng = np.random.default_rng(seed)
  is_first = np.zeros((batch_size, length), bool)
  is_first[:, 0] = True
  return {
      "observation": rng.integers(0, 256, (batch_size, length, 64, 64, 3), dtype=np.uint8),
      "action": rng.uniform(-1, 1, (batch_size, length, action_dim)).astype(np.float32),
      "is_first": is_first,
  }


def _finite(metrics: dict[str, Any]) -> bool:
  return all(bool(np.all(np.isfinite(np.asarray(v)))) for v in metrics.values())


def bench(size: str, start: str = "offline", *, iters: int = 3, warmup: int = 1,
          dtype: str = "auto", task: str = "stickman_walk", action_dim: int = 0,
          horizon: int = 16, batch_size: int = 0, batch_length: int = 0,
          updates_per_call: int = 1, conv_impl: str = "auto", single_call: bool = True
          ) -> list[dict[str, Any]]:
  """Builds, compiles and times the behaviour update of one (size, start mode).

  Args:
    size: a config variant (`tiny`, `small`, `paper`) of `configs/<task's domain>.py`.
    start: `offline` or `data_free`.
    iters: timed updates (calls), after `warmup` untimed ones and the compiling one.
    warmup: untimed calls after the first.
    dtype: `config.compute_dtype`.
    task: `domain_task`: the config and (without `action_dim`) the action dimension.
    action_dim: 0: the task's actuator count.
    horizon: the imagination horizon.
    batch_size, batch_length: `behavior.batch_size/batch_length`; 0: the config's.
    updates_per_call: data-free only: > 1 also times that many updates per call
      (`learner.jit_behavior_steps`).
    conv_impl: `config.world_model.conv_impl` (offline starts encode frames).
    single_call: False (data-free starts with `updates_per_call` > 1): skip the one
      update per call timing (and its compilation).

  Returns:
    One JSON-able dict per timing (one update per call; then, for data-free starts with
    `updates_per_call` > 1, that many per call): sizes, device, dtype, conv implementation,
    `s_per_update`, `updates_per_s`, `times_s` (per call), `compile_s`, `recompiles` (after
    the first call), `memory`, `metrics_finite`, `target_s` (the prompt target).
  """
  domain, _ = registry.split_task(task)
  config = experiment_config.load_config(f"configs/{domain}.py:{size}")
  with config.unlocked():
    config.task = task
    config.compute_dtype = dtype
    config.world_model.conv_impl = conv_impl
    config.behavior.start = start
    config.behavior.horizon = horizon
    if batch_size:
      config.behavior.batch_size = batch_size
    if batch_length:
      config.behavior.batch_length = batch_length
  b = config.behavior
  action_dim = action_dim or task_action_dim(task)
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

  static = dict(mfwm=mfwm, behavior=behavior, optimizer=optimizer, config=config)
  step = learner.jit_behavior_step(mesh, state, **static)
  # The step donates its state: place a copy so `state` stays valid for the layout.
  state = jax.device_put(jax.tree.map(jnp.copy, state), learner.state_shardings(state, mesh))
  mfwm_params = mesh_lib.replicate(mfwm_params, mesh)
  if start == "offline":
    batch = mesh_lib.shard_batch(make_batch(b.batch_size, b.batch_length, action_dim), mesh)
  else:
    batch = {}
  keys = [step_rng(0, i) for i in range(1 + warmup + iters)]  # outside the timed calls
  last = {}

  def call(state, i):
    state, last["metrics"] = step(state, batch, keys[i], mfwm_params)
    return state

  many = start == "data_free" and updates_per_call > 1
  results = []
  if single_call or not many:
    state, timing = bench_lib.time_jitted_calls(step, call, state, iters, warmup)
    results.append(dict(updates_per_call=1, **_timing_dict(timing, 1),
                        memory=bench_lib.peak_memory(),
                        metrics_finite=_finite(last["metrics"])))
  if many:
    steps = learner.jit_behavior_steps(mesh, state, updates_per_call, **static)
    base_keys = [jax.random.fold_in(jax.random.key(0), i) for i in range(1 + warmup + iters)]

    def call_many(state, i):
      state, last["metrics"] = steps(state, base_keys[i], mfwm_params)
      return state

    _, timing = bench_lib.time_jitted_calls(steps, call_many, state, iters, warmup)
    results.append(dict(updates_per_call=updates_per_call,
                        **_timing_dict(timing, updates_per_call),
                        memory=bench_lib.peak_memory(),
                        metrics_finite=_finite(last["metrics"])))
  common = {
      "size": size, "start": start, "starts": [b.batch_size, b.batch_length],
      "horizon": b.horizon, "action_dim": action_dim, **bench_lib.device_info(),
      "dtype": jnp.dtype(wm_lib.compute_dtype(config.compute_dtype)).name,
      "conv_impl": convs.resolve_impl(conv_impl), "allocator": bench_lib.allocator(),
      "target_s": target_s,
  }
  return [dict(common, **r) for r in results]


def _timing_dict(timing: bench_lib.StepTiming, updates_per_call: int) -> dict[str, Any]:
  per_update = timing.median_s / updates_per_call
  return {"s_per_update": per_update, "updates_per_s": 1 / per_update,
          "times_s": timing.times_s, "compile_s": timing.compile_s,
          "first_call_s": timing.first_call_s, "compiles_first": timing.compiles_first,
          "recompiles": timing.recompiles, "jit_cache_entries": timing.jit_cache_entries}


def result_text(r: dict[str, Any]) -> str:
  """One line of one of `bench`'s results."""
  per_call = (f"{r['updates_per_call']} updates per call, " if r["updates_per_call"] > 1
              else "")
  return (f"{r['size']:5s} {r['start']:9s} starts {r['starts'][0]}x{r['starts'][1]} horizon "
          f"{r['horizon']} A={r['action_dim']} {r['device_count']}x{r['device_kind']} "
          f"{r['dtype']} conv_impl={r['conv_impl']}, {r['allocator']}: {per_call}"
          f"{r['updates_per_s']:.3f} updates/s ({r['s_per_update']:.3f} s/update; median of "
          f"{len(r['times_s'])} calls: {bench_lib.fmt_seconds(r['times_s'])} s), compile "
          f"{r['compile_s']:.1f} s, recompiles after the first call {r['recompiles']}, "
          f"target {r['target_s']:.1f} s, {bench_lib.memory_text(r['memory'])}, metrics "
          f"{'finite' if r['metrics_finite'] else 'NON-FINITE'}")


def compare_with_original(args: argparse.Namespace, size: str,
                          ours: list[dict[str, Any]]) -> dict[str, Any]:
  """Times the original's behaviour update at `size` with our starts and prints each of
  `ours` beside it."""
  b_size, b_length = ours[0]["starts"]
  result = original_reference.run(args, "ac", size,
                                  ("--ac-batch", str(b_size), "--ac-length", str(b_length)))
  if "error" in result:
    print(f"original {size}: not measured: {result['error']}", flush=True)
    return result
  original_s = result["ac"]["update_total"]["median_s"]
  for r in ours:
    label = f"{size} {r['start']}" + (f" ({r['updates_per_call']} per call)"
                                      if r["updates_per_call"] > 1 else "")
    if r["action_dim"] != original_reference.ORIGINAL_ACTION_DIM:
      label += (f" [A={r['action_dim']}, the original's "
                f"{original_reference.ORIGINAL_ACTION_DIM}]")
    print(original_reference.pair_text(
        r["s_per_update"], original_s,
        f"{label} vs original horizon {result['ac']['horizon']} (float32 on "
        f"{result['threads']} torch threads, torch {result['torch']})"), flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("--sizes", default="small,paper", help="config variants, e.g. small,paper")
  parser.add_argument("--starts", default="offline,data_free", help="offline,data_free")
  parser.add_argument("--iters", type=int, default=3, help="timed updates")
  parser.add_argument("--warmup", type=int, default=1, help="untimed updates before timing")
  parser.add_argument("--dtype", default="auto", help="compute dtype: auto|float32|bfloat16")
  parser.add_argument("--conv_impl", default="auto", help="auto|native|im2col|taps|stride1")
  parser.add_argument("--task", default="stickman_walk", help="domain_task; picks the config")
  parser.add_argument("--action_dim", type=int, default=0,
                      help="0: the task's actuator count (with --original_dir: 6)")
  parser.add_argument("--horizon", type=int, default=16, help="imagination horizon")
  parser.add_argument("--batch_size", type=int, default=0,
                      help="behavior.batch_size; 0: the config's (32)")
  parser.add_argument("--batch_length", type=int, default=0,
                      help="behavior.batch_length; 0: the config's (32)")
  parser.add_argument("--updates_per_call", type=int, default=10,
                      help="data-free: also time this many updates per call (1: skip)")
  parser.add_argument("--json", default="", help="also write every result to this file")
  original_reference.add_flags(parser)
  args = parser.parse_args()
  if args.iters < 1 or args.warmup < 0:
    parser.error("--iters must be >= 1 and --warmup >= 0")
  original_reference.check_flags(parser, args)
  action_dim = args.action_dim
  if original_reference.enabled(args) and not action_dim:
    action_dim = original_reference.ORIGINAL_ACTION_DIM  # like for like
  info = bench_lib.device_info()
  print(f"jax {info['jax']}, backend {info['backend']}, {info['device_count']} devices, "
        f"{info['cpu_count']} CPUs, load average {info['load_average_1min']:.1f}", flush=True)
  results = []
  for size in args.sizes.split(","):
    ours = []
    for start in args.starts.split(","):
      for r in bench(size.strip(), start.strip(), iters=args.iters, warmup=args.warmup,
                     dtype=args.dtype, task=args.task, action_dim=action_dim,
                     horizon=args.horizon, batch_size=args.batch_size,
                     batch_length=args.batch_length, updates_per_call=args.updates_per_call,
                     conv_impl=args.conv_impl):
        print(result_text(r), flush=True)
        ours.append(r)
    if original_reference.enabled(args):
      original = compare_with_original(args, size.strip(), ours)
      for r in ours:
        r["original"] = original
    results += ours
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
