r"""Starts the N processes of a multi-process job on this machine (tests, multi-GPU boxes).

  python launch/local.py --num_processes=2 --devices_per_process=2 -- \
      --config=configs/walker.py:tiny --workdir=workdirs/walker_tiny --mode=mfwm
  python launch/local.py --num_processes=4 --gpus_per_process=2 -- --config=...

Every argument after the launcher's own goes to the script (default
`experiments/main.py`), followed by `--coordinator_address=127.0.0.1:<port>
--num_processes=N --process_id=i`; process 0 hosts the coordinator. Options:

* `--devices_per_process=K`: K simulated CPU devices per process
  (`--xla_force_host_platform_device_count`; CPU collectives between the processes go
  over loopback with gloo, JAX's default).
* `--gpus_per_process=G`: process i sees GPUs `i*G .. i*G+G-1` (`CUDA_VISIBLE_DEVICES`).
* `--port`: the coordinator's port (default: a free one).
* `--timeout=S`: stop every process after S seconds (exit status 124).

Each output line is prefixed with `[p<i>]`. When a process fails, the launcher kills the
others (SIGKILL to their process groups: JAX handles SIGTERM itself and keeps running) and
exits with the failed process's status; it exits 0 when all processes succeed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port free on this machine now (the OS picks it)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(index: int, devices_per_process: int, gpus_per_process: int,
                base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of process `index`: its simulated CPU devices or its GPUs."""
  env = dict(os.environ if base is None else base)
  env["PYTHONUNBUFFERED"] = "1"
  if devices_per_process:
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(
        flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
  if gpus_per_process:
    first = index * gpus_per_process
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(first,
                                                                 first + gpus_per_process))
  return env


def _pump(stream, prefix: str) -> None:
  for line in iter(stream.readline, b""):
    sys.stdout.buffer.write(prefix.encode() + line)
    sys.stdout.buffer.flush()
  stream.close()


def _kill(procs: list[subprocess.Popen]) -> None:
  for p in procs:
    if p.poll() is None:
      try:
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


def launch(script_args: list[str], num_processes: int, script: str, devices_per_process: int = 0,
           gpus_per_process: int = 0, port: int = 0, host: str = "127.0.0.1",
           timeout: float = 0.0) -> int:
  """Runs the job; returns its exit status (0, the first failure's, or 124 on timeout)."""
  if num_processes < 1:
    raise SystemExit(f"--num_processes={num_processes} must be >= 1")
  address = f"{host}:{port or free_port()}"
  procs, pumps = [], []
  for i in range(num_processes):
    cmd = [sys.executable, "-u", script, *script_args, f"--coordinator_address={address}",
           f"--num_processes={num_processes}", f"--process_id={i}"]
    # Own process group: the kill reaches the process's own children (env workers).
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=process_env(i, devices_per_process, gpus_per_process),
                         start_new_session=True)
    procs.append(p)
    t = threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] "), daemon=True)
    t.start()
    pumps.append(t)
  print(f"launch: {num_processes} processes of {os.path.relpath(script, ROOT)}, coordinator "
        f"{address}", flush=True)
  start, status = time.monotonic(), 0
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, status = failed[0]
        print(f"launch: process {i} exited with status {status}; stopping the others",
              flush=True)
        break
      if all(c == 0 for c in codes):
        break
      if timeout and time.monotonic() - start > timeout:
        print(f"launch: timeout after {timeout:.0f} s; stopping all processes", flush=True)
        status = 124
        break
      time.sleep(0.2)
  except KeyboardInterrupt:
    status = 130
  finally:
    _kill(procs)
    for p in procs:
      p.wait()
    for t in pumps:
      t.join(timeout=5)
  # A negative status (killed by a signal) becomes 128 + signal, as shells report it.
  return status if status >= 0 else 128 - status


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      usage="%(prog)s [launcher options] [--] [arguments of the script]")
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--devices_per_process", type=int, default=0,
                      help="simulated CPU devices per process (0: leave as is)")
  parser.add_argument("--gpus_per_process", type=int, default=0,
                      help="GPUs per process via CUDA_VISIBLE_DEVICES (0: all GPUs visible)")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--script", default=os.path.join(ROOT, "experiments", "main.py"))
  parser.add_argument("--timeout", type=float, default=0.0,
                      help="seconds before every process is stopped (0: none)")
  args, rest = parser.parse_known_args()
  # A SIGTERM (a scheduler, a test's timeout) unwinds `launch`, which kills the processes.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  if rest and rest[0] == "--":
    rest = rest[1:]
  sys.exit(launch(rest, args.num_processes, os.path.abspath(args.script),
                  args.devices_per_process, args.gpus_per_process, args.port,
                  timeout=args.timeout))


if __name__ == "__main__":
  main()
