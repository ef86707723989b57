"""Throughput of genrl_jax.envs with rendering, default (reference) look and fast_render.

Per task and render setting: one environment in this process, medians of per-call times
(agent step, render, physics) and its agent steps/s (one rendered frame each); then the
total agent steps/s of `ParallelEnvs` with N worker processes stepped in lockstep.

    MUJOCO_GL=egl python benchmarks/env_throughput.py --tasks walker_walk stickman_walk \
        --num_envs 1,2,4 --kitchen

Kitchen's default render costs ~0.5 s per frame; it is measured only with
--kitchen_default_render.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import genrl_jax.envs  # noqa: F401  (selects MUJOCO_GL first)
from genrl_jax.envs import make_env
from genrl_jax.envs.vector import ParallelEnvs

DEFAULT_TASKS = ["walker_walk", "cheetah_run", "quadruped_run", "stickman_walk"]
KITCHEN_TASK = "kitchen_microwave"


def measure(task: str, fast_render: bool, steps: int, size: int) -> dict:
  """One in-process env: per-call medians and the wall-clock agent steps/s."""
  env = make_env(task, seed=0, fast_render=fast_render, size=size)
  rng = np.random.default_rng(0)
  actions = rng.uniform(-1, 1, (steps, env.action_dim)).astype(np.float32)
  env.reset()
  env.render()  # the first render creates the GL context; not timed
  # Medians of per-call times: robust to other processes sharing the CPU.
  step_times, render_times = [], []
  wall = time.perf_counter()
  for i in range(steps):
    start = time.perf_counter()
    last = env.step(actions[i])["is_last"]
    step_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    env.render()
    render_times.append(time.perf_counter() - start)
    if last:
      env.reset()
  # The extra render per step is not part of an agent step: left out of the rate.
  wall = time.perf_counter() - wall - sum(render_times)
  env.close()
  step_s, render_s = float(np.median(step_times)), float(np.median(render_times))
  return {
      "task": task,
      "fast_render": fast_render,
      "size": size,
      "steps": steps,
      "agent_step_ms": 1e3 * step_s,
      "render_ms": 1e3 * render_s,
      "physics_ms": 1e3 * max(step_s - render_s, 0.0),
      "steps_per_s": steps / wall,
  }


def measure_parallel(task: str, fast_render: bool, steps: int, size: int, num_envs: int) -> dict:
  """`num_envs` worker processes stepped together `steps` times: agent steps/s in total."""
  with ParallelEnvs(task, num_envs, seed=0, fast_render=fast_render, size=size) as envs:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, num_envs, envs.action_dim)).astype(np.float32)
    envs.reset()
    envs.step(actions[0])  # every worker has rendered once (GL set up); not timed
    start = time.perf_counter()
    for i in range(steps):
      if envs.step(actions[i])["is_last"].any():
        envs.reset()  # DMC episodes all end together; kitchen's too (no eval mode)
    wall = time.perf_counter() - start
  return {
      "task": task,
      "fast_render": fast_render,
      "size": size,
      "steps": steps,
      "num_envs": num_envs,
      "steps_per_s": num_envs * steps / wall,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
  parser.add_argument("--kitchen", action="store_true", help=f"also {KITCHEN_TASK} (slow)")
  parser.add_argument("--kitchen_default_render", action="store_true",
                      help="also the kitchen's default render (~0.5 s per frame)")
  parser.add_argument("--renders", nargs="+", choices=("default", "fast"),
                      default=["default", "fast"])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--num_envs", default="1,2,4",
                      help="comma-separated worker counts for ParallelEnvs ('' for none)")
  parser.add_argument("--json", help="also write the results to this file")
  args = parser.parse_args()
  counts = [int(n) for n in args.num_envs.split(",") if n.strip()]
  tasks = list(args.tasks) + ([KITCHEN_TASK] if args.kitchen else [])
  configs = [(task, render == "fast") for task in tasks for render in args.renders
             if not (task.startswith("kitchen") and render == "default" and
                     not args.kitchen_default_render)]

  # One row per config; its parallel runs follow its in-process run at once, so that all
  # rates of a row share the load of a (possibly busy) machine.
  rows = []
  rates = "".join(f"{f'{n} procs':>9s}" for n in counts)
  print(f"{'':31s} {'ms per call (1 env)':^36s} {'agent steps/s':^{10 + 9 * len(counts)}s}")
  print(f"{'task':22s} {'render':8s} {'agent step':>12s} {'render':>11s} {'physics':>11s} "
        f"{'in-proc':>10s}{rates}")
  for task, fast in configs:
    r = measure(task, fast, args.steps, args.size)
    rows.append(r)
    line = (f"{task:22s} {'fast' if fast else 'default':8s} {r['agent_step_ms']:12.2f} "
            f"{r['render_ms']:11.2f} {r['physics_ms']:11.2f} {r['steps_per_s']:10.1f}")
    for n in counts:
      p = measure_parallel(task, fast, args.steps, args.size, n)
      rows.append(p)
      line += f"{p['steps_per_s']:9.1f}"
    print(line, flush=True)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
