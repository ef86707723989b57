r"""The CPU budget of the whole method over several domains, with its learning report.

  python experiments/cpu_pipeline.py --domains=stickman,walker --workdir=workdirs/cpu

For each domain, runs `experiments/main.py --config=configs/<domain>.py:cpu` in
`<workdir>/<domain>` stage by stage, times the stages, then prints one table over all
domains: per task the behaviour's return next to the random policy's (same run), whether it
beats it by 2 std, the normalised score, the prompt target's and the open-loop error next to
the mean frame's, and the imagination gap (`behavior/latent_gap.py`). After the offline
behaviours it learns each task again from data-free starts (`<task>_data_free`; skip with
`--no_data_free`). Extra arguments go to every main.py call. It resumes like main.py.
About half an hour per domain on 2 CPU cores; figures in `docs/experiment_log.md`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
STAGES = ("data", "mfwm", "behavior", "eval")
DOMAINS = ("walker", "cheetah", "quadruped", "stickman", "kitchen")


def _main_py(domain: str, workdir: str, variant: str, stage: str, args: list[str]) -> None:
  command = [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
             f"--config=configs/{domain}.py:{variant}", f"--workdir={workdir}",
             f"--mode={stage}", *args]
  print(f"== {domain} {stage}: {' '.join(command[1:])}", flush=True)
  code = subprocess.call(command)
  if code:
    sys.exit(f"{domain}: stage {stage} failed (exit code {code}); rerun this command to "
             "resume")


def run_domain(domain: str, workdir: str, variant: str, extra: list[str],
               data_free: bool) -> dict[str, float]:
  """Runs the stages of one domain (offline behaviour starts), then with `data_free` a
  second behaviour per task from data-free starts (named `<task>_data_free`, in the same
  MFWM); returns the wall-clock seconds of each stage."""
  seconds = {}
  for stage in STAGES:
    start = time.perf_counter()
    _main_py(domain, workdir, variant, stage, extra)
    seconds[stage] = time.perf_counter() - start
  if data_free:
    from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    for task in experiment_config.load_config(f"configs/{domain}.py:{variant}").tasks:
      args = [f"--config.task={task}", "--config.tasks=()",
              f"--config.behavior.name={task}_data_free", "--config.behavior.start=data_free"]
      for stage in ("behavior", "eval"):
        _main_py(domain, workdir, variant, stage, args + extra)
    seconds["data-free"] = time.perf_counter() - start
  return seconds


def _number(value, digits: int = 1) -> str:
  return "" if value is None else f"{value:.{digits}f}"


def report_table(rows: list[dict]) -> str:
  """The learning report of results rows (`report.results.read_results`) as text."""
  from genrl_jax.stages import evaluation as eval_stage  # pylint: disable=g-import-not-at-top
  # The imagination gap's realized, replayed and imagined rewards and the random episodes'.
  latent = eval_stage.LATENT_METRICS[:4]
  header = (f"{'behaviour':<30} {'start':<9} {'return':>15} {'random policy':>15} {'beats':>5} {'norm.':>6} "
            f"{'prompt/mean-frame MSE':>22} {'open-loop/mean-frame MSE':>25} "
            f"{'latent reward real/replay/imag/random':>38}")
  lines = [header, "-" * len(header)]
  for r in rows:
    pair = lambda a, b: (f"{_number(r.get(a), 4)} / {_number(r.get(b), 4)}"
                         if r.get(a) is not None else "-")
    lines.append(
        f"{r.get('behavior') or r['task']:<30} {r.get('start', ''):<9} {r['mean_return']:>8.1f} +-{r['std_return']:>5.1f} "
        f"{_number(r.get('random_mean_return')):>8} +-{_number(r.get('random_std_return')):>5} "
        f"{'yes' if r.get('beats_random') else 'no':>5} "
        f"{_number(r.get('normalized_score'), 3):>6} "
        f"{pair('prompt_target_mse', 'prompt_mean_frame_mse'):>22} "
        f"{pair('open_loop_mse', 'open_loop_mean_frame_mse'):>25} "
        f"{'/'.join(_number(r.get(k), 2) or '-' for k in latent):>38}")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--domains", default="stickman",
                      help=f"comma-separated, of {', '.join(DOMAINS)} (default: stickman)")
  parser.add_argument("--workdir", default=os.path.join("workdirs", "cpu"),
                      help="each domain runs in <workdir>/<domain> (default: workdirs/cpu)")
  parser.add_argument("--variant", default="cpu", help="config variant (default: cpu)")
  parser.add_argument("--no_data_free", dest="data_free", action="store_false",
                      help="skip the data-free behaviours")
  args, extra = parser.parse_known_args()
  domains = [d.strip() for d in args.domains.split(",") if d.strip()]
  unknown = [d for d in domains if d not in DOMAINS]
  if unknown or not domains:
    sys.exit(f"--domains={args.domains!r}: expected a comma-separated list of {DOMAINS}")
  from genrl_jax.report import results  # pylint: disable=g-import-not-at-top
  rows, timing = [], []
  for domain in domains:
    workdir = os.path.join(args.workdir, domain)
    seconds = run_domain(domain, workdir, args.variant, extra, args.data_free)
    timing.append(f"{domain}: " + ", ".join(f"{s} {t / 60:.1f}" for s, t in seconds.items()) +
                  f" (total {sum(seconds.values()) / 60:.1f} min)")
    rows += results.read_results(workdir)
  print("\nstage wall-clock (min): " + "; ".join(timing))
  print(report_table(rows))
  beats = [r for r in rows if r.get("beats_random")]
  print(f"{len(beats)} of {len(rows)} behaviours beat the random policy by 2 std "
        f"({sum((r.get('normalized_score') or 0) >= 0.3 for r in beats)} of them with a "
        "normalised score >= 0.3); full tables: " +
        ", ".join(os.path.join(args.workdir, d, "results.md") for d in domains))


if __name__ == "__main__":
  main()
