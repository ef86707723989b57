"""The stderr filter of multi-process jobs (`genrl_jax/train/lost_process.py`): JAX's
report of a lost process becomes one `error:` line naming it, everything else passes
through unchanged. The filter runs as its own process, as in a job, fed the lines JAX
printed when a process of a real 2-process job was killed (test_multihost.py kills real
processes)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from genrl_jax.train import lost_process

FILTER = lost_process.__file__

# What process 0 (the coordinator's) printed, 10 s after process 1 was killed.
LOST_PROCESS_1 = b"""\
E1208 03:21:17.355977    9974 coordination_service.cc:1549] [1497] Use error polling to \
propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy \
(stopped sending heartbeats):
1
The tasks have crashed. Check the task logs for an earlier error, or scheduler events \
(e.g. preemption, eviction) to debug further. [type.googleapis.com/tensorflow.\
CoordinationServiceError='']
E1208 03:21:17.356546    9985 coordination_service_agent.cc:289] Polled an error from \
coordination service (this can be an error from this or another task).
F1208 03:21:17.356689    9985 client.h:80] Terminating process because the JAX distributed \
service detected fatal errors. This most likely indicates that another task died; see the \
other task logs for more details. absl::Status: UNAVAILABLE: The following tasks are \
unhealthy (stopped sending heartbeats):
1
The tasks have crashed.

RPC: /xla.coordination.CoordinationService/PollForError
*** Check failure stack trace: ***
    @     0x7fc3fe240634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
    @     0x7fc3fa3040ee  xla::CoordinationServiceAgent::SetError()
"""
# What process 1 printed when process 0 was killed.
LOST_COORDINATOR = b"""\
E1208 03:21:22.095875   10100 coordination_service_agent.cc:289] Polled an error from \
coordination service (this can be an error from this or another task).
F1208 03:21:22.095916   10100 client.h:80] Terminating process because the JAX distributed \
service detected fatal errors. absl::Status: UNAVAILABLE: Failed to send RPC to \
coordination service. Either the leader task was preempted/died/restarted unexpectedly.
:UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"Socket closed"}
*** Check failure stack trace: ***
    @     0x7f98cee40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
"""
OWN_LINES = (b"I1208 03:21:07.1 140 metrics.py:80] [mfwm] step 6: model_loss=2332\n"
             b"W1208 03:21:08.2 140 checkpoints.py:281] checkpoint W/mfwm/6 is damaged\n")


def _filter(chunks: list[bytes], tmp_path, process_id: int = 0,
            pause_s: float = 0.0) -> tuple[bytes, str]:
  """Feeds `chunks` to a filter process; returns its output and the report path."""
  report = str(tmp_path / "report.log")
  proc = subprocess.Popen(
      [sys.executable, FILTER, f"--process_id={process_id}", "--num_processes=2",
       "--coordinator=10.0.0.1:1234", f"--report={report}"],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  for chunk in chunks:
    proc.stdin.write(chunk)
    proc.stdin.flush()
    time.sleep(pause_s)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 0
  return out, report


def test_a_lost_process_becomes_one_error_line_naming_it(tmp_path):
  out, report = _filter([OWN_LINES, LOST_PROCESS_1, b"    @ 0x7fc3 (unknown)\n"], tmp_path)
  lines = out.decode().splitlines()
  assert out.startswith(OWN_LINES)  # what came before passes unchanged
  assert lines[2:] == [
      "error: process 1 of this 2-process job stopped sending heartbeats (killed, crashed, "
      f"or hung); process 0 stops too. {lost_process.RESUME_HINT}. JAX's report: {report}"]
  with open(report, "rb") as f:  # the whole report, also what came after the fatal line
    assert f.read() == LOST_PROCESS_1 + b"    @ 0x7fc3 (unknown)\n"


def test_a_lost_coordinator_is_named_with_its_address(tmp_path):
  out, report = _filter([LOST_COORDINATOR], tmp_path, process_id=1)
  assert out.decode() == (
      "error: lost the coordinator of this 2-process job, process 0 at 10.0.0.1:1234 "
      "(killed, crashed, or unreachable); process 1 stops too. "
      f"{lost_process.RESUME_HINT}. JAX's report: {report}\n")


def test_everything_else_passes_through_unchanged_and_at_once(tmp_path):
  # Lines cut anywhere, progress bars redrawn with "\r" and no newline, other C++ logs.
  bar = b"mfwm:  44%|####      | 4/9 [00:02<00:10]\rmfwm:  56%|#####     | 5/9"
  xla = b"W1208 03:21:09.3 77 cpu_client.cc:12] an XLA warning\n"
  text = OWN_LINES + bar + b"\n" + xla
  chunks = [text[i:i + 7] for i in range(0, len(text), 7)]
  out, report = _filter(chunks, tmp_path)
  assert out == text and not os.path.exists(report)
  # A progress bar without a newline is shown before the stream goes on.
  proc = subprocess.Popen([sys.executable, FILTER, "--process_id=0", "--num_processes=2",
                           f"--report={report}"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
  proc.stdin.write(bar)
  proc.stdin.flush()
  assert select.select([proc.stdout], [], [], 20)[0], "the progress bar was held back"
  assert os.read(proc.stdout.fileno(), len(bar)) == bar
  proc.stdin.close()
  proc.wait(timeout=60)


def test_coordination_lines_without_a_fatal_error_pass_through_late(tmp_path):
  # A warning of the coordination service that does not end the process: held back, then
  # shown (with what followed it, in order) when the process ends.
  warning = (b"W1208 03:21:09.3 77 preemption_sync_manager.cc:147] Failed to retrieve "
             b"preemption notice from coordination service\n")
  out, report = _filter([warning, OWN_LINES], tmp_path)
  assert out == warning + OWN_LINES and not os.path.exists(report)


def test_a_single_process_job_keeps_its_stderr():
  before = os.fstat(2).st_ino
  lost_process.watch_stderr(0, 1, "")
  assert os.fstat(2).st_ino == before


def test_a_collective_cut_by_a_lost_process_is_told_from_other_errors():
  from genrl_jax.train import distributed  # pylint: disable=g-import-not-at-top
  # What a barrier raised on process 0 of a CPU job when process 1 was killed.
  try:
    try:
      raise RuntimeError("UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/"
                         "pair.cc:547] Connection closed by peer [127.0.0.1]:62659")
    except RuntimeError as e:
      raise AssertionError("sync_global_devices name mismatch ('data: embedded')") from e
  except AssertionError as e:
    cut = e
  lost = lambda error: bool(distributed._LOST_PEER.search(distributed._messages(error)))  # pylint: disable=protected-access
  assert lost(cut)
  assert not lost(ValueError("config.batch_size=6 is not divisible by the 4 devices"))
