r"""Franka kitchen (9-D actions): the GenRL MFWM for the kitchen tasks.

Command (from the repository root; needs `pip install -e .[kitchen]`):
  python experiments/main.py --config=configs/kitchen.py --workdir=workdirs/kitchen
Variants: `configs/kitchen.py:small`, `configs/kitchen.py:tiny`.

Produces: collected random episodes, MFWM checkpoints under `mfwm/` (the world model
alone while the episodes carry no VLM embeddings), the behaviour of the config's task
learned from its prompt under `behavior/<task>/` (needs an MFWM with a connector) and
`metrics.jsonl` in the workdir. Kitchen episodes are 140 agent steps; with the reference's
render settings a frame takes about 0.4-0.6 s on CPU, so `:tiny` (fast render settings)
is the practical choice there.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("kitchen_microwave", arg)
