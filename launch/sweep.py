r"""Behaviour sweeps: many (task, seed) jobs learned in one pre-trained MFWM, and their table.

  python launch/sweep.py --workdir=workdirs/walker --config=configs/walker.py:tiny \
      --tasks=walker_walk,walker_run --seeds=0,1,2 --parallel=2 [--gpus=0,1] \
      [--modes=behavior,eval] [--name=NAME] [-- more experiments/main.py flags]

The workdir must hold a trained MFWM (`experiments/main.py --mode=mfwm` with the same
config). Each job runs `experiments/main.py --mode=<mode>` for each of `--modes` in turn,
with `--config.task=<task> --config.tasks=() --config.behavior.name=<task>_s<seed>
--config.behavior.seed=<seed>` and the flags after `--`, so its behaviour is checkpointed
in `<workdir>/behavior/<task>_s<seed>/` (jobs never share a directory; resumed when run
again). `--parallel=N` jobs run at once; with `--gpus=0,1,...` job slot `s` sees GPU
`gpus[s % len(gpus)]` (`CUDA_VISIBLE_DEVICES`).

Writes `<workdir>/sweeps/<name>/` (name: `--name`, default the start time):
  logs/<job>.log   each job's output
  results.md       one row per job, then mean and std over seeds per task
  results.csv      the rows
A row comes from the job's `eval.json` when it evaluates the latest behaviour checkpoint
(`--modes=behavior,eval`), else from the last logged behaviour metrics. Exits 1 when a job
failed (its row says why), else 0.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import queue
import signal
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from genrl_jax import files  # pylint: disable=wrong-import-position
from genrl_jax.report import results as results_lib  # pylint: disable=wrong-import-position
from genrl_jax.report.metrics import read_metrics  # pylint: disable=wrong-import-position
from genrl_jax.train import checkpoints  # pylint: disable=wrong-import-position

MODES = ("behavior", "eval")
COLUMNS = ("task", "seed", "behavior", "status", "source", "step", "mean_return",
           "std_return", "normalized_score", "episodes", "imag_reward_mean", "seconds")


def job_name(task: str, seed: int) -> str:
  return f"{task}_s{seed}"


def job_flags(task: str, seed: int) -> list[str]:
  """The main.py flags that make a job learn `task` with `seed` under its own name."""
  return [f"--config.task={task}", "--config.tasks=()",
          f"--config.behavior.name={job_name(task, seed)}", f"--config.behavior.seed={seed}"]


def job_result(workdir: str, task: str, seed: int) -> dict[str, Any]:
  """The results of one job read from the workdir: its `eval.json` when that evaluated the
  latest behaviour checkpoint, else its last logged behaviour metrics."""
  name = job_name(task, seed)
  row: dict[str, Any] = {"task": task, "seed": seed, "behavior": name}
  directory = os.path.join(workdir, "behavior", name)
  latest = checkpoints.latest_step(directory)
  logged = read_metrics(workdir, f"behavior_{name}")
  if logged:
    row.update(step=int(logged[-1]["step"]),
               imag_reward_mean=logged[-1].get("imag_reward_mean"), source="train")
  eval_path = os.path.join(directory, "eval.json")
  if os.path.exists(eval_path):
    with open(eval_path) as f:
      evaluated = json.load(f)
    if latest is not None and evaluated.get("checkpoint_step") == latest:
      row.update({k: evaluated.get(k) for k in ("mean_return", "std_return",
                                                 "normalized_score", "episodes")},
                 step=latest, source="eval")
  return row


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _mean_std(values: list[float]) -> str:
  if not values:
    return ""
  mean = sum(values) / len(values)
  std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
  return f"{mean:.4g} ± {std:.3g} (n={len(values)})"


def results_markdown(rows: list[dict[str, Any]], title: str) -> str:
  """The per-job table, then per task the mean ± std over seeds of the finished jobs."""
  lines = [f"# {title}", "", results_lib.markdown_table(rows, COLUMNS, cell=_cell).rstrip("\n")]
  summary = ("mean_return", "normalized_score", "imag_reward_mean")
  lines += ["", "Per task, over seeds (mean ± std):", "",
            "| task | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
  for task in dict.fromkeys(r["task"] for r in rows):
    done = [r for r in rows if r["task"] == task and r.get("status") == "ok"]
    cells = [_mean_std([float(r[k]) for r in done if r.get(k) is not None]) for k in summary]
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def results_csv(rows: list[dict[str, Any]]) -> str:
  return results_lib.csv_table(rows, COLUMNS)


def _last_line(path: str) -> str:
  with open(path, errors="replace") as f:
    lines = [line.strip() for line in f if line.strip()]
  return lines[-1][-300:] if lines else ""


def run_job(task: str, seed: int, args: argparse.Namespace, extra: list[str], log_dir: str,
            slots: queue.Queue) -> dict[str, Any]:
  """Runs one job's modes in turn on a free slot; returns its row."""
  slot = slots.get()
  name = job_name(task, seed)
  log_path = os.path.join(log_dir, f"{name}.log")
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if args.gpus:
    env["CUDA_VISIBLE_DEVICES"] = args.gpus[slot % len(args.gpus)]
  start, status = time.monotonic(), "ok"
  try:
    for mode in args.modes:
      cmd = [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
             f"--config={args.config}", f"--workdir={args.workdir}", f"--mode={mode}",
             *job_flags(task, seed), *extra]
      print(f"sweep: {name}: {mode} (slot {slot}"
            f"{', GPU ' + env['CUDA_VISIBLE_DEVICES'] if args.gpus else ''})", flush=True)
      with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
          code = proc.wait(timeout=args.job_timeout or None)
        except subprocess.TimeoutExpired:
          # SIGKILL: JAX handles SIGTERM itself and would keep running.
          os.killpg(proc.pid, signal.SIGKILL)
          proc.wait()
          code = f"timeout after {args.job_timeout:.0f} s"
      if code != 0:
        status = f"failed in {mode} ({code}): {_last_line(log_path)}"
        break
  finally:
    slots.put(slot)
  row = job_result(args.workdir, task, seed)
  row.update(status=status, seconds=round(time.monotonic() - start, 1))
  print(f"sweep: {name}: {status} after {row['seconds']:.0f} s", flush=True)
  return row


