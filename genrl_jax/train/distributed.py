"""Multi-process jobs (one process per host, or per accelerator): joining, identity, barriers.

A process learns that it is one process of a job from (`resolve_job`, mode `auto`):

1. explicit `coordinator_address`, `num_processes` and `process_id` (all three; the local
   launcher `launch/local.py` passes them as flags);
2. a SLURM step of more than one task (`srun`; the variables JAX's own SLURM detection
   reads): process id `SLURM_PROCID`, count `SLURM_NTASKS`, coordinator
   `$JAX_COORDINATOR_ADDRESS` when set (`launch/slurm.sbatch` sets it to the first node),
   else the first host of `SLURM_STEP_NODELIST` on port `$JAX_COORDINATOR_PORT` or one
   derived from the job id (as JAX derives it);
3. nothing of the above: a single process, and `jax.distributed` is not initialised.

Mode `jax` calls `jax.distributed.initialize()` without arguments, so that JAX detects the
cluster itself (Cloud TPU pod slices, GKE, Open MPI, SLURM): `launch/tpu_pod.sh` uses it.
Mode `off` never initialises.

Failures are bounded in time instead of hanging:
* a coordinator that cannot be reached, or processes that do not all join, stop the
  process after `init_timeout` seconds with an error naming the coordinator address (JAX
  itself would abort with a bare `DEADLINE_EXCEEDED`);
* processes started with different process counts are refused right after joining, on
  every process;
* once joined, a process that dies stops sending heartbeats: JAX's coordination service
  then terminates every other process after `heartbeat_timeout` seconds (at once when
  process 0, the coordinator's, is lost), and each prints one `error:` line naming the
  lost process instead of JAX's report (`lost_process`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Mapping

import jax
import numpy as np

from genrl_jax.train import lost_process

MODES = ("auto", "jax", "off")
# Exit status of a process stopped by the join watchdog (distinct from Python's 1).
JOIN_TIMEOUT_EXIT = 3
# JAX's own join deadline is set this much later than ours, so that our message wins.
_JAX_DEADLINE_SLACK_S = 30
# The SLURM variables JAX's SLURM detection requires (jax._src.clusters.slurm_cluster).
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")


class DistributedError(RuntimeError):
  """The processes of a job cannot form the job, or disagree."""


@dataclasses.dataclass(frozen=True)
class Job:
  """How this process joins its job. `source`: `flags`, `slurm` or `jax` (JAX detects the
  cluster; then address, count and id may be None)."""
  source: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  def describe(self) -> str:
    if self.source == "jax":
      return "a job detected by jax.distributed (Cloud TPU / GKE / SLURM / Open MPI)"
    return (f"process {self.process_id} of {self.num_processes} (from {self.source}), "
            f"coordinator {self.coordinator_address}")


def split_address(address: str) -> tuple[str, int]:
  """`host:port` (IPv6 hosts in brackets, `[::1]:1234`) -> `(host, port)`."""
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise DistributedError(f"coordinator address {address!r} is not host:port")
  return host.strip("[]"), int(port)


def first_slurm_host(nodelist: str) -> str:
  """The first host of a SLURM node list: `node[003-005,9],gpu1` -> `node003`,
  `rack[1-2]-n[07,09]` -> `rack1-n07`."""
  depth, end = 0, len(nodelist)
  for i, ch in enumerate(nodelist):
    depth += {"[": 1, "]": -1}.get(ch, 0)
    if ch == "," and depth == 0:
      end = i
      break
  return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], nodelist[:end])


def _slurm_job(environ: Mapping[str, str], coordinator_address: str | None) -> Job | None:
  if not all(v in environ for v in _SLURM_VARS) or int(environ["SLURM_NTASKS"]) < 2:
    return None
  address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS")
  if not address:
    port = environ.get("JAX_COORDINATOR_PORT") or str(
        int(environ["SLURM_JOB_ID"]) % 2**12 + 65536 - 2**12)
    address = f"{first_slurm_host(environ['SLURM_STEP_NODELIST'])}:{port}"
  return Job("slurm", address, int(environ["SLURM_NTASKS"]), int(environ["SLURM_PROCID"]))


def resolve_job(mode: str = "auto", coordinator_address: str | None = None,
                num_processes: int | None = None, process_id: int | None = None,
                environ: Mapping[str, str] | None = None) -> Job | None:
  """The job this process belongs to, or None for a single-process run (see module doc)."""
  environ = os.environ if environ is None else environ
  if mode not in MODES:
    raise DistributedError(f"distributed mode {mode!r}: expected one of {MODES}")
  explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
              "process_id": process_id}
  given = {k: v for k, v in explicit.items() if v is not None}
  if mode == "off":
    if given:
      raise DistributedError(f"--distributed=off contradicts {sorted(given)}")
    return None
  if mode == "jax":
    return Job("jax", coordinator_address, num_processes, process_id)
  if len(given) == 3:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise DistributedError(f"process_id={process_id} with num_processes={num_processes}: "
                             f"process ids run from 0 to num_processes - 1")
    split_address(coordinator_address)
    return Job("flags", coordinator_address, num_processes, process_id) \
        if num_processes > 1 else None
  # SLURM gives the count and the id; the coordinator may be given.
  job = _slurm_job(environ, coordinator_address)
  if given and (job is None or set(given) != {"coordinator_address"}):
    missing = sorted(set(explicit) - set(given))
    raise DistributedError(f"a multi-process run needs coordinator_address, num_processes "
                           f"and process_id together (outside a SLURM step); missing {missing}")
  return job


def _wait_for_coordinator(address: str, deadline: float) -> None:
  """Waits until the coordinator accepts TCP connections (process 0 may start later)."""
  host, port = split_address(address)
  last = None
  while True:
    try:
      with socket.create_connection((host, port), timeout=2.0):
        return
    except OSError as e:
      last = e
    if time.monotonic() >= deadline:
      raise DistributedError(
          f"the coordinator {address} could not be reached ({last}); is process 0 running "
          f"there, and is the address reachable from {socket.gethostname()}?")
    time.sleep(0.5)


def _fail_now(message: str) -> None:
  """Ends the process from the watchdog thread; JAX's join cannot be interrupted."""
  sys.stderr.write(f"\nerror: {message}\n")
  sys.stderr.flush()
  os._exit(JOIN_TIMEOUT_EXIT)  # pylint: disable=protected-access


