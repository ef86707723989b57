r"""genrl_jax main job: parses the config and runs the stages.

  python experiments/main.py --config=configs/stickman.py:tiny --workdir=workdirs/tiny

`--config` takes `configs/<domain>.py[:variant]` (resolved against `experiments/`), and
any `--config.<key>=<value>` override; unknown keys are refused. `--mode` runs one stage
(`data`, `mfwm`, `behavior`, `eval`) or all of them (`all`, the default); `--mode=collect` only
collects `config.data.collect_episodes` episodes with `config.data.collector` into
`config.data.path` (default `<workdir>/dataset`). Each stage resumes from what the workdir
already holds.

Multi-process jobs (several hosts, or one process per accelerator): the process joins the
job (`jax.distributed`) when it is started as one process of it: explicit
`--coordinator_address --num_processes --process_id` (what `launch/local.py` passes), a
SLURM step of several tasks (`launch/slurm.sbatch`), or `--distributed=jax` for JAX's own
cluster detection (Cloud TPU pods, `launch/tpu_pod.sh`); otherwise it runs alone
(`genrl_jax/train/distributed.py`). Every process logs one identity line; everything else
(logs, metrics, progress bars, summaries) comes from process 0 only.
"""

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genrl_jax import experiment_config, host_allocator  # pylint: disable=wrong-import-position


def _resolve_config_argv(argv: list[str]) -> list[str]:
  """Rewrites `--config=configs/x.py` to the file under `experiments/` before absl parses."""
  out = []
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      arg = "--config=" + experiment_config.resolve_config_path(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(argv):
      argv[i + 1] = experiment_config.resolve_config_path(argv[i + 1])
    out.append(arg)
  return out


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for everything the run writes "
                               "(default: workdirs/<config name>).")
# What `--mode=all` runs, in order; `collect` is the first half of `data`.
ALL_STAGES = ("data", "mfwm", "behavior", "eval")
_MODE = flags.DEFINE_enum("mode", "all", ("all", "collect") + ALL_STAGES, "Stage(s) to run.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ("auto", "jax", "off"),
    "auto: join a multi-process job given by the flags below or by a SLURM step of several "
    "tasks, else run alone; jax: let jax.distributed detect the cluster (Cloud TPU pods); "
    "off: always run alone.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of the job's coordinator (process 0).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "init_timeout", 300, "Seconds to wait for the coordinator and every process to join.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 50, "Seconds after which a silent process counts as dead; the "
    "other processes then stop.")


class _OwnInfoOnly(logging.logging.Filter):
  """Keeps INFO lines of genrl_jax and this script; libraries (Orbax, XLA) log many. Also
  drops Orbax's warnings that a checkpoint opened for reading is read-only (every restore
  of a behaviour or MFWM opens it so, on purpose), and its writer threads' tracebacks of a
  full disk (the stage's `error:` line names the path and the space)."""

  def filter(self, record):
    own = "genrl_jax" in record.pathname or record.pathname == __file__
    if "orbax" in record.pathname and "No space left on device" in record.getMessage():
      return False  # each writer thread's traceback; the run's one error line says it
    if "orbax" in record.pathname and record.levelno == logging.logging.WARNING:
      message = record.getMessage()
      if "read_only=True" in message or "is read only" in message:
        return False
    return own or record.levelno >= logging.logging.WARNING


