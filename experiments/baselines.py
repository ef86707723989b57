r"""Returns of the baseline policies on tasks, on the evaluation's environment seeds.

  python experiments/baselines.py --tasks=stickman_lying_down,walker_lying_down

Prints, per task, the random policy's return (the learning report's baseline) and the
passive policy's (all-zero actions) as mean +- std over `--episodes` episodes, next to the
bar a behaviour must clear to beat the random policy by 2 std. On tasks a body reaches by
falling, the passive policy can clear that bar while learning nothing; figures in
`docs/experiment_log.md`.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
  from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top
  from genrl_jax.envs import baseline_policies  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", required=True, help="comma-separated task names")
  parser.add_argument("--episodes", type=int, default=10)
  parser.add_argument("--seed", type=int, default=1, help="the run's config.seed")
  parser.add_argument("--time_limit", type=float, default=0.0,
                      help="seconds of simulated time per episode; 0: the task's own")
  args = parser.parse_args(argv)
  # Only the seeds and environment settings of this config are used.
  config = experiment_config.load_config("configs/walker.py:tiny")
  config.seed, config.eval.time_limit, config.eval.num_envs = args.seed, args.time_limit, 1
  rows = []
  print("| task | random policy | zero actions | random + 2 std |\n|---|---|---|---|")
  for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
    config.task = task
    row = {"task": task}
    for policy in baseline_policies.BASELINES:
      returns = baseline_policies.baseline_returns(config, policy, args.episodes, progress=False).returns
      row[f"{policy}_mean"], row[f"{policy}_std"] = float(np.mean(returns)), float(np.std(returns))
    rows.append(row)
    print(f"| {task} | {row['random_mean']:.1f} +- {row['random_std']:.1f} | "
          f"{row['zero_mean']:.1f} +- {row['zero_std']:.1f} | "
          f"{row['random_mean'] + 2 * row['random_std']:.1f} |", flush=True)
  return rows


if __name__ == "__main__":
  main()
