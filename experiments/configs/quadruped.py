r"""Quadruped (dm_control, 12 actuators, camera 2): the GenRL MFWM and behaviours for quadruped.

  python experiments/main.py --config=configs/quadruped.py --workdir=workdirs/quadruped \
      --config.vlm.model=models/InternVideo2-stage2_1b-224p-f4.pt

Variants `:small`, `:tiny`, `:cpu` (`experiments/configs/base.py`). `:tiny` and `:cpu`
learn quadruped_stand and quadruped_lie_down (`:cpu`: `python experiments/cpu_pipeline.py
--domains=quadruped`, about half an hour on 2 CPU cores). The random start orientation
makes these tasks' random-policy returns bimodal, so read the per-episode returns in
`eval.json`, not only the mean +- 2 std rule. Outputs as in `configs/stickman.py`.
Figures: `docs/results.md`, `docs/experiment_log.md`.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("quadruped_walk", arg,
                            tiny_tasks=("quadruped_stand", "quadruped_lie_down"))