def initialize(job: Job, init_timeout: float = 300, heartbeat_timeout: int = 50,
               translate_job_failures: bool = True) -> None:
  """Joins `job` (`jax.distributed.initialize`), before any other use of JAX.

  Waits at most `init_timeout` seconds for the coordinator and all processes, then ends
  the process (status `JOIN_TIMEOUT_EXIT`) with an error naming the address. After
  joining, checks that every process was started with the same process count. With
  `translate_job_failures`, JAX's report of a lost process becomes one `error:` line
  naming it (`lost_process`).
  """
  deadline = time.monotonic() + init_timeout
  if job.source != "jax" and job.process_id != 0:
    _wait_for_coordinator(job.coordinator_address, deadline)
  what = (f"process {job.process_id} of {job.num_processes} could not join the job at "
          f"coordinator {job.coordinator_address}" if job.source != "jax" else
          "could not join the job jax.distributed detected")
  hint = (" within {:.0f} s: not every process started, or they were given different "
          "process counts or coordinators (check --num_processes, --process_id, "
          "--coordinator_address"
          + (", or SLURM_NTASKS: start with srun, or use --distributed=off" if job.source
             == "slurm" else "") + ")").format(init_timeout)
  timer = threading.Timer(max(0.0, deadline - time.monotonic()), _fail_now, (what + hint,))
  timer.daemon = True
  timer.start()
  kwargs: dict[str, Any] = dict(initialization_timeout=int(init_timeout) + _JAX_DEADLINE_SLACK_S,
                                heartbeat_timeout_seconds=int(heartbeat_timeout))
  try:
    if job.source == "jax":
      try:
        jax.distributed.initialize(job.coordinator_address, job.num_processes,
                                   job.process_id, **kwargs)
      except ValueError as e:  # JAX found no cluster to fill in the missing options
        raise DistributedError(f"--distributed=jax: JAX detected no cluster ({e}); give "
                               "--coordinator_address, --num_processes and --process_id "
                               "instead") from e
    else:
      # `deactivate`: JAX would otherwise fill in unset options from the environment (e.g.
      # restrict each SLURM task to one GPU); every option is given here.
      jax.distributed.initialize(job.coordinator_address, job.num_processes, job.process_id,
                                 cluster_detection_method="deactivate", **kwargs)
  finally:
    timer.cancel()
  if translate_job_failures:
    lost_process.watch_stderr(jax.process_index(), jax.process_count(),
                              job.coordinator_address or "")
  if job.num_processes is not None:
    _check_agreement(job)
  if jax.default_backend() == "cpu":
    _connect_cpu_collectives()


def _connect_cpu_collectives() -> None:
  """Runs one collective over all devices of the job, while the processes are in step.

  XLA's CPU collectives (gloo) connect a set of devices when they first run a collective
  together, and fail after 30 s if a process is late (e.g. still compiling what the other
  process read from the compilation cache, which only process 0 writes). Once connected,
  they wait for a late process (100 s tried); training uses this set of devices (the
  mesh).
  """
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.asarray(jax.devices()), ("all",))
  ones = jax.make_array_from_callback((jax.device_count(),),
                                      NamedSharding(mesh, PartitionSpec("all")),
                                      lambda index: np.ones(1, np.float32))
  total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))(ones)
  if int(total) != jax.device_count():
    raise DistributedError(f"a test sum over the {jax.device_count()} devices of the job "
                           f"gave {int(total)}")


