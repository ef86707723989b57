r"""How long the other process of a 2-process job takes to stop when one is killed, and
what it prints (docs/reliability.md, "A lost process of a multi-process job").

  .venv/bin/python scripts/lost_process_timing.py --kill=1   # process 1 lost
  .venv/bin/python scripts/lost_process_timing.py --kill=0   # the coordinator's process lost

Starts the two processes of a CPU job of `tests/multihost_worker.py` (a one-parameter
model trained step by step) directly, as a cluster scheduler starts them, kills process
`--kill` with SIGKILL after its third update, and prints the seconds from the kill to the
other's exit, its exit status and its last line.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "launch"))
import local  # pylint: disable=wrong-import-position


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--kill", type=int, choices=(0, 1), default=1)
  parser.add_argument("--heartbeat_timeout", type=int, default=None,
                      help="seconds (default: distributed.initialize's, as experiments/main.py)")
  args = parser.parse_args()
  env = local.process_env(0, 2, 0, dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1"))
  address = f"127.0.0.1:{local.free_port()}"
  extra = [] if args.heartbeat_timeout is None else [
      f"--heartbeat_timeout={args.heartbeat_timeout}"]
  procs, outputs, readers = [], [], []
  with tempfile.TemporaryDirectory() as out:
    try:
      for p in (0, 1):
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py"),
             f"--coordinator_address={address}", "--num_processes=2", f"--process_id={p}",
             f"--out={out}", "--model=tiny", "--dump_steps=100000", "--step_sleep=0.2",
             *extra], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True))
        outputs.append([])
        readers.append(threading.Thread(
            target=lambda proc, lines: lines.extend(proc.stdout), args=(procs[-1], outputs[-1]),
            daemon=True))
        readers[-1].start()
      while not any(line.startswith("batch 3") for line in outputs[args.kill]):
        if procs[args.kill].poll() is not None:
          sys.exit("the job ended before the kill:\n" + "".join(outputs[args.kill])[-3000:])
        time.sleep(0.1)
      killed_at = time.monotonic()
      os.killpg(procs[args.kill].pid, signal.SIGKILL)
      survivor = 1 - args.kill
      code = procs[survivor].wait()
      seconds = time.monotonic() - killed_at
      readers[survivor].join(timeout=60)
    finally:
      for proc in procs:
        if proc.poll() is None:
          os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
  last = [line for line in outputs[survivor] if line.strip()][-1].strip()
  print(f"process {survivor} stopped {seconds:.1f} s after process {args.kill} was killed "
        f"(exit status {code}); its last line:\n{last}")


if __name__ == "__main__":
  main()
