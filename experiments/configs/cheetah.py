r"""Cheetah (dm_control half-cheetah, 6 actuators): the GenRL MFWM for cheetah tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/cheetah.py --workdir=workdirs/cheetah
Variants: `configs/cheetah.py:small`, `configs/cheetah.py:tiny`.

Produces: collected random episodes, MFWM checkpoints under `mfwm/` (with
`open_loop.gif`; the world model alone while the episodes carry no VLM embeddings), one
behaviour per task of `config.tasks` (default: the domain's paper tasks) under
`behavior/<task>/` with its prompt's decoded target and an evaluation episode (GIFs),
`results.md`/`results.csv`, `metrics.jsonl`, `plots/` and `tensorboard/` in the workdir.
`:tiny` runs cheetah_standing and cheetah_lying_down, each prompted with a clip of its own
episodes. It trains in minutes on a 2-core CPU.
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("cheetah_run", arg,
                            tiny_tasks=("cheetah_standing", "cheetah_lying_down"))
