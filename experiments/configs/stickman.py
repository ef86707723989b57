r"""Stickman (planar humanoid, 10 actuators): the GenRL MFWM for the Stickman tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/stickman.py --workdir=workdirs/stickman
Variants: `configs/stickman.py:small`, `configs/stickman.py:tiny`.

Produces: in the workdir, the collected episodes (random policy), Orbax checkpoints of the
MFWM under `mfwm/` (the world model alone while the episodes carry no VLM embeddings), the
`stickman_walk` behaviour learned from its text prompt under `behavior/stickman_walk/`
(with `prompt_target.gif`, the prompt decoded by the MFWM) and `metrics.jsonl`. With
`:tiny` on a 2-core CPU (12 minutes, with other jobs on the cores): 4 random episodes
embedded by the download-free stand-in embedder, 300 MFWM updates (observation loss about
1.5e3 at step 50 and 245 at step 300, connector KL 5.3 -> 0.21), then 200 behaviour
updates (256 starts) at about 3.6 updates/s.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("stickman_walk", arg)
