r"""Stickman (planar humanoid, 10 actuators): the GenRL MFWM and behaviours for Stickman.

  python experiments/main.py --config=configs/stickman.py --workdir=workdirs/stickman \
      --config.vlm.model=models/InternVideo2-stage2_1b-224p-f4.pt

The paper's sizes embed with InternVideo2 (`docs/vlm.md`); variants `:small`, `:tiny`,
`:cpu` (`experiments/configs/base.py`). `:tiny`, the README's quick start, needs no VLM file: stickman_legs_up and stickman_lying_down, each prompted with a clip of its own
episodes, about 10-15 minutes on 2 CPU cores. The workdir then holds the episodes, the MFWM
(`mfwm/`, `open_loop.gif`), one behaviour per task (`behavior/<task>/`, `prompt_target.gif`,
`eval_episode.gif`) and `results.md`. Current figures: `docs/results.md`; earlier runs:
`docs/experiment_log.md`.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("stickman_walk", arg,
                            tiny_tasks=("stickman_legs_up", "stickman_lying_down"))
