"""Times the ORIGINAL GenRL PyTorch code in the same run, for a ratio measured on one machine.

The benchmarks print absolute figures only, unless given the original code and a Python
with torch:

  --original_dir=REF            the original's agent/, tools/, conf/ (mazpie/genrl at the
                                commit `torch_reference_bench.py` names)
  --original_python=TV/bin/python
  --original_tools=DIR          the folder of `torch_reference_bench.py` (the team's tools
                                for running the original code; not part of this repository)

Then, right after its own timing of a size, a benchmark runs `torch_reference_bench.py` for
the same size and phase and prints both figures and their ratio (the original's seconds
per update over ours: above 1, ours is faster). Set-up: the README beside that script.
The original runs float32 on the CPU with `--original_threads` torch threads (default:
every core), with the C library's malloc (our process's tcmalloc is not passed on); it
knows the sizes `small` and `paper` only. Its peak-RSS figure is not comparable when it
runs from here: Linux carries a process's peak RSS over to the program it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from typing import Any

BENCH_SCRIPT = "torch_reference_bench.py"
ORIGINAL_SIZES = ("small", "paper")  # torch_reference_bench.py --config choices
ORIGINAL_ACTION_DIM = 6  # its presets' action dimension


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The same-run comparison's flags (all optional; without `--original_dir`, none runs)."""
  group = parser.add_argument_group("same-run comparison with the original PyTorch code")
  group.add_argument("--original_dir", default="",
                     help="the original's agent/, tools/, conf/; empty: no comparison")
  group.add_argument("--original_python", default="",
                     help="a Python with torch, numpy, omegaconf, tqdm")
  group.add_argument("--original_tools", default="",
                     help=f"the folder of {BENCH_SCRIPT}")
  group.add_argument("--original_steps", type=int, default=3,
                     help="the original's timed updates (after 1 warm-up)")
  group.add_argument("--original_threads", type=int, default=0,
                     help="torch threads; 0: every core")


def enabled(args: argparse.Namespace) -> bool:
  return bool(args.original_dir)


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Refuses a half-given comparison and missing paths before anything is timed."""
  if not enabled(args):
    if args.original_python or args.original_tools:
      parser.error("--original_python/--original_tools need --original_dir")
    return
  if not args.original_python or not args.original_tools:
    parser.error("--original_dir needs --original_python (a Python with torch) and "
                 f"--original_tools (the folder of {BENCH_SCRIPT})")
  script = os.path.join(args.original_tools, BENCH_SCRIPT)
  for path, what in ((args.original_dir, "--original_dir"),
                     (args.original_python, "--original_python"), (script, BENCH_SCRIPT)):
    if not os.path.exists(path):
      parser.error(f"{what}: {path} does not exist")
  if not os.path.isdir(os.path.join(args.original_dir, "agent")):
    parser.error(f"--original_dir={args.original_dir} has no agent/ folder")


def original_environment() -> dict[str, str]:
  """This environment less what `genrl_jax.host_allocator` added for our process (tcmalloc
  preloaded, its settings): the original runs with the allocator it runs with anywhere."""
  env = dict(os.environ)
  preload = [p for p in env.get("LD_PRELOAD", "").split() if "tcmalloc" not in p]
  if preload:
    env["LD_PRELOAD"] = " ".join(preload)
  else:
    env.pop("LD_PRELOAD", None)
  for key in [k for k in env if k.startswith("TCMALLOC_")]:
    del env[key]
  return env


def run(args: argparse.Namespace, phase: str, size: str, extra: tuple[str, ...] = ()
        ) -> dict[str, Any]:
  """Runs the original's benchmark (`phase` wm|ac at preset `size`) and returns its JSON
  summary (`update_total.median_s`, ...), or `{"error": ...}` when it could not run."""
  if size not in ORIGINAL_SIZES:
    return {"error": f"the original's benchmark has no size {size!r} (only "
                     f"{', '.join(ORIGINAL_SIZES)})"}
  threads = args.original_threads or os.cpu_count() or 1
  with tempfile.TemporaryDirectory(prefix="genrl_original_bench_") as tmp:
    out = os.path.join(tmp, "result.json")
    command = [args.original_python, os.path.join(args.original_tools, BENCH_SCRIPT), "--ref-dir",
               args.original_dir, "--config", size, "--phase", phase, "--steps",
               str(args.original_steps), "--warmup", "1", "--threads", str(threads),
               "--json", out, *extra]
    print(f"original (load average {os.getloadavg()[0]:.1f}): " + " ".join(command),
          flush=True)
    proc = subprocess.run(command, capture_output=True, text=True, check=False,
                          env=original_environment())
    if proc.returncode != 0 or not os.path.exists(out):
      return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}",
              "command": command}
    with open(out) as f:
      result = json.load(f)
  result["command"] = command
  return result


def pair_text(ours_s: float, original_s: float | None, what: str) -> str:
  """'ours X s/update, original Y s/update (same run), original/ours = R'."""
  if original_s is None:
    return f"{what}: no original figure"
  return (f"{what}: ours {ours_s:.3f} s/update, original {original_s:.3f} s/update (same "
          f"run, same machine) -> original/ours = {original_s / ours_s:.2f}")
