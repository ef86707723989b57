r"""Franka kitchen (9-D actions): the GenRL MFWM and behaviours for the kitchen tasks.

  pip install -e '.[kitchen]'
  python experiments/main.py --config=configs/kitchen.py --workdir=workdirs/kitchen \
      --config.vlm.model=models/InternVideo2-stage2_1b-224p-f4.pt

Variants `:small`, `:tiny`, `:cpu` (`experiments/configs/base.py`). `:tiny` learns
kitchen_microwave and kitchen_light. Episodes are 140 agent steps and the reference's
render settings cost about half a second a frame on CPU, so the `:tiny` variant renders
with the cheaper settings (`data.fast_render`). Outputs as in `configs/stickman.py`;
figures in `docs/results.md` once measured.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("kitchen_microwave", arg,
                            tiny_tasks=("kitchen_microwave", "kitchen_light"))
