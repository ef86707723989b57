r"""genrl_jax main job: parses the config and runs the stages.

  python experiments/main.py --config=configs/stickman.py:tiny --workdir=workdirs/tiny

`--config` takes `configs/<domain>.py[:variant]` (resolved against `experiments/`), and
any `--config.<key>=<value>` override; unknown keys are refused. `--mode` runs one stage
(`data`, `mfwm`, `behavior`, `eval`) or all of them (`all`, the default); `--mode=collect` only
collects `config.data.collect_episodes` episodes with `config.data.collector` into
`config.data.path` (default `<workdir>/dataset`). Each stage resumes from what the workdir
already holds.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genrl_jax import configs  # pylint: disable=g-import-not-at-top,wrong-import-position


def _resolve_config_argv(argv: list[str]) -> list[str]:
  """Rewrites `--config=configs/x.py` to the file under `experiments/` before absl parses."""
  out = []
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      arg = "--config=" + configs.resolve_config_path(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(argv):
      argv[i + 1] = configs.resolve_config_path(argv[i + 1])
    out.append(arg)
  return out


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for everything the run writes "
                               "(default: workdirs/<config name>).")
_MODE = flags.DEFINE_enum("mode", "all", ("all", "collect", "data", "mfwm", "behavior", "eval"),
                          "Stage(s) to run.")


class _OwnInfoOnly(logging.logging.Filter):
  """Keeps INFO lines of genrl_jax and this script; libraries (Orbax, XLA) log many."""

  def filter(self, record):
    own = "genrl_jax" in record.pathname or record.pathname == __file__
    return own or record.levelno >= logging.logging.WARNING


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  from genrl_jax import pipeline  # pylint: disable=g-import-not-at-top (after flag parsing)
  import jax  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if config is None:
    raise app.UsageError(f"--config is required; available: {configs.available_configs()}")
  workdir = _WORKDIR.value or os.path.join("workdirs", config.task)
  logging.info("process %d/%d: %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  pipeline.prepare_workdir(config, workdir)
  stages = pipeline.STAGES if _MODE.value == "all" else (_MODE.value,)
  for stage in stages:
    logging.info("stage %s (workdir %s)", stage, workdir)
    if stage == "collect":
      pipeline.run_collect(config, workdir)
    elif stage == "data":
      pipeline.run_data(config, workdir)
    elif stage == "mfwm":
      pipeline.run_mfwm(config, workdir)
    elif stage == "behavior":
      pipeline.run_behaviors(config, workdir)
    elif stage == "eval":
      pipeline.run_eval(config, workdir)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  try:
    sys.argv = _resolve_config_argv(sys.argv)
  except FileNotFoundError as e:
    sys.exit(f"error: {e}")
  app.run(main)
