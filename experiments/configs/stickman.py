r"""Stickman (planar humanoid, 10 actuators): the GenRL MFWM for the Stickman tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/stickman.py --workdir=workdirs/stickman
Variants: `configs/stickman.py:small`, `configs/stickman.py:tiny`.

Produces: in the workdir, the collected episodes, Orbax checkpoints of the MFWM under
`mfwm/` (with `open_loop.gif`), one behaviour per task of `config.tasks` (default: the 13
paper tasks of Stickman) under `behavior/<task>/` (with `prompt_target.gif`, the prompt
decoded by the MFWM, and `eval_episode.gif`), `results.md`/`results.csv`, `metrics.jsonl`,
`plots/` and `tensorboard/`. With `:tiny` on a 2-core CPU (4 min 26 s on idle cores with
the im2col convs and tcmalloc, which gave the same returns, 79.4 +- 37.4 and 581.2 +- 87.9;
11.7 min before, with other jobs on the cores): 4 random episodes in each of stickman_stand and stickman_lying_down, embedded by
a locally built random-weight CLIP (it says so), 300 MFWM updates (observation loss about
1.5e3 at step 50 and 250 at step 300, connector KL 5.0 -> 0.18), each task prompted with
the 8 frames of its own episodes with the highest task reward, 200 behaviour updates per
task, 5 evaluation episodes per task (returns: stickman_stand 79 +- 37, normalised 0.01;
stickman_lying_down 581 +- 88, normalised 0.34; the random-policy bounds are 70 and 380;
measured with recipe 1 of the random CLIP, kernels of std 1/sqrt(fan_in)).
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("stickman_walk", arg,
                            tiny_tasks=("stickman_legs_up", "stickman_lying_down"))