def _check_agreement(job: Job) -> None:
  """Refuses a job whose processes were started with different process counts."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  seen = np.asarray(multihost_utils.process_allgather(
      np.asarray([job.num_processes, job.process_id], np.int64)))
  seen = seen.reshape(-1, 2)
  if (seen[:, 0] != jax.process_count()).any():
    told = ", ".join(f"process {int(p)}: {int(n)}" for n, p in seen)
    raise DistributedError(
        f"the processes of this job were started with different process counts ({told}); "
        f"{jax.process_count()} processes joined. Start every process with the same "
        "--num_processes")


# A collective that failed because a process of the job is gone (CPU collectives report
# the closed connection; the coordination service has not yet noticed the loss).
_LOST_PEER = re.compile(r"Connection (closed|reset) by peer|Broken pipe|Socket closed")


def run_or_exit(fn: Callable[[], Any], lost_peer_wait_s: float = 0.0) -> Any:
  """Returns `fn()`; in a multi-process job, an exception ends this process at once.

  A plain exit would wait in JAX's shutdown barrier for processes that may be blocked in a
  collective with this one, until `shutdown_timeout` (5 minutes). Exiting at once (status
  1, after printing the error) stops its heartbeats, so the other processes stop too,
  within the heartbeat timeout.

  An exception of a collective whose connection to another process closed means that
  process is lost, not that this one failed: then this process waits up to
  `lost_peer_wait_s` seconds (more than the heartbeat timeout) for JAX's coordination
  service to end it, which prints one line naming the lost process (`lost_process`),
  instead of a traceback blaming itself.
  """
  try:
    return fn()
  except Exception as e:  # pylint: disable=broad-except
    if not jax.distributed.is_initialized():
      raise
    if lost_peer_wait_s > 0 and _LOST_PEER.search(_messages(e)):
      time.sleep(lost_peer_wait_s)  # normally ended by JAX before this returns
    traceback.print_exc()
    sys.stderr.write(f"error: process {jax.process_index()} of the job stopped by the error "
                     "above; the other processes stop once they miss its heartbeats\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def _messages(error: BaseException) -> str:
  """The messages of `error` and of the exceptions it was raised from or during."""
  out, seen = [], set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    out.append(str(error))
    error = error.__cause__ or error.__context__
  return "\n".join(out)


def identity() -> str:
  """One line saying who this process is: index, host, local and global devices."""
  local = jax.local_devices()
  return (f"process {jax.process_index()}/{jax.process_count()} on {socket.gethostname()} "
          f"(pid {os.getpid()}): {len(local)} local devices "
          f"[{', '.join(str(d.id) for d in local)}] of {jax.device_count()} global "
          f"({jax.default_backend()}, {local[0].device_kind})")


def barrier(name: str) -> None:
  """Waits until every process of the job gets here (no-op in a single process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def same_on_all_processes(value: int, what: str) -> int:
  """Returns `value` after checking that every process of the job holds the same.

  For decisions every process must take alike (which checkpoint to restore, whether to
  save): processes that decide differently would wait for each other forever.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    seen = np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int64)))
    seen = seen.reshape(-1)
    if (seen != seen[0]).any():
      raise DistributedError(f"{what} differs between the processes of the job: "
                             f"{dict(enumerate(seen.tolist()))} (process: value)")
  return value


def replica_digest(tree: Any) -> str:
  """SHA-256 of this process's copy of a replicated tree (paths, shapes, dtypes, values)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      if not leaf.is_fully_replicated:
        raise ValueError(f"{jax.tree_util.keystr(path)} is not replicated")
      leaf = leaf.addressable_data(0)
    array = np.asarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}|{array.shape}|{array.dtype}|".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def check_replicas_agree(tree: Any, what: str) -> str:
  """Raises when the processes' copies of the replicated `tree` differ; returns the digest.

  Data-parallel replicas stay identical only if every process runs the same updates; a
  silent divergence (a process fed other shapes or another config) would otherwise
  surface much later, if at all.
  """
  digest = replica_digest(tree)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    codes = np.asarray(multihost_utils.process_allgather(
        np.frombuffer(bytes.fromhex(digest), np.uint8)))
    codes = codes.reshape(jax.process_count(), -1)
    differ = [p for p in range(len(codes)) if not np.array_equal(codes[p], codes[0])]
    if differ:
      raise DistributedError(f"{what} differ between processes: processes {differ} hold "
                             "other values than process 0")
  return digest
