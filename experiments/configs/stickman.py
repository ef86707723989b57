r"""Stickman (planar humanoid, 10 actuators): the GenRL MFWM for the Stickman tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/stickman.py --workdir=workdirs/stickman
Variants: `configs/stickman.py:small`, `configs/stickman.py:tiny`.

Produces: in the workdir, the collected episodes (random policy), Orbax checkpoints of the
MFWM under `mfwm/` (the world model alone while the episodes carry no VLM embeddings) and
`metrics.jsonl`. With
`:tiny` on a 2-core CPU: 4 random episodes and 300 world-model updates in about 3.5
minutes, the observation loss falling from about 1.7e3 (step 50) to about 270 (step 300).
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("stickman_walk", arg)