def _join_job() -> None:
  """Joins the multi-process job this process is part of, if any (before JAX is used)."""
  import jax  # pylint: disable=g-import-not-at-top
  from genrl_jax.train import distributed  # pylint: disable=g-import-not-at-top
  try:
    job = distributed.resolve_job(_DISTRIBUTED.value, _COORDINATOR.value,
                                  _NUM_PROCESSES.value, _PROCESS_ID.value)
    if job is not None:
      logging.info("joining the job as %s", job.describe())
      distributed.initialize(job, _INIT_TIMEOUT.value, _HEARTBEAT_TIMEOUT.value)
  except distributed.DistributedError as e:
    if jax.distributed.is_initialized():
      # Every process of the job finds the same problem (e.g. different process counts):
      # each says it, then gives the others a moment to say it too before its exit ends
      # them (JAX ends a job's processes when one leaves).
      sys.stderr.write(f"error: {e}\n")
      sys.stderr.flush()
      time.sleep(2)
      os._exit(1)  # pylint: disable=protected-access  (JAX's shutdown would wait for the others)
    sys.exit(f"error: {e}")


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  _join_job()
  # pylint: disable=g-import-not-at-top (after flag parsing and joining the job)
  from genrl_jax.stages import behavior, data, evaluation, mfwm
  from genrl_jax.stages import workdir as workdir_lib
  from genrl_jax import files
  from genrl_jax.data.episodes import DatasetError
  from genrl_jax.train import checkpoints
  from genrl_jax.train.loop import NonFiniteError
  from genrl_jax.train import distributed  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required; available: "
                         f"{experiment_config.available_configs()}")
  workdir = _WORKDIR.value or os.path.join("workdirs", config.task)
  logging.info("%s", distributed.identity())
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  stage_names = ALL_STAGES if _MODE.value == "all" else (_MODE.value,)
  try:
    workdir_lib.check_config(config)
    workdir_lib.check_vlm_files(config, workdir, stage_names)
    workdir_lib.prepare_workdir(config, workdir)
  except (ValueError, FileNotFoundError) as e:  # incl. WorkdirMismatchError
    logging.error("%s", e)
    raise SystemExit(f"error: {e}") from None
  stages = {"collect": data.collect, "data": data.run, "mfwm": mfwm.run,
            "behavior": behavior.run, "eval": evaluation.run}
  for stage in stage_names:
    logging.info("stage %s (workdir %s)", stage, workdir)
    try:
      stages[stage](config, workdir)
    except (DatasetError, checkpoints.CheckpointError, FileNotFoundError,
            NonFiniteError) as e:
      # What the user gave (a dataset, a checkpoint, a file) is not what the stage needs,
      # or training diverged: one line, not a traceback. Nothing already in the workdir
      # was changed (a damaged checkpoint step may have been moved aside, as logged).
      logging.error("%s", e)
      raise SystemExit(f"error: stage {stage}: {e}") from None
    except OSError as e:
      if not files.is_disk_full(e):
        raise
      # A full disk: one line naming the path and the space (writes through
      # genrl_jax.files and checkpoints say how much they needed; others name the file).
      if not isinstance(e, files.DiskFullError):
        e = files.disk_full_error(getattr(e, "filename", None) or workdir, 0)
      logging.error("%s", e)
      raise SystemExit(f"error: stage {stage}: {e}") from None
  if "eval" in stage_names and jax.process_index() == 0:
    from genrl_jax.report import results as results_lib  # pylint: disable=g-import-not-at-top
    print(results_lib.run_summary(workdir), flush=True)
  # Processes that finish early (e.g. while process 0 still collects) would give up waiting
  # in JAX's shutdown after 5 minutes; wait here instead.
  distributed.barrier("main: stages done")


def main_in_job(argv):
  """`main`; in a multi-process job an error ends this process at once
  (`distributed.run_or_exit`), so that the other processes stop soon after."""
  from genrl_jax.train import distributed  # pylint: disable=g-import-not-at-top
  # A lost process is named by JAX's coordination service within the heartbeat timeout.
  distributed.run_or_exit(lambda: main(argv), lost_peer_wait_s=_HEARTBEAT_TIMEOUT.value + 30)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  try:
    host_allocator.reexec_with_tcmalloc()  # XLA on CPU page-faults less (see the module)
    sys.argv = _resolve_config_argv(experiment_config.rename_flags(sys.argv))
    experiment_config.check_override_keys(sys.argv)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  app.run(main_in_job)
