r"""The longer CPU run of the whole method, with its normalised scores (not a test).

  python experiments/cpu_pipeline.py --domain=stickman --workdir=workdirs/cpu_stickman

Runs `experiments/main.py --config=configs/<domain>.py:cpu` (tiny model sizes; 10 random
episodes per task; 2000 MFWM and 1000 behaviour updates per task; 10 evaluation episodes;
the locally built random-weight CLIP, so each task is prompted with the clip of its own
episodes that has the highest task reward), times each stage, and prints the results
table: mean return and normalised score ((return - random) / (expert - random) with the
paper's bounds) per task, next to the reward of the prompt clip. Extra arguments are
passed to main.py (e.g. `--config.mfwm.num_steps=500`). Like main.py it resumes: a second
call with the same workdir skips what is done.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
STAGES = ("data", "mfwm", "behavior", "eval")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--domain", default="stickman",
                      choices=("walker", "cheetah", "quadruped", "stickman", "kitchen"))
  parser.add_argument("--workdir", default=None, help="default: workdirs/cpu_<domain>")
  parser.add_argument("--variant", default="cpu", help="config variant (default: cpu)")
  args, extra = parser.parse_known_args()
  workdir = args.workdir or os.path.join("workdirs", f"cpu_{args.domain}")
  config = f"--config=configs/{args.domain}.py:{args.variant}"
  seconds = {}
  for stage in STAGES:
    start = time.perf_counter()
    command = [sys.executable, os.path.join(ROOT, "experiments", "main.py"), config,
               f"--workdir={workdir}", f"--mode={stage}", *extra]
    print(f"== {stage}: {' '.join(command[1:])}", flush=True)
    code = subprocess.call(command)
    seconds[stage] = time.perf_counter() - start
    if code:
      sys.exit(f"stage {stage} failed (exit code {code}); rerun this command to resume")

  from genrl_jax.report import results  # pylint: disable=g-import-not-at-top
  rows = results.read_results(workdir)
  print(f"\nworkdir {workdir}; stage wall-clock: " +
        ", ".join(f"{s} {seconds[s] / 60:.1f} min" for s in STAGES))
  print(f"{'task':<22} {'prompt kind':<22} {'clip reward':>11} {'return':>15} "
        f"{'normalised':>10}  vlm")
  for row in rows:
    clip = os.path.join(workdir, "prompts", f"{row['task']}.json")
    clip_reward = ""
    if os.path.exists(clip):
      with open(clip) as f:
        clip_reward = f"{json.load(f)['reward_sum']:.2f}"
    score = row.get("normalized_score")
    print(f"{row['task']:<22} {row.get('prompt_kind', ''):<22} {clip_reward:>11} "
          f"{row['mean_return']:>8.1f} +-{row['std_return']:>5.1f} "
          f"{'' if score is None else f'{score:.3f}':>10}  {row.get('vlm', '')}")
  print(f"(full table: {os.path.join(workdir, 'results.md')})")


if __name__ == "__main__":
  main()
