"""One `error:` line, naming the lost process, when a multi-process job loses a process.

When a process of a job dies (killed, crashed, its host gone), JAX's coordination service
ends the others from a C++ thread: process 0 (which hosts the coordinator) after the dead
process has sent no heartbeat for `heartbeat_timeout` seconds, the others when they next
poll it; and every process at once when process 0 itself is the one lost. What reaches the
terminal is a page of C++ log lines and a stack trace, where the lost process appears only
as a bare number under "The following tasks are unhealthy". No Python code runs then (the
process aborts), and the client's callback for it cannot be set from Python (JAX does not
expose it; jaxlib's binding aborts with `std::bad_cast` when it is called).

`watch_stderr` (called by `distributed.initialize` once the process has joined) therefore
sends this process's stderr through a filter process (this file, run as a script):
* every line passes through at once and unchanged, except the coordination service's C++
  log lines, which are held back together with everything after them;
* when a fatal error follows them, the held lines go to a report file and the terminal
  gets one line instead, naming the lost process, e.g.
    error: process 1 of this 2-process job stopped sending heartbeats (killed, crashed,
    or hung); process 0 stops too. Run the same command again ...
* otherwise (no fatal error within `_HOLD_S` seconds, or the process ends without one) the
  held lines pass through late, so nothing is lost.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

# Held-back lines pass through if no fatal error follows within this many seconds.
_HOLD_S = 10.0
# A C++ log line (absl format; Python's absl lines name a .py file) of the coordination
# service or its client: the start of a job failure report.
_COORDINATION_LINE = re.compile(
    rb"^[EFW]\d{4} [\d:.]+ +\d+ (coordination_service\w*\.cc|client\.(h|cc)|"
    rb"preemption_\w+\.cc):\d+\]")
_FATAL = (b"Terminating process because the JAX distributed service detected fatal errors",
          b"*** Check failure stack trace", b"terminate called after throwing")
_UNHEALTHY = re.compile(rb"stopped sending heartbeats\):\s*\n((?:\s*\d+[,\s]*\n)+)")
_TASK = re.compile(rb"/task:(\d+)")
RESUME_HINT = ("Run the same command again on every host: each stage resumes from its last "
               "checkpoint")


def report_path(process_id: int) -> str:
  """Where process `process_id`'s filter writes JAX's report of a job failure."""
  return os.path.join(tempfile.gettempdir(),
                      f"genrl_jax_job_failure_p{process_id}_pid{os.getpid()}.log")


def watch_stderr(process_id: int, num_processes: int, coordinator: str) -> None:
  """Sends this process's stderr (fd 2, inherited by its children) through the filter."""
  if num_processes < 2:
    return
  read_fd, write_fd = os.pipe()
  sys.stderr.flush()
  subprocess.Popen(  # pylint: disable=consider-using-with  (it outlives this call)
      [sys.executable, os.path.abspath(__file__), f"--process_id={process_id}",
       f"--num_processes={num_processes}", f"--coordinator={coordinator}",
       f"--report={report_path(process_id)}"],
      stdin=read_fd, stdout=sys.stderr.fileno(), close_fds=True)
  os.close(read_fd)
  os.dup2(write_fd, sys.stderr.fileno())
  os.close(write_fd)


def error_line(held: bytes, process_id: int, num_processes: int, coordinator: str,
               report: str) -> str:
  """The one line that replaces JAX's report `held` of a fatal job failure."""
  lost = sorted({int(t) for block in _UNHEALTHY.findall(held)
                 for t in re.findall(rb"\d+", block)} - {process_id})
  if not lost:
    lost = sorted({int(t) for t in _TASK.findall(held)} - {process_id})
  job = f"this {num_processes}-process job"
  if lost:
    names = ", ".join(str(p) for p in lost)
    what = (f"process{'es' if len(lost) > 1 else ''} {names} of {job} stopped sending "
            f"heartbeats (killed, crashed, or hung)")
  elif process_id != 0:
    what = (f"lost the coordinator of {job}, process 0 at {coordinator} (killed, crashed, "
            "or unreachable)")
  else:
    what = f"JAX's distributed service ended {job} (another process was likely lost)"
  return (f"error: {what}; process {process_id} stops too. {RESUME_HINT}. JAX's report: "
          f"{report}")


def _filter(args: argparse.Namespace) -> None:
  """Copies stdin to stdout, replacing a fatal job failure report by `error_line`."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the watched process's to handle
  out = sys.stdout.buffer
  held, held_since, partial, fatal = b"", None, b"", False

  def release():
    nonlocal held, held_since
    out.write(held)
    out.flush()
    held, held_since = b"", None

  while True:
    waiting = (held_since is not None or partial) and not fatal
    if select.select([0], [], [], 0.5 if waiting else None)[0]:
      chunk = os.read(0, 65536)
      if not chunk:
        break
    else:  # nothing new for 0.5 s
      chunk = b""
      if held_since is None and partial:
        out.write(partial)
        partial = b""
    if fatal:
      held += chunk
      continue
    lines = (partial + chunk).split(b"\n")
    partial = lines.pop()
    for line in lines:
      line += b"\n"
      if held_since is None and _COORDINATION_LINE.match(line):
        held_since = time.monotonic()
      if held_since is None:
        out.write(line)
      else:
        held += line
    if held_since is not None and any(marker in held for marker in _FATAL):
      fatal = True
      held += partial
      partial = b""
      with open(args.report, "wb") as f:
        f.write(held)
      out.write(error_line(held, args.process_id, args.num_processes, args.coordinator,
                           args.report).encode() + b"\n")
      out.flush()
      continue
    if held_since is None and partial and not _could_start_coordination_line(partial):
      out.write(partial)  # e.g. a progress bar redrawn with "\r": shown as it comes
      partial = b""
    out.flush()
    if held_since is not None and time.monotonic() - held_since > _HOLD_S:
      release()
  if fatal:
    with open(args.report, "wb") as f:
      f.write(held)
  else:
    out.write(held + partial)
    out.flush()


def _could_start_coordination_line(text: bytes) -> bool:
  """Whether `text`, the start of a line, may still become a coordination service line."""
  return bool(re.match(rb"^[EFW]\d{0,4}( [\d:.]*)?( +\d*)?( [\w.]*)?$", text)
              or _COORDINATION_LINE.match(text))


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--coordinator", default="")
  parser.add_argument("--report", required=True)
  _filter(parser.parse_args())