def _csv_list(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      usage="%(prog)s --workdir=W --config=C --tasks=T1,T2 --seeds=0,1 [options] "
            "[-- main.py flags]")
  parser.add_argument("--workdir", required=True, help="workdir holding the trained MFWM")
  parser.add_argument("--config", required=True, help="the MFWM's config, e.g. "
                      "configs/walker.py:tiny")
  parser.add_argument("--tasks", required=True, type=_csv_list)
  parser.add_argument("--seeds", default="0", type=lambda s: [int(x) for x in _csv_list(s)])
  parser.add_argument("--modes", default="behavior", type=_csv_list,
                      help="stages each job runs in turn: behavior (default), eval")
  parser.add_argument("--parallel", type=int, default=1, help="jobs at once")
  parser.add_argument("--gpus", default="", type=_csv_list,
                      help="GPU ids given to the job slots round-robin")
  parser.add_argument("--name", default="", help="sweep name (default: the start time)")
  parser.add_argument("--job_timeout", type=float, default=0.0,
                      help="seconds per stage of a job before it is killed (0: none)")
  args, extra = parser.parse_known_args(argv)
  if extra and extra[0] == "--":
    extra = extra[1:]
  bad = [m for m in args.modes if m not in MODES]
  if bad or not args.modes:
    parser.error(f"--modes: {bad or 'none given'}; expected some of {MODES}")
  if args.parallel < 1:
    parser.error(f"--parallel={args.parallel} must be >= 1")
  if not args.tasks or not args.seeds:
    parser.error("--tasks and --seeds need at least one value each")
  if min(args.seeds) < 0:
    parser.error(f"--seeds {args.seeds}: seeds are >= 0 (-1 means 'config.seed')")
  clash = [f for f in extra if f.split("=")[0] in
           ("--config.task", "--config.tasks", "--config.behavior.name",
            "--config.behavior.seed", "--mode", "--workdir", "--config")]
  if clash:
    parser.error(f"{clash}: the sweep sets these itself")
  return args, extra


def main(argv: list[str] | None = None) -> int:
  args, extra = parse_args(sys.argv[1:] if argv is None else argv)
  args.workdir = os.path.abspath(args.workdir)
  if checkpoints.latest_step(os.path.join(args.workdir, "mfwm")) is None:
    sys.exit(f"error: {args.workdir}/mfwm holds no MFWM checkpoint; train it first "
             f"(experiments/main.py --config={args.config} --workdir={args.workdir} "
             "--mode=mfwm)")
  name = args.name or time.strftime("%Y%m%d-%H%M%S")
  out_dir = os.path.join(args.workdir, "sweeps", name)
  log_dir = os.path.join(out_dir, "logs")
  os.makedirs(log_dir, exist_ok=True)
  jobs = [(task, seed) for task in args.tasks for seed in args.seeds]
  print(f"sweep {name}: {len(jobs)} jobs ({len(args.tasks)} tasks x {len(args.seeds)} "
        f"seeds), {args.parallel} at once, modes {','.join(args.modes)}; logs in {log_dir}",
        flush=True)
  slots: queue.Queue = queue.Queue()
  for slot in range(args.parallel):
    slots.put(slot)
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    rows = list(pool.map(lambda job: run_job(*job, args, extra, log_dir, slots), jobs))
  title = f"Sweep {name}: {args.config}, modes {','.join(args.modes)}"
  for filename, text in (("results.md", results_markdown(rows, title)),
                         ("results.csv", results_csv(rows))):
    files.write_text(os.path.join(out_dir, filename), text)
  print(results_markdown(rows, title), flush=True)
  print(f"sweep {name}: results in {out_dir}/results.{{md,csv}}", flush=True)
  return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
