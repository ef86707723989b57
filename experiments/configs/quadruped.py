r"""Quadruped (dm_control, 12 actuators, camera 2): the GenRL MFWM for quadruped tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/quadruped.py --workdir=workdirs/quadruped
Variants: `configs/quadruped.py:small`, `configs/quadruped.py:tiny`.

Produces: collected random episodes, MFWM checkpoints under `mfwm/` (the world model
alone while the episodes carry no VLM embeddings), the behaviour of the config's task
learned from its prompt under `behavior/<task>/` (needs an MFWM with a connector) and
`metrics.jsonl` in the workdir. `:tiny` trains in a few minutes on a 2-core CPU.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("quadruped_walk", arg)
