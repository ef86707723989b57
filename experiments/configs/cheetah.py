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
Measured with `:cpu` (`python experiments/cpu_pipeline.py --domains=cheetah`, 2-core CPU,
2026-12-06, 26 min 42 s): open loop 0.62 x the mean frame's error on held-out episodes
(the best of the three domains tried), prompt targets 0.56 (standing) and 0.90
(lying_down); no behaviour beats the random policy: cheetah_standing 4.6 +- 0.1 offline
and 4.9 +- 0.0 data-free against 6.4 +- 0.4, cheetah_lying_down 355.5 +- 1.5 and
213.4 +- 4.9 against 434.7 +- 8.1 (README "Does it learn?").
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("cheetah_run", arg,
                            tiny_tasks=("cheetah_standing", "cheetah_lying_down"))
