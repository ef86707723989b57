r"""Franka kitchen (9-D actions): the GenRL MFWM for the kitchen tasks.

Command (from the repository root; needs `pip install -e .[kitchen]`):
  python experiments/main.py --config=configs/kitchen.py --workdir=workdirs/kitchen
Variants: `configs/kitchen.py:small`, `configs/kitchen.py:tiny`.

Produces: collected random episodes, MFWM checkpoints under `mfwm/` (with
`open_loop.gif`; the world model alone while the episodes carry no VLM embeddings), one
behaviour per task of `config.tasks` (default: the domain's paper tasks) under
`behavior/<task>/` with its prompt's decoded target and an evaluation episode (GIFs),
`results.md`/`results.csv`, `metrics.jsonl`, `plots/` and `tensorboard/` in the workdir.
`:tiny` runs kitchen_microwave and kitchen_light, each prompted with a clip of its own
episodes. Kitchen episodes are 140 agent steps; with the reference's render settings a
frame takes about 0.4-0.6 s on CPU, so `:tiny` (fast render settings) is the practical
choice there.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("kitchen_microwave", arg,
                            tiny_tasks=("kitchen_microwave", "kitchen_light"))
