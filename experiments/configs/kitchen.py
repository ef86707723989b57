r"""Franka kitchen (9-D actions): the GenRL world model for the kitchen tasks.

Command (from the repository root; needs `pip install -e .[kitchen]`):
  python experiments/main.py --config=configs/kitchen.py --workdir=workdirs/kitchen
Variants: `configs/kitchen.py:small`, `configs/kitchen.py:tiny`.

Produces: collected random episodes, world-model checkpoints under `mfwm/` and
`metrics.jsonl` in the workdir. Kitchen frames render about 15x slower than dm_control's,
so `:tiny` collects fewer, shorter-to-render episodes with the fast render settings.
"""

from configs import base


def get_config(arg=None):
  c = base.domain_config("kitchen_microwave", arg)
  return c
