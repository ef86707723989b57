"""Throughput of genrl_jax.envs: seconds per agent step and per rendered frame,
with the default (reference) look and with fast_render.

    MUJOCO_GL=egl python benchmarks/env_throughput.py --tasks walker_walk stickman_walk
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import genrl_jax.envs  # noqa: F401  (selects MUJOCO_GL first)
from genrl_jax.envs import make_env


def measure(task: str, fast_render: bool, steps: int, size: int) -> dict:
  env = make_env(task, seed=0, fast_render=fast_render, size=size)
  rng = np.random.default_rng(0)
  actions = rng.uniform(-1, 1, (steps, env.action_dim)).astype(np.float32)
  env.reset()
  env.render()  # the first render creates the GL context; not timed
  # Medians of per-call times: robust to other processes sharing the CPU.
  step_times, render_times = [], []
  for i in range(steps):
    start = time.perf_counter()
    last = env.step(actions[i])["is_last"]
    step_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    env.render()
    render_times.append(time.perf_counter() - start)
    if last:
      env.reset()
  env.close()
  step_s, render_s = float(np.median(step_times)), float(np.median(render_times))
  return {
      "task": task,
      "fast_render": fast_render,
      "size": size,
      "steps": steps,
      "agent_step_ms": 1e3 * step_s,
      "render_ms": 1e3 * render_s,
      "physics_ms": 1e3 * max(step_s - render_s, 0.0)
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--tasks", nargs="+", default=["walker_walk", "stickman_walk"])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--json", help="also write the results to this file")
  args = parser.parse_args()
  rows = []
  print(f"{'task':22s} {'render':8s} {'agent step ms':>14s} {'render ms':>10s} "
        f"{'physics ms':>11s}")
  for task in args.tasks:
    for fast in (False, True):
      r = measure(task, fast, args.steps, args.size)
      rows.append(r)
      print(
          f"{task:22s} {'fast' if fast else 'default':8s} {r['agent_step_ms']:14.2f} "
          f"{r['render_ms']:10.2f} {r['physics_ms']:11.2f}",
          flush=True)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
