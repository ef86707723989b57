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
`:cpu` (`python experiments/cpu_pipeline.py --domains=quadruped`, 2026-12-07, 29 min 42
s): open loop 0.91 of the mean frame's error, prompt targets 0.54 (stand) and 0.80;
quadruped_lie_down 919.0 +- 82.5 (normalised 0.786; data-free 941.7 +- 45.7, 0.892),
quadruped_stand 330.9 +- 405.0 (0.324; data-free 299.8 +- 342.9), against the random
policy's 700.7 +- 399.2 and 311.1 +- 443.9. None beats it by 2 std: the random start
orientation makes the random returns bimodal and both bars exceed the maximum return
(1000). Per episode lie_down lies down where the random policy does not (README, "Does
it learn?").
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("quadruped_walk", arg,
                            tiny_tasks=("quadruped_stand", "quadruped_lie_down"))
