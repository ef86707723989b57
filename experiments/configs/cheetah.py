r"""Cheetah (dm_control half-cheetah, 6 actuators): the GenRL MFWM and behaviours for cheetah.

  python experiments/main.py --config=configs/cheetah.py --workdir=workdirs/cheetah \
      --config.vlm.model=models/InternVideo2-stage2_1b-224p-f4.pt

Variants `:small`, `:tiny`, `:cpu` (`experiments/configs/base.py`). `:tiny` and `:cpu`
learn cheetah_standing and cheetah_lying_down (`:cpu`: `python
experiments/cpu_pipeline.py --domains=cheetah`, about half an hour on 2 CPU cores).
Outputs as in `configs/stickman.py`. Figures: `docs/results.md`,
`docs/experiment_log.md`.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("cheetah_run", arg,
                            tiny_tasks=("cheetah_standing", "cheetah_lying_down"))
