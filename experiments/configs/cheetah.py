r"""Cheetah (dm_control half-cheetah, 6 actuators): the GenRL MFWM for cheetah tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/cheetah.py --workdir=workdirs/cheetah
Variants: `configs/cheetah.py:small`, `configs/cheetah.py:tiny`.

Produces: collected random episodes, MFWM checkpoints under `mfwm/` (the world model
alone while the episodes carry no VLM embeddings), the behaviour of the config's task
learned from its prompt under `behavior/<task>/` (needs an MFWM with a connector) and
`metrics.jsonl` in the workdir. `:tiny` trains in a few minutes on a 2-core CPU.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("cheetah_run", arg)
