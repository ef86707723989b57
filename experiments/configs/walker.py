r"""Walker (dm_control planar walker, 6 actuators): the GenRL MFWM and behaviours for walker.

  python experiments/main.py --config=configs/walker.py --workdir=workdirs/walker \
      --config.vlm.model=models/InternVideo2-stage2_1b-224p-f4.pt

Variants `:small`, `:tiny`, `:cpu` (`experiments/configs/base.py`). `:tiny` learns
walker_stand and walker_lying_down, `:cpu` walker_lying_down and walker_sit_knees
(`python experiments/cpu_pipeline.py --domains=walker`, about half an hour on 2 CPU
cores). Outputs as in `configs/stickman.py`. Figures: `docs/results.md`,
`docs/experiment_log.md`.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("walker_walk", arg,
                            tiny_tasks=("walker_stand", "walker_lying_down"),
                            # walker_stand stayed at the random policy's level at the
                            # `cpu` budget; sit_knees is the harder task that can show
                            # learning there (docs/experiment_log.md).
                            cpu_tasks=("walker_lying_down", "walker_sit_knees"))
