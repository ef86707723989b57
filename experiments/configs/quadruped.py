r"""Quadruped (dm_control, 12 actuators, camera 2): the GenRL MFWM for quadruped tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/quadruped.py --workdir=workdirs/quadruped
Variants: `configs/quadruped.py:small`, `configs/quadruped.py:tiny`.

Produces: collected random episodes, MFWM checkpoints under `mfwm/` (with
`open_loop.gif`; the world model alone while the episodes carry no VLM embeddings), one
behaviour per task of `config.tasks` (default: the domain's paper tasks) under
`behavior/<task>/` with its prompt's decoded target and an evaluation episode (GIFs),
`results.md`/`results.csv`, `metrics.jsonl`, `plots/` and `tensorboard/` in the workdir.
`:tiny` runs quadruped_stand and quadruped_lie_down, each prompted with a clip of its own
episodes. It trains in minutes on a 2-core CPU.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("quadruped_walk", arg,
                            tiny_tasks=("quadruped_stand", "quadruped_lie_down"))
